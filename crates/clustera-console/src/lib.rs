//! Clustera Console: a web UI for topics, consumer groups, kernels and dead letters, served
//! by `clustera console`.
//!
//! Server-rendered pages ([maud](https://maud.lambda.xyz) templates escape every value), one
//! small embedded script and stylesheet, charts as inline SVG: nothing to build with Node.js
//! and nothing to install beside the binary. Kafka is read with librdkafka clients of the
//! console's own (no consumer group); kernels are seen through the status records they
//! publish ([`clustera::telemetry::status`]).

pub mod browse;
pub mod clock;
pub mod dlq;
pub mod error;
pub mod kafka;
pub mod pages;
pub mod sampler;
pub mod security;
pub mod table;
pub mod value;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use clustera::telemetry::status::StatusRecord;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

pub use error::ConsoleError;

/// Where `clustera console` listens by default: loopback only, and away from a kernel's
/// `/metrics` (8080), the relay's (8081) and the development broker (9092).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9021";

/// Where the console records dead letters marked handled (a compacted topic: one record per
/// marked range).
pub const DEFAULT_HANDLED_TOPIC: &str = "clustera.console.handled";

/// How the console runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Kafka client configuration (brokers, security), as every tool reads it.
    pub client: ClientConfig,
    /// Hide and refuse every mutating action.
    pub read_only: bool,
    /// The token every request must present, if any (`CLUSTERA_CONSOLE_TOKEN`).
    pub token: Option<String>,
    /// The one dead-letter topic kernels may use (`CLUSTERA_DLQ_TOPIC`), beside every `*.dlq`.
    pub dlq_topic: Option<String>,
    /// The kernels' status topic (`CLUSTERA_STATUS_TOPIC`).
    pub status_topic: String,
    /// Where dead letters marked handled are recorded.
    pub handled_topic: String,
    /// How often every group's lag is sampled for the charts.
    pub sample_interval: Duration,
}

impl Options {
    /// Defaults for a client configuration: read-write, no token, the default topics, a lag
    /// sample every 15 seconds.
    pub fn new(client: ClientConfig) -> Self {
        Self {
            client,
            read_only: false,
            token: None,
            dlq_topic: None,
            status_topic: clustera::telemetry::status::DEFAULT_STATUS_TOPIC.to_owned(),
            handled_topic: DEFAULT_HANDLED_TOPIC.to_owned(),
            sample_interval: Duration::from_secs(15),
        }
    }
}

/// What every handler shares.
pub struct State {
    /// How the console runs.
    pub options: Options,
    /// A group-less client for metadata and watermarks.
    pub client: BaseConsumer,
    /// The producer of produced messages and replays.
    pub producer: FutureProducer,
    /// The kernels' status records.
    pub status: table::Table,
    /// The dead-letter ranges marked handled.
    pub handled: table::Table,
    /// Lag over the last hour.
    pub history: Arc<Mutex<sampler::History>>,
    /// This process's CSRF token, in every form.
    pub csrf: String,
    /// Until when the brokers are known not to answer the group APIs.
    groups_unavailable_until: Mutex<Option<Instant>>,
}

impl State {
    /// Every kernel instance's latest status record, by key.
    pub fn kernels(&self) -> Vec<StatusRecord> {
        let mut out: Vec<StatusRecord> = self
            .status
            .rows()
            .values()
            .filter_map(|v| serde_json::from_slice(v).ok())
            .collect();
        out.sort_by(|a, b| (&a.kernel, &a.host, a.pid).cmp(&(&b.kernel, &b.host, b.pid)));
        out
    }

    /// Groups the brokers list, plus those kernels report (brokers without the group APIs,
    /// like the development broker, list none), plus those sampled before.
    pub fn known_groups(&self) -> BTreeSet<String> {
        let mut groups: BTreeSet<String> = self
            .described_groups()
            .into_iter()
            .map(|g| g.name)
            .collect();
        groups.extend(self.kernels().into_iter().map(|k| k.group));
        groups.extend(
            self.history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .series
                .keys()
                .cloned(),
        );
        groups
    }

    /// Groups as the brokers describe them; none from brokers without the group APIs. Those
    /// (the development broker) never answer ListGroups, so after a failure the console does
    /// not ask again for a minute rather than make every page wait.
    pub fn described_groups(&self) -> Vec<kafka::Group> {
        let mut until = self
            .groups_unavailable_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if until.is_some_and(|t| Instant::now() < t) {
            return Vec::new();
        }
        match kafka::groups(&self.client, Duration::from_secs(3)) {
            Ok(groups) => {
                *until = None;
                groups
            }
            Err(e) => {
                tracing::debug!(error = %e, "the brokers do not list consumer groups");
                *until = Some(Instant::now() + Duration::from_secs(60));
                Vec::new()
            }
        }
    }

    /// Dead-letter topics: every `*.dlq` and the configured one, among `topics`.
    pub fn dlq_topics<'a>(&self, topics: impl Iterator<Item = &'a str>) -> Vec<String> {
        topics
            .filter(|t| t.ends_with(".dlq") || self.options.dlq_topic.as_deref() == Some(*t))
            .map(str::to_owned)
            .collect()
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The console's routes, with its background readers and sampler started.
pub fn router(options: Options) -> Result<Router, ConsoleError> {
    let client = kafka::client(&options.client)?;
    // Idempotent and acknowledged by every replica, like every producer of the project: a
    // replay must neither be lost nor land twice.
    let producer: FutureProducer = options
        .client
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .map_err(|e| ConsoleError::kafka("creating the producer", e))?;
    let status = table::Table::follow(&options.client, &options.status_topic);
    let handled = table::Table::follow(&options.client, &options.handled_topic);
    let history = Arc::new(Mutex::new(sampler::History::default()));
    let every = options.sample_interval;
    let state = Arc::new(State {
        options,
        client,
        producer,
        status,
        handled,
        history: history.clone(),
        csrf: security::random_token(),
        groups_unavailable_until: Mutex::new(None),
    });
    sampler::start(Arc::downgrade(&state), history, every);
    Ok(Router::new()
        .route("/", get(pages::overview::page))
        .route(
            "/login",
            get(pages::layout::login_page).post(pages::layout::login),
        )
        .route("/assets/app.css", get(pages::layout::css))
        .route("/assets/app.js", get(pages::layout::js))
        .route("/topics", get(pages::topics::list))
        .route("/topics/{topic}", get(pages::topics::detail))
        .route("/topics/{topic}/produce", post(pages::topics::produce))
        .route("/groups", get(pages::groups::list))
        .route("/groups/{group}", get(pages::groups::detail))
        .route("/groups/{group}/reset", post(pages::groups::reset))
        .route("/kernels", get(pages::kernels::page))
        .route("/dlq", get(pages::dead_letters::list))
        .route("/dlq/{topic}", get(pages::dead_letters::detail))
        .route("/dlq/{topic}/replay", post(pages::dead_letters::replay))
        .route(
            "/dlq/{topic}/handled",
            post(pages::dead_letters::mark_handled),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::guard,
        ))
        .with_state(state))
}

/// Serves the console on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConsoleError> {
    let app = router(options)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ConsoleError::Internal(format!("serving the console: {e}")))
}

/// The address a listener is bound to, for messages.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}
