//! The transform example as a benchmark's kernel: built next to this binary, started as its
//! own process with the settings every benchmark shares, waited for, and stopped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clustera::testing::kafka;

/// The transform example reading `input` into `output` in `group`, on the embedded broker at
/// `bootstrap`: KIP-848 (joins at once), commits every 100 ms, no HTTP listener, quiet logs.
/// Callers add their own variables and spawn it with [`spawn`].
pub(crate) fn transform_command(
    transform: &Path,
    bootstrap: &str,
    input: &str,
    output: &str,
    group: &str,
) -> Command {
    let mut command = Command::new(transform);
    command
        .env_clear()
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("KAFKA_TOPIC", input)
        .env("OUTPUT_TOPIC", output)
        .env("KAFKA_CONSUMER_GROUP", group)
        .env("KAFKA_GROUP_PROTOCOL", "consumer")
        // The embedded broker answers a waiting fetch only when its wait expires, not when
        // data arrives as Kafka does; with small queues its 500 ms default would starve the
        // kernel.
        .env("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "10")
        .env("CLUSTERA_COMMIT_INTERVAL_MS", "100")
        .env("CLUSTERA_HTTP_ADDR", "off")
        .env("RUST_LOG", "error");
    command
}

/// Starts `command` with its output discarded and its errors shown.
pub(crate) fn spawn(command: &mut Command, transform: &Path) -> anyhow::Result<Child> {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", transform.display()))
}

/// Stops the kernel with SIGTERM and reaps it.
pub(crate) async fn stop(child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut child = child;
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

/// Waits until the group's commits reach the input's high watermarks, or, with `at_least`,
/// until that many messages are committed.
pub(crate) async fn wait_committed(
    child: &mut Child,
    bootstrap: &str,
    group: &str,
    input: &str,
    at_least: Option<i64>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the transform example exited early: {status}");
        }
        let (b, g, t) = (bootstrap.to_owned(), group.to_owned(), input.to_owned());
        let committed = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
            let high = kafka::high_watermarks(&b, &t)?;
            let committed = kafka::committed_offsets(&b, &g, &t).unwrap_or_default();
            Ok(match at_least {
                Some(n) => committed.values().sum::<i64>() >= n,
                None => high.iter().all(|(p, h)| committed.get(p) == Some(h)),
            })
        })
        .await??;
        if committed {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the transform example did not commit everything within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The transform example built next to this binary (`cargo build --release --examples`).
pub(crate) fn transform_bin() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .context("no directory for this executable")?
        .join("examples")
        .join("transform");
    if !path.is_file() {
        bail!(
            "{} is missing: build it first with `cargo build --release -p clustera --examples`",
            path.display()
        );
    }
    Ok(path)
}
