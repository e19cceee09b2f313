//! The tansu broker (a Kafka-compatible broker written in Rust) as a child process on a free
//! loopback port, with in-memory storage: a second, independent peer for volume tests.
//! `scripts/install-tansu.sh` installs it into a cache outside the clone.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// A running tansu broker, killed when dropped.
pub struct Tansu {
    child: Child,
    bootstrap: String,
}

impl Tansu {
    /// Where the install script puts the binary: `CLUSTERA_TANSU_BIN`, or
    /// `$CLUSTERA_CACHE_DIR` (default `$XDG_CACHE_HOME/clustera` or `~/.cache/clustera`)
    /// `/tansu-0.6.0/bin/tansu`.
    pub fn binary() -> PathBuf {
        if let Some(p) = std::env::var_os("CLUSTERA_TANSU_BIN") {
            return PathBuf::from(p);
        }
        let cache = std::env::var_os("CLUSTERA_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("clustera"))
            })
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/clustera")))
            .unwrap_or_else(|| PathBuf::from(".cache/clustera"));
        cache.join("tansu-0.6.0/bin/tansu")
    }

    /// Starts tansu (see [`Tansu::start`]) and creates `topics` (name, partitions) on it.
    pub fn start_with_topics(topics: &[(&str, i32)]) -> Result<Self, String> {
        let tansu = Self::start()?;
        for (name, partitions) in topics {
            super::kafka::create_topic(tansu.bootstrap(), name, *partitions)
                .map_err(|e| format!("creating topic {name} on tansu: {e}"))?;
        }
        Ok(tansu)
    }

    /// Starts tansu on a free loopback port and waits until it answers metadata requests.
    /// Fails with instructions if the binary is not installed.
    pub fn start() -> Result<Self, String> {
        let bin = Self::binary();
        if !bin.is_file() {
            return Err(format!(
                "tansu is not installed at {}: run scripts/install-tansu.sh (scripts/test.sh does it), \
                 or set CLUSTERA_TANSU_BIN",
                bin.display()
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let tansu = Self {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        tansu.wait_ready(Duration::from_secs(30))?;
        Ok(tansu)
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + limit;
        loop {
            match consumer.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("tansu did not answer within {limit:?}: {e}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The `bootstrap.servers` list.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
