//! The effects a kernel hands to the runtime beyond its outputs: deferred tasks (commit order,
//! the per-partition bound, draining, panics), partial dead letters, and errors that say a
//! dependency is down. Each asserts exact counts against a real (mock) broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clustera::testing::kafka;
use clustera::{Context, Kernel, KernelError, Message, Outcome, Record};

use common::*;

/// What the test kernel does with one input value.
#[derive(Clone, Copy, PartialEq)]
enum Plan {
    /// Sends its output at once.
    Direct,
    /// Defers a task that waits for the gate, then sends the output.
    Gated,
    /// Defers a task that sleeps this long, then sends the output.
    Slow(Duration),
    /// Defers a task that produces 20 records at once, then waits for the gate.
    Streams,
    /// Defers a task that panics.
    Panics,
    /// Fails with `unavailable` this many times, then sends its output.
    Unavailable(usize),
    /// Fails with a transient error every time.
    AlwaysTransient,
    /// Dead-letters one part and still sends its output.
    PartlyDeadLettered,
    /// Defers a task that waits for its partition to stop, then gives up (`unavailable`).
    UntilStopped,
}

/// Copies each input to `output` as the plan for its value says.
#[derive(Clone)]
struct Effects {
    output: String,
    plan: Arc<dyn Fn(u64) -> Plan + Send + Sync>,
    gate: Arc<AtomicBool>,
    processed: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    most_running: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    gave_up: Arc<AtomicUsize>,
}

impl Effects {
    fn new(output: &str, plan: impl Fn(u64) -> Plan + Send + Sync + 'static) -> Self {
        Self {
            output: output.to_owned(),
            plan: Arc::new(plan),
            gate: Arc::default(),
            processed: Arc::default(),
            running: Arc::default(),
            most_running: Arc::default(),
            failures: Arc::default(),
            gave_up: Arc::default(),
        }
    }
}

fn output_of(output: &str, msg: &Message) -> Record {
    let source =
        serde_json::json!({"source": {"partition": msg.partition(), "offset": msg.offset()}});
    Record::to(output).json(&source).unwrap()
}

impl Kernel for Effects {
    fn name(&self) -> &str {
        "effects"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        self.processed.fetch_add(1, Ordering::SeqCst);
        let seq: serde_json::Value = serde_json::from_slice(msg.value().unwrap_or_default())
            .map_err(KernelError::permanent)?;
        let plan = (self.plan)(seq["seq"].as_u64().unwrap_or(u64::MAX));
        let record = output_of(&self.output, msg);
        match plan {
            Plan::Direct => ctx.send(record),
            Plan::Unavailable(times) => {
                if self.failures.fetch_add(1, Ordering::SeqCst) < times {
                    return Err(KernelError::unavailable("connection refused"));
                }
                ctx.send(record);
            }
            Plan::AlwaysTransient => {
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(KernelError::transient("deadlock detected"));
            }
            Plan::PartlyDeadLettered => {
                ctx.dead_letter_with(
                    "handler B: invalid reference",
                    [
                        ("clustera.handler", "B"),
                        ("clustera.original.offset", "forged"),
                    ],
                );
                ctx.send(record);
            }
            Plan::UntilStopped => {
                let this = self.clone();
                ctx.defer(move |out| {
                    let this = this.clone();
                    async move {
                        this.running.fetch_add(1, Ordering::SeqCst);
                        out.stopped().await;
                        assert!(out.is_stopped());
                        this.gave_up.fetch_add(1, Ordering::SeqCst);
                        Err(KernelError::unavailable("the rest never came"))
                    }
                });
            }
            Plan::Streams => {
                let this = self.clone();
                ctx.defer(move |out| {
                    let (this, record) = (this.clone(), record.clone());
                    async move {
                        for _ in 0..20 {
                            out.send_now(record.clone()).await.unwrap();
                        }
                        while !this.gate.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Ok(Outcome::Ack)
                    }
                });
            }
            Plan::Gated | Plan::Slow(_) | Plan::Panics => {
                let this = self.clone();
                ctx.defer(move |out| {
                    if plan == Plan::Panics {
                        // Before the task's future even exists: the hardest panic to catch.
                        panic!("the deferred handler broke");
                    }
                    let (this, record) = (this.clone(), record.clone());
                    async move {
                        let now = this.running.fetch_add(1, Ordering::SeqCst) + 1;
                        this.most_running.fetch_max(now, Ordering::SeqCst);
                        match plan {
                            Plan::Gated => {
                                while !this.gate.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            }
                            Plan::Slow(d) => tokio::time::sleep(d).await,
                            _ => {}
                        }
                        this.running.fetch_sub(1, Ordering::SeqCst);
                        out.send(record);
                        Ok(Outcome::Ack)
                    }
                });
            }
        }
        Ok(Outcome::Ack)
    }
}

async fn committed(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let (b, g, t) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    blocking(move || {
        kafka::committed_offsets(&b, &g, &t)
            .unwrap()
            .get(&0)
            .copied()
    })
    .await
}

async fn outputs(bootstrap: &str, topic: &str) -> Vec<kafka::Consumed> {
    let (b, t) = (bootstrap.to_owned(), topic.to_owned());
    blocking(move || kafka::read_topic(&b, &t).unwrap_or_default()).await
}

async fn wait_committed(bootstrap: &str, group: &str, topic: &str) {
    let (b, g, t) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    wait_for_blocking(
        "every input committed",
        Duration::from_secs(60),
        move || fully_committed(&b, &g, &t),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deferred_message_holds_back_the_commits_after_it_until_its_task_is_done() {
    let (_broker, bootstrap) = mock_with_sequence(&[("dc-in", 1), ("dc-out", 1)], 20).await;
    let kernel = Effects::new(
        "dc-out",
        |v| {
            if v == 5 {
                Plan::Gated
            } else {
                Plan::Direct
            }
        },
    );
    let run = start(
        config_kip848("effects", &bootstrap, "dc-in"),
        kernel.clone(),
    );
    let group = "effects-consumer-group";
    let (b, n) = (bootstrap.clone(), 19);
    wait_for_blocking(
        "the 19 direct outputs",
        Duration::from_secs(60),
        move || kafka::read_topic(&b, "dc-out").unwrap_or_default().len() == n,
    )
    .await;
    // Commits go on while the task waits, but only up to the deferred message.
    wait_for_blocking(
        "a commit at the deferred message",
        Duration::from_secs(30),
        {
            let b = bootstrap.clone();
            move || {
                kafka::committed_offsets(&b, group, "dc-in")
                    .unwrap()
                    .get(&0)
                    == Some(&5)
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        committed(&bootstrap, group, "dc-in").await,
        Some(5),
        "nothing after the deferred message commits before its task is done"
    );
    kernel.gate.store(true, Ordering::SeqCst);
    wait_committed(&bootstrap, group, "dc-in").await;
    run.stop().await;
    let out = outputs(&bootstrap, "dc-out").await;
    assert_eq!(out.len(), 20);
    let b = bootstrap.clone();
    assert_eq!(
        blocking(move || assert_nothing_lost(&b, "dc-in", "dc-out")).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deferred_tasks_of_a_partition_are_bounded_and_the_partition_waits() {
    let (_broker, bootstrap) = mock_with_sequence(&[("db-in", 1), ("db-out", 1)], 10).await;
    let kernel = Effects::new("db-out", |_| Plan::Gated);
    let mut c = config_kip848("effects", &bootstrap, "db-in");
    c.runtime.max_deferred = 3;
    let run = start(c, kernel.clone());
    wait_for("three tasks running", Duration::from_secs(60), || {
        kernel.running.load(Ordering::SeqCst) == 3
    })
    .await;
    // Long enough for an unbounded runtime to start the rest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(kernel.running.load(Ordering::SeqCst), 3);
    assert_eq!(
        kernel.processed.load(Ordering::SeqCst),
        4,
        "the fourth message waits for a slot; nothing after it is taken"
    );
    kernel.gate.store(true, Ordering::SeqCst);
    wait_committed(&bootstrap, "effects-consumer-group", "db-in").await;
    run.stop().await;
    assert_eq!(kernel.most_running.load(Ordering::SeqCst), 3);
    assert_eq!(kernel.processed.load(Ordering::SeqCst), 10);
    let b = bootstrap.clone();
    assert_eq!(
        blocking(move || assert_nothing_lost(&b, "db-in", "db-out")).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_waits_for_a_deferred_task_within_the_drain_timeout() {
    let (_broker, bootstrap) = mock_with_sequence(&[("dd-in", 1), ("dd-out", 1)], 3).await;
    let kernel = Effects::new("dd-out", |_| Plan::Slow(Duration::from_millis(1500)));
    let run = start(
        config_kip848("effects", &bootstrap, "dd-in"),
        kernel.clone(),
    );
    wait_for("the tasks to start", Duration::from_secs(60), || {
        kernel.running.load(Ordering::SeqCst) == 3
    })
    .await;
    run.stop().await;
    // Stopped while all three tasks slept: the stop waited for them and committed them.
    assert!(
        fully_committed(&bootstrap, "effects-consumer-group", "dd-in"),
        "committed: {:?}",
        committed(&bootstrap, "effects-consumer-group", "dd-in").await
    );
    assert_eq!(outputs(&bootstrap, "dd-out").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deferred_task_past_the_drain_timeout_is_redelivered_not_committed() {
    let (_broker, bootstrap) = mock_with_sequence(&[("dt-in", 1), ("dt-out", 1)], 5).await;
    let stuck = Effects::new("dt-out", |v| {
        if v == 2 {
            Plan::Slow(Duration::from_secs(600))
        } else {
            Plan::Direct
        }
    });
    let mut c = config_kip848("effects", &bootstrap, "dt-in");
    c.runtime.drain_timeout = Duration::from_millis(300);
    let run = start(c, stuck.clone());
    wait_for("the stuck task to start", Duration::from_secs(60), || {
        stuck.running.load(Ordering::SeqCst) == 1 && stuck.processed.load(Ordering::SeqCst) == 5
    })
    .await;
    let b = bootstrap.clone();
    wait_for_blocking(
        "the other four outputs",
        Duration::from_secs(60),
        move || kafka::read_topic(&b, "dt-out").unwrap_or_default().len() == 4,
    )
    .await;
    run.stop().await;
    assert_eq!(
        committed(&bootstrap, "effects-consumer-group", "dt-in").await,
        Some(2),
        "the cancelled task's message is the next to read"
    );
    // The next instance finishes it; offsets 3 and 4 are processed again (at least once).
    let next = Effects::new("dt-out", |_| Plan::Direct);
    let run = start(config_kip848("effects", &bootstrap, "dt-in"), next.clone());
    wait_committed(&bootstrap, "effects-consumer-group", "dt-in").await;
    run.stop().await;
    assert_eq!(next.processed.load(Ordering::SeqCst), 3);
    let out = outputs(&bootstrap, "dt-out").await;
    let b = bootstrap.clone();
    let duplicates = blocking(move || assert_nothing_lost(&b, "dt-in", "dt-out")).await;
    assert_eq!(
        (out.len(), duplicates),
        (7, 2),
        "offsets 3 and 4 twice, 2 once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panics_and_partial_failures_are_dead_lettered_and_outages_are_not() {
    let (_broker, bootstrap) = mock_with_sequence(&[("dp-in", 1), ("dp-out", 1)], 10).await;
    let kernel = Effects::new("dp-out", |v| match v {
        1 => Plan::Panics,
        3 => Plan::Unavailable(6),
        5 => Plan::AlwaysTransient,
        7 => Plan::PartlyDeadLettered,
        _ => Plan::Direct,
    });
    let mut c = config_kip848("effects", &bootstrap, "dp-in");
    c.runtime.max_attempts = Some(2);
    c.runtime.dead_letter_topic = Some("effects-dead".into());
    let run = start(c, kernel.clone());
    wait_committed(&bootstrap, "effects-consumer-group", "dp-in").await;
    run.stop().await;
    // 6 unavailable attempts of seq 3 and then one that works; 2 transient attempts of seq 5.
    assert_eq!(kernel.failures.load(Ordering::SeqCst), 7 + 2);
    let letters = outputs(&bootstrap, "effects-dead").await;
    let mut reasons: Vec<(i64, String)> = letters
        .iter()
        .map(|l| {
            let offset = l
                .header("clustera.original.offset")
                .unwrap()
                .parse()
                .unwrap();
            (offset, l.header("clustera.error").unwrap())
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].0 == 1 && reasons[0].1.contains("the deferred handler broke"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == 5 && reasons[1].1.contains("gave up after 2 attempts"),
        "{reasons:?}"
    );
    assert_eq!(reasons[2], (7, "handler B: invalid reference".to_owned()));
    let partial = letters
        .iter()
        .find(|l| l.header("clustera.original.offset").as_deref() == Some("7"))
        .unwrap();
    assert_eq!(partial.header("clustera.handler").as_deref(), Some("B"));
    assert_eq!(
        partial
            .headers
            .iter()
            .filter(|h| h.name == "clustera.original.offset")
            .count(),
        1,
        "a kernel's header cannot forge or duplicate a provenance header"
    );
    let sources: Vec<i64> = transform_sources(&outputs(&bootstrap, "dp-out").await)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    assert_eq!(
        sources,
        [0, 2, 3, 4, 6, 7, 8, 9],
        "every output once, also the outage's and the partly dead-lettered one's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_done_behind_a_deferred_one_are_bounded() {
    let (_broker, bootstrap) = mock_with_sequence(&[("du-in", 1), ("du-out", 1)], 30).await;
    let kernel = Effects::new(
        "du-out",
        |v| if v == 0 { Plan::Gated } else { Plan::Direct },
    );
    let mut c = config_kip848("effects", &bootstrap, "du-in");
    c.runtime.max_uncommitted = 5;
    let run = start(c, kernel.clone());
    wait_for(
        "the partition to fill its window",
        Duration::from_secs(60),
        || kernel.processed.load(Ordering::SeqCst) == 6,
    )
    .await;
    // Long enough for an unbounded runtime to take the rest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        kernel.processed.load(Ordering::SeqCst),
        6,
        "the deferred message and four behind it are tracked; the sixth waits"
    );
    kernel.gate.store(true, Ordering::SeqCst);
    wait_committed(&bootstrap, "effects-consumer-group", "du-in").await;
    run.stop().await;
    let b = bootstrap.clone();
    assert_eq!(
        blocking(move || assert_nothing_lost(&b, "du-in", "du-out")).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_told_its_partition_stopped_gives_up_and_its_message_is_redelivered() {
    let (_broker, bootstrap) = mock_with_sequence(&[("ds-in", 1), ("ds-out", 1)], 3).await;
    let kernel = Effects::new("ds-out", |v| {
        if v == 1 {
            Plan::UntilStopped
        } else {
            Plan::Direct
        }
    });
    let run = start(
        config_kip848("effects", &bootstrap, "ds-in"),
        kernel.clone(),
    );
    let b = bootstrap.clone();
    wait_for_blocking(
        "the two direct outputs",
        Duration::from_secs(60),
        move || kafka::read_topic(&b, "ds-out").unwrap_or_default().len() == 2,
    )
    .await;
    wait_for("the waiting task", Duration::from_secs(60), || {
        kernel.running.load(Ordering::SeqCst) == 1
    })
    .await;
    let stats = run.stop().await;
    assert_eq!(kernel.gave_up.load(Ordering::SeqCst), 1);
    assert_eq!(
        stats.dead_lettered, 0,
        "giving up is not a failure of the message"
    );
    assert_eq!(
        committed(&bootstrap, "effects-consumer-group", "ds-in").await,
        Some(1),
        "the message whose task gave up is the next to read"
    );
    assert_eq!(outputs(&bootstrap, "ds-out").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_produced_at_once_go_out_before_the_task_ends_and_still_hold_the_commit() {
    let (_broker, bootstrap) = mock_with_sequence(&[("ds-in", 1), ("ds-out", 1)], 3).await;
    let kernel = Effects::new(
        "ds-out",
        |v| if v == 0 { Plan::Streams } else { Plan::Direct },
    );
    let run = start(
        config_kip848("effects", &bootstrap, "ds-in"),
        kernel.clone(),
    );
    let b = bootstrap.clone();
    wait_for_blocking(
        "the streamed records and the two direct outputs",
        Duration::from_secs(60),
        move || kafka::read_topic(&b, "ds-out").unwrap_or_default().len() == 22,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        committed(&bootstrap, "effects-consumer-group", "ds-in").await,
        None,
        "the streaming task's message is not done while the task runs"
    );
    kernel.gate.store(true, Ordering::SeqCst);
    wait_committed(&bootstrap, "effects-consumer-group", "ds-in").await;
    run.stop().await;
    assert_eq!(outputs(&bootstrap, "ds-out").await.len(), 22);
}
