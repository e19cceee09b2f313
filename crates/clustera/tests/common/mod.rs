//! Shared helpers for the integration tests: in-process kernels, example binaries, waiting.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clustera::runtime::RuntimeStats;
use clustera::testing::kafka;
use clustera::{Config, Kernel, Runtime, StatsSnapshot};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A kernel running in this process, stopped by [`Running::stop`].
pub struct Running {
    pub stats: Arc<RuntimeStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<StatsSnapshot>,
}

impl Running {
    pub async fn stop(mut self) -> StatsSnapshot {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("kernel did not stop within 60 s")
            .expect("kernel task panicked")
    }
}

pub fn start<K: Kernel>(config: Config, kernel: K) -> Running {
    let runtime = Runtime::new(config, kernel);
    let stats = runtime.stats();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runtime
            .run_until(async {
                let _ = rx.await;
            })
            .await
            .expect("runtime failed")
    });
    Running {
        stats,
        stop: Some(tx),
        task,
    }
}

/// A test configuration with fast commits and retries.
pub fn config(name: &str, bootstrap: &str, topic: &str) -> Config {
    let mut c = Config::for_brokers(name, bootstrap, &[topic]);
    c.runtime.commit_interval = Duration::from_millis(200);
    c.runtime.retry_initial_delay = Duration::from_millis(5);
    c.runtime.retry_max_delay = Duration::from_millis(50);
    c.runtime.drain_timeout = Duration::from_secs(10);
    c.properties.insert(
        "session.timeout.ms".into(),
        clustera::config::Secret::new("6000"),
    );
    c.properties.insert(
        "heartbeat.interval.ms".into(),
        clustera::config::Secret::new("500"),
    );
    c
}

/// The same, with the next-generation group protocol (KIP-848): the broker owns the session
/// timeout and the assignment, and a member that leaves is replaced at once.
pub fn config_kip848(name: &str, bootstrap: &str, topic: &str) -> Config {
    let mut c = config(name, bootstrap, topic);
    c.properties.remove("session.timeout.ms");
    c.properties.remove("heartbeat.interval.ms");
    c.properties.insert(
        "group.protocol".into(),
        clustera::config::Secret::new("consumer"),
    );
    c
}

/// Polls `cond` every 50 ms; panics with `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Same, for a condition that needs blocking broker calls.
pub async fn wait_for_blocking<F>(what: &str, limit: Duration, cond: F)
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    let cond = Arc::new(cond);
    let deadline = Instant::now() + limit;
    loop {
        let c = cond.clone();
        if tokio::task::spawn_blocking(move || c()).await.unwrap() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Whether the group's committed offsets equal the topic's high watermarks.
pub fn fully_committed(bootstrap: &str, group: &str, topic: &str) -> bool {
    let high = kafka::high_watermarks(bootstrap, topic).unwrap();
    let committed = kafka::committed_offsets(bootstrap, group, topic).unwrap_or_default();
    high.iter()
        .all(|(p, h)| *h == 0 || committed.get(p) == Some(h))
}

/// The built example binary `name` (`cargo build --examples`; scripts/test.sh does it).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/<profile>/examples/<name>
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "example binary {} is missing: run `cargo build -p clustera --examples` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Maps each output of the transform example back to its input `(partition, offset)`.
pub fn transform_sources(outputs: &[kafka::Consumed]) -> Vec<(i32, i64)> {
    outputs
        .iter()
        .map(|o| {
            let v: serde_json::Value = serde_json::from_slice(o.value.as_deref().unwrap()).unwrap();
            (
                v["source"]["partition"].as_i64().unwrap() as i32,
                v["source"]["offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Counts how often each item occurs.
pub fn histogram<T: std::hash::Hash + Eq + Clone>(items: &[T]) -> HashMap<T, usize> {
    let mut h = HashMap::new();
    for i in items {
        *h.entry(i.clone()).or_insert(0) += 1;
    }
    h
}

/// All `(partition, offset)` pairs of a topic.
pub fn input_positions(bootstrap: &str, topic: &str) -> BTreeMap<(i32, i64), Vec<u8>> {
    kafka::read_topic(bootstrap, topic)
        .unwrap()
        .into_iter()
        .map(|m| ((m.partition, m.offset), m.key.unwrap_or_default()))
        .collect()
}

pub fn _assert_future_send<F: Future + Send>(_: F) {}

/// Copies each input to `output` with the same key, recording its source; sleeps `delay` first.
pub struct SlowCopy {
    pub output: String,
    pub delay: Duration,
}

impl Kernel for SlowCopy {
    fn name(&self) -> &str {
        "copy"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(
        &self,
        msg: &clustera::Message,
        ctx: &mut clustera::Context,
    ) -> Result<clustera::Outcome, clustera::KernelError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let out =
            serde_json::json!({"source": {"partition": msg.partition(), "offset": msg.offset()}});
        ctx.send(
            clustera::Record::to(&self.output)
                .maybe_key(msg.key_bytes())
                .json(&out)
                .unwrap(),
        );
        Ok(clustera::Outcome::Ack)
    }
}

/// Asserts every input of `input` has at least one output on `output`.
pub fn assert_nothing_lost(bootstrap: &str, input: &str, output: &str) -> usize {
    let inputs = input_positions(bootstrap, input);
    let outputs = kafka::read_topic(bootstrap, output).unwrap();
    let counts = histogram(&transform_sources(&outputs));
    let lost: Vec<_> = inputs.keys().filter(|p| !counts.contains_key(p)).collect();
    assert!(
        lost.is_empty(),
        "{} inputs lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    outputs.len() - inputs.len()
}

/// A one-broker mock cluster with `topics` (name, partitions) created and `count` sequence
/// messages (`{"seq": i}`, key `key-i`) produced to the first one.
pub async fn mock_with_sequence(
    topics: &[(&str, i32)],
    count: usize,
) -> (clustera::testing::MockBroker, String) {
    let broker = clustera::testing::MockBroker::start(1).unwrap();
    for (name, partitions) in topics {
        broker.create_topic(name, *partitions).unwrap();
    }
    let bootstrap = broker.bootstrap().to_owned();
    let (b, input) = (bootstrap.clone(), topics[0].0.to_owned());
    blocking(move || kafka::produce_sequence(&b, &input, count).unwrap()).await;
    (broker, bootstrap)
}

/// Runs `kernel` on `topic` until `count` messages are processed and the group's commits
/// reach the high watermarks; returns the final counters.
pub async fn run_to_completion<K: Kernel>(
    config: Config,
    kernel: K,
    bootstrap: &str,
    topic: &str,
    count: usize,
) -> StatsSnapshot {
    let group = config.group_id.clone();
    let running = start(config, kernel);
    let stats = running.stats.clone();
    wait_for("all messages processed", Duration::from_secs(120), || {
        stats.snapshot().processed() >= count as u64
    })
    .await;
    let (b, g, t) = (bootstrap.to_owned(), group, topic.to_owned());
    wait_for_blocking(
        "commits to reach the high watermarks",
        Duration::from_secs(30),
        move || fully_committed(&b, &g, &t),
    )
    .await;
    running.stop().await
}

/// The `seq` field of each output (`{"seq": n, ...}` JSON values), in topic order.
pub fn output_seqs(outputs: &[kafka::Consumed]) -> Vec<u64> {
    outputs
        .iter()
        .map(|o| {
            serde_json::from_slice::<serde_json::Value>(o.value.as_deref().unwrap()).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// Records keyed `k<i>` with the given values, for `kafka::produce`.
pub fn values(values: Vec<String>) -> Vec<kafka::ProducedRecord> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            (
                Some(format!("k{i}").into_bytes()),
                v.into_bytes(),
                Vec::new(),
            )
        })
        .collect()
}

/// Copies each input to `output` with its key and value, after 1 ms.
pub struct KeyedCopy {
    pub output: String,
}

impl Kernel for KeyedCopy {
    fn name(&self) -> &str {
        "keyed"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(
        &self,
        msg: &clustera::Message,
        ctx: &mut clustera::Context,
    ) -> Result<clustera::Outcome, clustera::KernelError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut record = clustera::Record::to(&self.output).maybe_key(msg.key_bytes());
        if let Some(v) = msg.value_bytes() {
            record = record.value(v);
        }
        ctx.send(record);
        Ok(clustera::Outcome::Ack)
    }
}

/// Outputs whose value is a per-key sequence number: per key, the numbers in the order they
/// first appear, and how many outputs repeated one already seen.
pub struct FirstAppearances {
    pub per_key: BTreeMap<Vec<u8>, Vec<usize>>,
    pub duplicates: usize,
}

impl FirstAppearances {
    pub fn of(outputs: &[kafka::Consumed]) -> Self {
        let mut per_key: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut duplicates = 0;
        for o in outputs {
            let key = o.key.clone().unwrap();
            let n: usize = String::from_utf8_lossy(o.value.as_deref().unwrap())
                .parse()
                .unwrap();
            if seen.insert((key.clone(), n)) {
                per_key.entry(key).or_default().push(n);
            } else {
                duplicates += 1;
            }
        }
        Self {
            per_key,
            duplicates,
        }
    }

    /// Distinct values seen.
    pub fn distinct(&self) -> usize {
        self.per_key.values().map(Vec::len).sum()
    }

    /// Keys whose values first appeared out of order.
    pub fn reordered_keys(&self) -> usize {
        self.per_key
            .values()
            .filter(|ns| ns.windows(2).any(|w| w[0] > w[1]))
            .count()
    }
}

/// The transform example (`cargo build --examples`) as its own process on `input`, writing
/// to `output` in `group`, with `env` on top of the connection settings.
pub fn transform_process(
    bootstrap: &str,
    input: &str,
    output: &str,
    group: &str,
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut command = std::process::Command::new(example_bin("transform"));
    command
        .env_clear()
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("KAFKA_TOPIC", input)
        .env("OUTPUT_TOPIC", output)
        .env("KAFKA_CONSUMER_GROUP", group)
        .env("RUST_LOG", "warn")
        .env("CLUSTERA_HTTP_ADDR", "off");
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start the transform example")
}
