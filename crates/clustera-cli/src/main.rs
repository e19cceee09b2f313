//! The `clustera` command: a development broker, the demo, and benchmarks.

mod bench;
mod bench_guarantee;
mod bench_kernel;
mod bench_memory;
mod bench_ordering;
mod bench_send;
mod completions;
mod connect;
mod console;
mod consume;
mod control;
mod demo;
mod demo_orders;
mod dev;
mod exit;
mod fault;
mod format;
mod help;
mod kafkasend;
mod lag;
mod new;
mod outbox;
mod produce;
mod topics;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Clustera: Kafka kernels in Rust.
#[derive(Parser)]
#[command(name = "clustera", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve an in-memory development broker (librdkafka's mock cluster) until Ctrl-C.
    #[command(after_help = help::DEV)]
    Dev(dev::DevArgs),
    /// Inject faults into `clustera dev --control`: brokers down or slow, request errors.
    Fault(fault::FaultArgs),
    /// Run the demo on an embedded broker: messages through a kernel, then a summary.
    Demo(demo::DemoArgs),
    /// Compare the kernel runtime against a raw rdkafka consume-and-commit loop.
    Bench(bench::BenchArgs),
    /// Produce one message per line of a file or standard input.
    #[command(after_help = help::PRODUCE)]
    Produce(produce::ProduceArgs),
    /// Print messages of a topic.
    #[command(after_help = help::CONSUME)]
    Consume(consume::ConsumeArgs),
    /// Show a consumer group's committed offsets and lag.
    #[command(after_help = help::LAG)]
    Lag(lag::LagArgs),
    /// List topics, or create one.
    Topics(topics::TopicsArgs),
    /// Serve the web console: topics, consumer groups, kernels and dead letters.
    Console(console::ConsoleArgs),
    /// Scaffold a new kernel crate.
    #[command(after_help = help::NEW)]
    New(new::NewArgs),
    /// The CDC outbox pipeline: init, relay, process.
    #[command(after_help = help::OUTBOX)]
    Outbox(outbox::OutboxArgs),
    /// KafkaSend's portal: requests from Kafka to the REST API, responses back (config from
    /// PORTAL_*, OAUTH2_* and KAFKA_* variables).
    #[command(after_help = help::PORTAL)]
    Portal(kafkasend::PortalArgs),
    /// Send an HTTP request (and a file) through KafkaSend and print the response.
    Send(kafkasend::SendArgs),
    /// Benchmark KafkaSend: a round trip against direct HTTP, and the portal's memory.
    BenchSend(bench_send::BenchSendArgs),
    /// Benchmark the memory budget: the transform example's peak memory and rate, with and
    /// without it.
    BenchMemory(bench_memory::BenchMemoryArgs),
    /// Benchmark key-ordered concurrency (P3): one partition with simulated I/O, processed
    /// one message at a time and key by key.
    BenchOrdering(bench_ordering::BenchOrderingArgs),
    /// Benchmark exactly-once against at-least-once: the transform example, alternately.
    BenchGuarantee(bench_guarantee::BenchGuaranteeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = help::COMPLETIONS)]
    Completions(completions::CompletionsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and the benchmark print their own summary; their logs are opt-in via RUST_LOG.
    let _logging = match cli.command {
        Command::Demo(_)
        | Command::Bench(_)
        | Command::BenchSend(_)
        | Command::BenchMemory(_)
        | Command::BenchOrdering(_)
        | Command::BenchGuarantee(_) => clustera::telemetry::init_logging_with_default("off"),
        Command::Dev(_) | Command::Outbox(_) | Command::Portal(_) | Command::Console(_) => {
            clustera::telemetry::init_logging()
        }
        // Tools print results on stdout and one-line errors; librdkafka chatter stays quiet.
        _ => clustera::telemetry::init_logging_with_default("error,librdkafka=off"),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("clustera: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Fault(args) => fault::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Produce(args) => blocking(move || produce::run(args)).await,
            Command::Consume(args) => blocking(move || consume::run(args)).await,
            Command::Lag(args) => blocking(move || lag::run(args)).await,
            Command::Topics(args) => blocking(move || topics::run(args)).await,
            Command::Console(args) => console::run(args).await,
            Command::New(args) => new::run(args),
            Command::Outbox(args) => outbox::run(args).await,
            Command::Portal(args) => kafkasend::portal(args).await,
            Command::Send(args) => kafkasend::send(args).await,
            Command::BenchSend(args) => bench_send::run(args).await,
            Command::BenchMemory(args) => bench_memory::run(args).await,
            Command::BenchOrdering(args) => bench_ordering::run(args).await,
            Command::BenchGuarantee(args) => bench_guarantee::run(args).await,
            Command::Completions(args) => completions::run::<Cli>(args),
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clustera: {e:#}");
            ExitCode::from(exit::code(&e))
        }
    }
}

/// Runs a command made of blocking librdkafka calls off the async workers.
async fn blocking(f: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(f).await?
}
