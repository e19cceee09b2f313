//! Kernels as separate processes (the transform example): SIGKILL and restart, SIGTERM, and
//! bad configuration at start-up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use clustera::testing::kafka;

use common::*;

fn transform(bootstrap: &str, input: &str, output: &str, group: &str, delay_ms: u64) -> Child {
    let delay = delay_ms.to_string();
    transform_process(
        bootstrap,
        input,
        output,
        group,
        &[
            ("TRANSFORM_DELAY_MS", &delay),
            ("CLUSTERA_COMMIT_INTERVAL_MS", "200"),
            ("CLUSTERA_DRAIN_TIMEOUT_MS", "5000"),
            ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ],
    )
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn output_count(bootstrap: &str, topic: &str) -> i64 {
    kafka::high_watermarks(bootstrap, topic)
        .unwrap()
        .values()
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_run_loses_nothing_and_duplicates_only_the_uncommitted_window() {
    const N: usize = 3_000;
    let (_broker, bootstrap) = mock_with_sequence(&[("crash-in", 4), ("crash-out", 4)], N).await;

    let mut first = transform(&bootstrap, "crash-in", "crash-out", "crash", 1);
    let b = bootstrap.clone();
    wait_for_blocking(
        "a third of the outputs",
        Duration::from_secs(60),
        move || output_count(&b, "crash-out") >= (N / 3) as i64,
    )
    .await;
    signal(&first, "-KILL");
    first.wait().unwrap();
    let b = bootstrap.clone();
    let committed_at_kill =
        blocking(move || kafka::committed_offsets(&b, "crash", "crash-in").unwrap()).await;
    let total_committed: i64 = committed_at_kill.values().sum();
    // Where the kill lands is timing; the assertions below hold wherever it does.
    eprintln!("killed with {total_committed} of {N} committed");

    let mut second = transform(&bootstrap, "crash-in", "crash-out", "crash", 0);
    let b = bootstrap.clone();
    wait_for_blocking(
        "restart to commit everything",
        Duration::from_secs(90),
        move || fully_committed(&b, "crash", "crash-in"),
    )
    .await;
    signal(&second, "-TERM");
    assert!(wait_exit(&mut second, Duration::from_secs(20)).is_some_and(|s| s.success()));

    let b = bootstrap.clone();
    let (inputs, outputs) = blocking(move || {
        (
            input_positions(&b, "crash-in"),
            kafka::read_topic(&b, "crash-out").unwrap(),
        )
    })
    .await;
    let sources = transform_sources(&outputs);
    let counts = histogram(&sources);
    for (pos, key) in &inputs {
        let n = counts.get(pos).copied().unwrap_or(0);
        assert!(n >= 1, "input {pos:?} was lost");
        let committed = committed_at_kill.get(&pos.0).copied().unwrap_or(0);
        if pos.1 < committed {
            assert_eq!(
                n, 1,
                "input {pos:?} was committed before the kill but processed {n} times"
            );
        }
        let out = outputs
            .iter()
            .find(|o| transform_sources(std::slice::from_ref(o))[0] == *pos)
            .unwrap();
        assert_eq!(
            out.key.as_deref(),
            Some(key.as_slice()),
            "same key as the input"
        );
    }
    let duplicates = sources.len() - inputs.len();
    eprintln!("crash test: {duplicates} duplicates, committed at kill {total_committed} of {N}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_within_the_timeout_and_commits_what_it_processed() {
    const N: usize = 2_000;
    let (_broker, bootstrap) = mock_with_sequence(&[("term-in", 4), ("term-out", 4)], N).await;

    // 5 ms per message: about 5 s of work, so the signal lands mid-run.
    let mut kernel = transform(&bootstrap, "term-in", "term-out", "term", 5);
    let b = bootstrap.clone();
    wait_for_blocking("some outputs", Duration::from_secs(60), move || {
        output_count(&b, "term-out") >= 200
    })
    .await;
    let signalled = Instant::now();
    signal(&kernel, "-TERM");
    let status = blocking(move || wait_exit(&mut kernel, Duration::from_secs(5 + 5))).await;
    let took = signalled.elapsed();
    let status = status.expect("exited within the drain timeout plus 5 s");
    assert!(status.success(), "clean exit: {status:?}");
    eprintln!("SIGTERM to exit: {took:?}");

    let b = bootstrap.clone();
    let (committed, outputs) = blocking(move || {
        (
            kafka::committed_offsets(&b, "term", "term-in").unwrap(),
            kafka::read_topic(&b, "term-out").unwrap(),
        )
    })
    .await;
    let processed: BTreeMap<i32, Vec<i64>> =
        transform_sources(&outputs)
            .into_iter()
            .fold(BTreeMap::new(), |mut m, (p, o)| {
                m.entry(p).or_default().push(o);
                m
            });
    let total: i64 = committed.values().sum();
    // Outputs were seen before the signal, and the drain commits what was processed.
    assert!(total > 0, "nothing committed at SIGTERM");
    eprintln!("stopped with {total} of {N} committed");
    for (p, mut offsets) in processed {
        offsets.sort_unstable();
        let expected: Vec<i64> = (0..committed.get(&p).copied().unwrap_or(0)).collect();
        assert_eq!(
            offsets, expected,
            "partition {p}: committed == processed, no gaps, no duplicates"
        );
    }
}

#[test]
fn bad_configuration_fails_before_connecting_with_a_clear_message() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "KAFKA_BOOTSTRAP_SERVERS: missing"),
        (
            &[
                ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
                ("KAFKA_CA_CERT", "***"),
            ],
            "KAFKA_CA_CERT: not valid base64",
        ),
        (
            &[
                ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
                ("KAFKA_CA_CERT", "aGVsbG8="),
            ],
            "KAFKA_CA_CERT: decodes to text with no PEM block",
        ),
        (
            &[
                ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
                ("KAFKA_PROPERTY_NOT_A_PROPERTY", "1"),
            ],
            "KAFKA_PROPERTY_NOT_A_PROPERTY: rejected by librdkafka",
        ),
        (
            &[
                ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
                ("CLUSTERA_MAX_ATTEMPTS", "many"),
            ],
            "CLUSTERA_MAX_ATTEMPTS",
        ),
    ];
    for (vars, expected) in cases {
        let out = Command::new(example_bin("transform"))
            .env_clear()
            .envs(vars.iter().copied())
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(78),
            "{vars:?}: exit code; stderr: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{vars:?}: expected {expected:?} in {stderr:?}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    }
}

/// The transform example taking ten minutes a message, with the given drain timeout.
fn stuck_transform(bootstrap: &str, input: &str, group: &str, drain_ms: u64) -> Child {
    let drain = drain_ms.to_string();
    transform_process(
        bootstrap,
        input,
        &format!("{input}-out"),
        group,
        &[
            ("KAFKA_GROUP_PROTOCOL", "consumer"),
            ("TRANSFORM_DELAY_MS", "600000"),
            ("CLUSTERA_DRAIN_TIMEOUT_MS", &drain),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kernel_stuck_past_the_drain_timeout_still_exits_and_commits_nothing_unfinished() {
    let (_broker, bootstrap) = mock_with_sequence(&[("stuck-in", 2)], 10).await;
    // Every message takes ten minutes: whatever is in process when the signal comes is stuck.
    let mut kernel = stuck_transform(&bootstrap, "stuck-in", "stuck", 2_000);
    // KIP-848 assigns at once; give the kernel time to start on its first messages.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&kernel, "-TERM");
    let status = blocking(move || wait_exit(&mut kernel, Duration::from_secs(2 + 15))).await;
    let status = status.expect("exited after the drain timeout, not stuck with the kernel");
    assert!(
        status.success(),
        "a drain timeout is not a failure: {status:?}"
    );
    let b = bootstrap.clone();
    let committed =
        blocking(move || kafka::committed_offsets(&b, "stuck", "stuck-in").unwrap()).await;
    assert!(
        committed.values().all(|o| *o == 0),
        "nothing finished, so nothing may be committed: {committed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_signal_exits_at_once_while_draining() {
    let (_broker, bootstrap) = mock_with_sequence(&[("twice-in", 2)], 10).await;
    // A drain that would take a minute.
    let mut kernel = stuck_transform(&bootstrap, "twice-in", "twice", 60_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&kernel, "-TERM");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        kernel.try_wait().unwrap().is_none(),
        "still draining after the first signal"
    );
    signal(&kernel, "-TERM");
    let status = blocking(move || wait_exit(&mut kernel, Duration::from_secs(10))).await;
    let status = status.expect("the second signal ended the process");
    assert_eq!(status.code(), Some(130), "{status:?}");
}

/// Peak resident memory (MiB) of the transform example, slow (10 ms a message), reading every
/// record of `input` in `group`, with `budget` as `CLUSTERA_MEMORY_BYTES`. Also checks that
/// nothing was lost.
async fn slow_transform_peak_mib(bootstrap: &str, input: &str, group: &str, budget: &str) -> f64 {
    let output = format!("{group}-out");
    let mut child = transform_process(
        bootstrap,
        input,
        &output,
        group,
        &[
            ("TRANSFORM_DELAY_MS", "10"),
            ("CLUSTERA_MEMORY_BYTES", budget),
            ("KAFKA_GROUP_PROTOCOL", "consumer"),
            // The mock answers a waiting fetch only when the wait expires.
            ("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "10"),
        ],
    );
    let (b, g, i) = (bootstrap.to_owned(), group.to_owned(), input.to_owned());
    wait_for_blocking(
        "the slow transform to commit every input",
        Duration::from_secs(300),
        move || fully_committed(&b, &g, &i),
    )
    .await;
    let peak = clustera::testing::process_memory(child.id())
        .expect("the transform example's memory")
        .peak_kb;
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(60)).expect("exits after SIGTERM");
    assert!(status.success(), "{status}");
    let (b, i) = (bootstrap.to_owned(), input.to_owned());
    blocking(move || assert_nothing_lost(&b, &i, &output)).await;
    peak as f64 / 1024.0
}

/// A kernel slower than its input on 64 partitions: prefetch fills to whatever the limits
/// allow. With the 16 MiB budget the process stays under 40 MiB; without it (librdkafka's own
/// per-partition limits, as before the budget) the same run holds the whole input, which
/// shows the measurement can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_kernel_on_64_partitions_holds_the_memory_budget() {
    let broker = clustera::testing::MockBroker::start(1).unwrap();
    // The mock keeps about 5 MB per partition, so the outputs get as many partitions too.
    for topic in ["mb-in", "mb-budget-out", "mb-off-out"] {
        broker.create_topic(topic, 64).unwrap();
    }
    let bootstrap = broker.bootstrap().to_owned();
    // 25,600 values of 2 KiB: 50 MiB, three times the budget. Written in 16 KB batches (the
    // Java producer's default), since a consumer holds at least one whole batch per partition
    // whatever its limits (KIP-74).
    let b = bootstrap.clone();
    blocking(move || {
        let mut producer = rdkafka::ClientConfig::new();
        producer
            .set("bootstrap.servers", &b)
            .set("batch.size", "16384");
        let filler = "x".repeat(2000);
        kafka::produce(
            &producer,
            "mb-in",
            (0..25_600).map(|i| {
                (
                    Some(format!("key-{i}").into_bytes()),
                    format!(r#"{{"seq":{i},"pad":"{filler}"}}"#).into_bytes(),
                    Vec::new(),
                )
            }),
        )
        .unwrap()
    })
    .await;
    let with_budget = slow_transform_peak_mib(&bootstrap, "mb-in", "mb-budget", "16MiB").await;
    let without = slow_transform_peak_mib(&bootstrap, "mb-in", "mb-off", "off").await;
    eprintln!("peak RSS: {with_budget:.1} MiB with the budget, {without:.1} MiB without");
    // 27-29 MiB on an idle machine; one CI run on a loaded machine peaked at 37.7 MiB (cause
    // not found: the budget's caps are fixed at start, so likely the allocator's per-thread
    // arenas under contention). The limit is 2.5 times the budget, half of the run without it.
    assert!(
        with_budget <= 40.0,
        "peak RSS {with_budget:.1} MiB with a 16 MiB budget (limit 40 MiB)"
    );
    assert!(
        without > 48.0,
        "without the budget the run should hold most of the 50 MiB input; it peaked at \
         {without:.1} MiB, so this test no longer measures anything"
    );
}

/// `CLUSTERA_ORDERING=key` with a SIGKILL mid-run: the offset map had gaps (later messages of
/// other keys done before earlier ones), so the commit was behind them. Nothing is lost, what
/// was committed is not processed again, and every key's first appearances keep input order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_ordering_survives_sigkill_with_gaps_in_the_offset_map() {
    const N: usize = 4_000;
    let broker = clustera::testing::MockBroker::start(1).unwrap();
    broker.create_topic("kk-in", 1).unwrap();
    broker.create_topic("kk-out", 1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let b = bootstrap.clone();
    blocking(move || {
        let records = (0..N).map(|i| {
            (
                Some(format!("user-{}", i % 97).into_bytes()),
                format!(r#"{{"seq":{i}}}"#).into_bytes(),
                Vec::new(),
            )
        });
        kafka::produce(&b, "kk-in", records).unwrap()
    })
    .await;
    let keyed = |delay: &str| {
        transform_process(
            &bootstrap,
            "kk-in",
            "kk-out",
            "kk",
            &[
                ("TRANSFORM_DELAY_MS", delay),
                ("CLUSTERA_ORDERING", "key"),
                ("KAFKA_GROUP_PROTOCOL", "consumer"),
            ],
        )
    };
    let mut first = keyed("3");
    let b = bootstrap.clone();
    wait_for_blocking(
        "a third of the outputs",
        Duration::from_secs(60),
        move || output_count(&b, "kk-out") >= (N / 3) as i64,
    )
    .await;
    signal(&first, "-KILL");
    first.wait().unwrap();
    let b = bootstrap.clone();
    let committed_at_kill = blocking(move || kafka::committed_offsets(&b, "kk", "kk-in").unwrap())
        .await
        .get(&0)
        .copied()
        .unwrap_or(0);
    let mut second = keyed("0");
    let b = bootstrap.clone();
    wait_for_blocking(
        "the restart to commit everything",
        Duration::from_secs(90),
        move || fully_committed(&b, "kk", "kk-in"),
    )
    .await;
    signal(&second, "-TERM");
    assert!(wait_exit(&mut second, Duration::from_secs(20)).is_some_and(|s| s.success()));
    let b = bootstrap.clone();
    let outputs = blocking(move || kafka::read_topic(&b, "kk-out").unwrap()).await;
    let sources = transform_sources(&outputs);
    let counts = histogram(&sources);
    for offset in 0..N as i64 {
        let n = counts.get(&(0, offset)).copied().unwrap_or(0);
        assert!(n >= 1, "input {offset} was lost");
        if offset < committed_at_kill {
            assert_eq!(
                n, 1,
                "input {offset} was committed before the kill but processed {n} times"
            );
        }
    }
    // Per key, the source offsets in the order they first appear must increase.
    let mut first_seen = std::collections::HashSet::new();
    let mut per_key: BTreeMap<Vec<u8>, Vec<i64>> = BTreeMap::new();
    for (output, source) in outputs.iter().zip(&sources) {
        if first_seen.insert(*source) {
            per_key
                .entry(output.key.clone().unwrap())
                .or_default()
                .push(source.1);
        }
    }
    let reordered = per_key
        .values()
        .filter(|offsets| offsets.windows(2).any(|w| w[0] > w[1]))
        .count();
    assert_eq!(reordered, 0, "every key's first appearances in input order");
    eprintln!(
        "key-ordered crash test: committed {committed_at_kill} of {N} at the kill, {} duplicates",
        sources.len() - N
    );
}
