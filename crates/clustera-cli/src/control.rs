//! The control API of `clustera dev --control ADDR`: fault injection into the mock cluster
//! over HTTP, JSON in and out.
//!
//! | Request | Body | Effect |
//! |---|---|---|
//! | `GET /` | | the cluster: brokers, their state, injected errors |
//! | `POST /brokers/{id\|all}/down` | `{"for_seconds": N}` (optional) | refuse connections (back up after N s) |
//! | `POST /brokers/{id\|all}/up` | | accept connections again |
//! | `POST /brokers/{id\|all}/rtt` | `{"ms": N}` | delay every response by N ms |
//! | `POST /errors` | `{"api": "Produce", "code": 6, "count": 3}` | the next N requests of that API fail |
//! | `DELETE /errors/{api}` | | drop the errors still pending for that API |
//!
//! Refusals are 4xx with `{"error": "..."}` naming what was wrong. The parsing and the state
//! machine here do no I/O: [`Cluster::apply`] drives the mock through the [`Faults`] trait.

use std::fmt;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// Longest outage `down` accepts (a day).
const MAX_DOWN_SECONDS: u64 = 86_400;
/// Largest round-trip time `rtt` accepts (ten minutes).
const MAX_RTT_MS: u64 = 600_000;
/// Most errors one `POST /errors` pushes.
const MAX_ERROR_COUNT: u32 = 10_000;

/// The requests librdkafka 2.12.1's mock broker answers *and* takes injected errors for
/// (each handler in `rdkafka_mock_handlers.c` calls `rd_kafka_mock_next_request_error`).
const INJECTABLE_APIS: &[(&str, RDKafkaApiKey)] = &[
    ("Produce", RDKafkaApiKey::Produce),
    ("Fetch", RDKafkaApiKey::Fetch),
    ("ListOffsets", RDKafkaApiKey::ListOffsets),
    ("OffsetCommit", RDKafkaApiKey::OffsetCommit),
    ("OffsetFetch", RDKafkaApiKey::OffsetFetch),
    ("FindCoordinator", RDKafkaApiKey::FindCoordinator),
    ("JoinGroup", RDKafkaApiKey::JoinGroup),
    ("Heartbeat", RDKafkaApiKey::Heartbeat),
    ("LeaveGroup", RDKafkaApiKey::LeaveGroup),
    ("SyncGroup", RDKafkaApiKey::SyncGroup),
    ("ApiVersion", RDKafkaApiKey::ApiVersion),
    ("InitProducerId", RDKafkaApiKey::InitProducerId),
    ("OffsetForLeaderEpoch", RDKafkaApiKey::OffsetForLeaderEpoch),
    ("AddPartitionsToTxn", RDKafkaApiKey::AddPartitionsToTxn),
    ("AddOffsetsToTxn", RDKafkaApiKey::AddOffsetsToTxn),
    ("TxnOffsetCommit", RDKafkaApiKey::TxnOffsetCommit),
    ("EndTxn", RDKafkaApiKey::EndTxn),
];

/// Requests a client may name that the mock answers but never fails on demand: its handler
/// does not consult the injected errors.
const NOT_INJECTABLE_APIS: &[(&str, &str)] = &[(
    "Metadata",
    "the mock broker's Metadata handler ignores injected request errors (librdkafka 2.12.1)",
)];

/// A request the control API refuses: the HTTP status and a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400 for a bad value, 404 for an unknown broker or endpoint, 500 if the mock failed.
    pub status: StatusCode,
    /// One line, naming what was wrong.
    pub message: String,
}

impl Refusal {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Which brokers a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brokers {
    /// Every broker of the cluster.
    All,
    /// One broker, by id (1 to the broker count).
    One(i32),
}

/// Parses a broker selector from a path: `all` or an id between 1 and `count`.
pub fn parse_brokers(text: &str, count: i32) -> Result<Brokers, Refusal> {
    if text.eq_ignore_ascii_case("all") {
        return Ok(Brokers::All);
    }
    match text.parse::<i32>() {
        Ok(id) if (1..=count).contains(&id) => Ok(Brokers::One(id)),
        _ => Err(Refusal::not_found(format!(
            "unknown broker {text}: the brokers are {} (or all)",
            broker_range(count)
        ))),
    }
}

fn broker_range(count: i32) -> String {
    if count == 1 {
        "1".to_owned()
    } else {
        format!("1 to {count}")
    }
}

/// An API name as written (`Produce`, `offset_commit`, `OFFSETCOMMIT`): letters compared
/// without case, `_` and `-` ignored.
fn normalize_api(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Parses the name of a request type the mock can fail on demand, case-insensitively
/// (`ApiVersions`, Kafka's spelling, is accepted for librdkafka's `ApiVersion`). Returns the
/// key and its canonical name.
pub fn parse_api(name: &str) -> Result<(RDKafkaApiKey, &'static str), Refusal> {
    let wanted = match normalize_api(name.trim()).as_str() {
        "apiversions" => "apiversion".to_owned(),
        other => other.to_owned(),
    };
    if let Some((canonical, key)) = INJECTABLE_APIS
        .iter()
        .find(|(n, _)| normalize_api(n) == wanted)
    {
        return Ok((*key, canonical));
    }
    if let Some((canonical, why)) = NOT_INJECTABLE_APIS
        .iter()
        .find(|(n, _)| normalize_api(n) == wanted)
    {
        return Err(Refusal::bad_request(format!(
            "API {canonical} cannot be failed on demand: {why}"
        )));
    }
    Err(Refusal::bad_request(format!(
        "unknown API name {name:?}: errors can be injected for {}",
        injectable_api_names().join(", ")
    )))
}

/// The names [`parse_api`] accepts, canonical spelling.
pub fn injectable_api_names() -> Vec<&'static str> {
    INJECTABLE_APIS.iter().map(|(n, _)| *n).collect()
}

/// Parses a Kafka protocol error code (`6` is NOT_LEADER_OR_FOLLOWER): -1 or a positive code
/// librdkafka knows. 0 (no error) and librdkafka's internal negative codes are refused.
pub fn parse_error_code(code: i64) -> Result<RDKafkaRespErr, Refusal> {
    if code == 0 {
        return Err(Refusal::bad_request(
            "error code 0 is NONE (no error): nothing to inject",
        ));
    }
    let known = i32::try_from(code)
        .ok()
        .filter(|c| *c == -1 || *c > 0)
        .and_then(|c| RDKafkaRespErr::try_from(c).ok())
        .filter(|e| *e != RDKafkaRespErr::RD_KAFKA_RESP_ERR_END_ALL);
    known.ok_or_else(|| {
        Refusal::bad_request(format!(
            "unknown Kafka error code {code}: expected a protocol error code such as 6 \
             (NOT_LEADER_OR_FOLLOWER) or 7 (REQUEST_TIMED_OUT)"
        ))
    })
}

/// The name of an error code without librdkafka's prefix: `NOT_LEADER_FOR_PARTITION`.
pub fn error_name(err: RDKafkaRespErr) -> String {
    let debug = format!("{err:?}");
    debug
        .strip_prefix("RD_KAFKA_RESP_ERR_")
        .unwrap_or(&debug)
        .to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownBody {
    for_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RttBody {
    ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorsBody {
    api: String,
    code: i64,
    count: u32,
}

/// Parses a JSON body; an empty body reads as `{}`.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| Refusal::bad_request(format!("invalid JSON body: {e}")))
}

/// A validated request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Refuse connections, for a while or until `Up`.
    Down {
        /// Which brokers.
        brokers: Brokers,
        /// Bring them back up after this long.
        duration: Option<Duration>,
    },
    /// Accept connections again.
    Up {
        /// Which brokers.
        brokers: Brokers,
    },
    /// Delay every response.
    Rtt {
        /// Which brokers.
        brokers: Brokers,
        /// The delay in milliseconds (0 removes it).
        ms: u32,
    },
    /// Fail the next `count` requests of one API with `code`.
    Errors {
        /// The request type.
        api: RDKafkaApiKey,
        /// Its canonical name.
        api_name: &'static str,
        /// The error.
        code: RDKafkaRespErr,
        /// How many requests fail.
        count: u32,
    },
    /// Drop the errors still pending for one API.
    ClearErrors {
        /// The request type.
        api: RDKafkaApiKey,
        /// Its canonical name.
        api_name: &'static str,
    },
}

/// Validates `POST /brokers/{broker}/down`.
pub fn down_request(broker: &str, body: &[u8], count: i32) -> Result<Action, Refusal> {
    let brokers = parse_brokers(broker, count)?;
    let body: DownBody = parse_body(body)?;
    let duration = match body.for_seconds {
        None => None,
        Some(s) if (1..=MAX_DOWN_SECONDS).contains(&s) => Some(Duration::from_secs(s)),
        Some(s) => {
            return Err(Refusal::bad_request(format!(
                "for_seconds {s}: expected 1 to {MAX_DOWN_SECONDS} (omit it to stay down until up)"
            )))
        }
    };
    Ok(Action::Down { brokers, duration })
}

/// Validates `POST /brokers/{broker}/up`.
pub fn up_request(broker: &str, body: &[u8], count: i32) -> Result<Action, Refusal> {
    let brokers = parse_brokers(broker, count)?;
    let _: EmptyBody = parse_body(body)?;
    Ok(Action::Up { brokers })
}

/// Validates `POST /brokers/{broker}/rtt`.
pub fn rtt_request(broker: &str, body: &[u8], count: i32) -> Result<Action, Refusal> {
    let brokers = parse_brokers(broker, count)?;
    let body: RttBody = parse_body(body)?;
    let ms = u32::try_from(body.ms)
        .ok()
        .filter(|ms| u64::from(*ms) <= MAX_RTT_MS)
        .ok_or_else(|| {
            Refusal::bad_request(format!("ms {}: expected 0 to {MAX_RTT_MS}", body.ms))
        })?;
    Ok(Action::Rtt { brokers, ms })
}

/// Validates `POST /errors`.
pub fn errors_request(body: &[u8]) -> Result<Action, Refusal> {
    let body: ErrorsBody = parse_body(body)?;
    let (api, api_name) = parse_api(&body.api)?;
    let code = parse_error_code(body.code)?;
    if !(1..=MAX_ERROR_COUNT).contains(&body.count) {
        return Err(Refusal::bad_request(format!(
            "count {}: expected 1 to {MAX_ERROR_COUNT}",
            body.count
        )));
    }
    Ok(Action::Errors {
        api,
        api_name,
        code,
        count: body.count,
    })
}

/// Validates `DELETE /errors/{api}`.
pub fn clear_errors_request(api: &str) -> Result<Action, Refusal> {
    let (api, api_name) = parse_api(api)?;
    Ok(Action::ClearErrors { api, api_name })
}

/// What [`Cluster::apply`] asks of the mock cluster. Broker ids are always explicit (1 to
/// the count).
pub trait Faults {
    /// Closes the broker's connections and refuses new ones.
    fn broker_down(&self, id: i32) -> Result<(), String>;
    /// Makes the broker accept connections again.
    fn broker_up(&self, id: i32) -> Result<(), String>;
    /// Delays the broker's responses.
    fn broker_rtt(&self, id: i32, rtt: Duration) -> Result<(), String>;
    /// Pushes errors for the next requests of `api`, whichever broker receives them.
    fn push_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]);
    /// Drops the pending errors of `api`.
    fn clear_errors(&self, api: RDKafkaApiKey);
}

#[derive(Debug, Clone)]
struct BrokerState {
    id: i32,
    up: bool,
    rtt_ms: u32,
    /// Set while down for a limited time.
    up_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Injection {
    api: &'static str,
    code: RDKafkaRespErr,
    count: u32,
}

/// What the control API knows of the cluster: the brokers' state as set through it, and the
/// errors pushed so far.
#[derive(Debug, Clone)]
pub struct Cluster {
    bootstrap: String,
    brokers: Vec<BrokerState>,
    injected: Vec<Injection>,
}

impl Cluster {
    /// A cluster of brokers 1 to `count`, all up. `bootstrap` is the address clients use.
    pub fn new(count: i32, bootstrap: String) -> Self {
        Self {
            bootstrap,
            brokers: (1..=count)
                .map(|id| BrokerState {
                    id,
                    up: true,
                    rtt_ms: 0,
                    up_at: None,
                })
                .collect(),
            injected: Vec::new(),
        }
    }

    fn select(&mut self, brokers: Brokers) -> impl Iterator<Item = &mut BrokerState> {
        self.brokers.iter_mut().filter(move |b| match brokers {
            Brokers::All => true,
            Brokers::One(id) => b.id == id,
        })
    }

    /// Applies a validated request to the mock; returns a one-line account of what changed.
    pub fn apply(
        &mut self,
        faults: &impl Faults,
        action: &Action,
        now: Instant,
    ) -> Result<String, Refusal> {
        let failed = |what: &str, e: String| Refusal::internal(format!("{what}: {e}"));
        match action {
            Action::Down { brokers, duration } => {
                for b in self.select(*brokers) {
                    faults
                        .broker_down(b.id)
                        .map_err(|e| failed(&format!("broker {} down", b.id), e))?;
                    b.up = false;
                    b.up_at = duration.map(|d| now + d);
                }
                Ok(match duration {
                    Some(d) => format!("{} down for {} s", describe_brokers(*brokers), d.as_secs()),
                    None => format!("{} down until up", describe_brokers(*brokers)),
                })
            }
            Action::Up { brokers } => {
                for b in self.select(*brokers) {
                    faults
                        .broker_up(b.id)
                        .map_err(|e| failed(&format!("broker {} up", b.id), e))?;
                    b.up = true;
                    b.up_at = None;
                }
                Ok(format!("{} up", describe_brokers(*brokers)))
            }
            Action::Rtt { brokers, ms } => {
                for b in self.select(*brokers) {
                    faults
                        .broker_rtt(b.id, Duration::from_millis(u64::from(*ms)))
                        .map_err(|e| failed(&format!("broker {} rtt", b.id), e))?;
                    b.rtt_ms = *ms;
                }
                Ok(format!(
                    "{} round-trip time {ms} ms",
                    describe_brokers(*brokers)
                ))
            }
            Action::Errors {
                api,
                api_name,
                code,
                count,
            } => {
                let errors = vec![*code; *count as usize];
                faults.push_errors(*api, &errors);
                self.injected.push(Injection {
                    api: api_name,
                    code: *code,
                    count: *count,
                });
                Ok(format!(
                    "next {count} {api_name} request(s) fail with {} ({})",
                    error_name(*code),
                    *code as i32
                ))
            }
            Action::ClearErrors { api, api_name } => {
                faults.clear_errors(*api);
                self.injected.retain(|i| i.api != *api_name);
                Ok(format!("pending {api_name} errors dropped"))
            }
        }
    }

    /// The earliest time a broker that is down for a while comes back.
    pub fn next_up_at(&self) -> Option<Instant> {
        self.brokers.iter().filter_map(|b| b.up_at).min()
    }

    /// Brings back the brokers whose outage has ended by `now`; returns their ids.
    pub fn bring_up_due(&mut self, faults: &impl Faults, now: Instant) -> Vec<i32> {
        let mut back = Vec::new();
        for b in &mut self.brokers {
            if b.up_at.is_some_and(|t| t <= now) {
                match faults.broker_up(b.id) {
                    Ok(()) => {
                        b.up = true;
                        b.up_at = None;
                        back.push(b.id);
                    }
                    Err(e) => {
                        // Leave it to the operator; retrying every loop would spin.
                        tracing::warn!(broker = b.id, error = %e, "cannot bring the broker up");
                        b.up_at = None;
                    }
                }
            }
        }
        back
    }

    /// The `GET /` document.
    pub fn describe(&self, now: Instant) -> Value {
        json!({
            "bootstrap": self.bootstrap,
            "brokers": self.brokers.iter().map(|b| json!({
                "id": b.id,
                "state": if b.up { "up" } else { "down" },
                "rtt_ms": b.rtt_ms,
                "up_in_seconds": b.up_at.map(|t| t.saturating_duration_since(now).as_secs_f64().ceil() as u64),
            })).collect::<Vec<_>>(),
            "injected_errors": self.injected.iter().map(|i| json!({
                "api": i.api,
                "code": i.code as i32,
                "name": error_name(i.code),
                "count": i.count,
            })).collect::<Vec<_>>(),
            "injectable_apis": injectable_api_names(),
        })
    }
}

fn describe_brokers(brokers: Brokers) -> String {
    match brokers {
        Brokers::All => "all brokers".to_owned(),
        Brokers::One(id) => format!("broker {id}"),
    }
}

/// A request for the task that owns the mock cluster, with where to send the answer: the
/// message and the cluster afterwards, or the refusal.
pub type ControlRequest = (
    Option<Action>,
    oneshot::Sender<Result<(String, Value), Refusal>>,
);

#[derive(Clone)]
struct Handle {
    broker_count: i32,
    tx: mpsc::Sender<ControlRequest>,
}

impl Handle {
    /// Sends a validated action (or `None` to only describe) to the owner of the mock.
    async fn call(&self, action: Option<Action>) -> Result<(String, Value), Refusal> {
        let (reply, answer) = oneshot::channel();
        let gone = || Refusal::internal("the development broker is shutting down");
        self.tx.send((action, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn act(&self, action: Result<Action, Refusal>) -> Response {
        match action {
            Ok(action) => match self.call(Some(action)).await {
                Ok((message, cluster)) => {
                    Json(json!({ "message": message, "cluster": cluster })).into_response()
                }
                Err(refusal) => refusal.into_response(),
            },
            Err(refusal) => refusal.into_response(),
        }
    }
}

/// The control API's routes; requests go to whoever holds the receiver of `tx`.
pub fn router(broker_count: i32, tx: mpsc::Sender<ControlRequest>) -> Router {
    Router::new()
        .route("/", get(describe))
        .route("/brokers/{broker}/down", post(down))
        .route("/brokers/{broker}/up", post(up))
        .route("/brokers/{broker}/rtt", post(rtt))
        .route("/errors", post(errors))
        .route("/errors/{api}", delete(clear_errors))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Handle { broker_count, tx })
}

async fn describe(State(h): State<Handle>) -> Response {
    match h.call(None).await {
        Ok((_, cluster)) => Json(cluster).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn down(State(h): State<Handle>, Path(broker): Path<String>, body: Bytes) -> Response {
    h.act(down_request(&broker, &body, h.broker_count)).await
}

async fn up(State(h): State<Handle>, Path(broker): Path<String>, body: Bytes) -> Response {
    h.act(up_request(&broker, &body, h.broker_count)).await
}

async fn rtt(State(h): State<Handle>, Path(broker): Path<String>, body: Bytes) -> Response {
    h.act(rtt_request(&broker, &body, h.broker_count)).await
}

async fn errors(State(h): State<Handle>, body: Bytes) -> Response {
    h.act(errors_request(&body)).await
}

async fn clear_errors(State(h): State<Handle>, Path(api): Path<String>) -> Response {
    h.act(clear_errors_request(&api)).await
}

async fn not_found(method: Method, uri: Uri) -> Refusal {
    Refusal::not_found(format!(
        "no endpoint {method} {}: see GET / and the README",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Refusal {
    Refusal {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{method} is not allowed on {}", uri.path()),
    }
}

#[cfg(test)]
mod tests;
