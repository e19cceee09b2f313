//! An in-memory Schema Registry on loopback, for tests and the examples (feature `testing`).
//!
//! It serves the REST calls that Clustera's client and confluent-kafka's Python client use
//! (register, look up, fetch by id, latest version, list subjects), stores schemas as the API
//! specifies (one global id per distinct schema, versions per subject), checks Avro schemas
//! for BACKWARD compatibility with the subject's latest version (the registry's default
//! level; 409 when a new schema cannot read the previous one), and can require basic auth.
//! It is a test double for the registry's HTTP contract, not a registry to deploy: nothing is
//! persisted, and JSON Schemas are not compatibility-checked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::registry::SchemaType;
use crate::SchemaId;

#[derive(Default)]
struct Store {
    /// Index `i` holds schema id `i + 1`.
    schemas: Vec<(SchemaType, String)>,
    subjects: HashMap<String, Vec<SchemaId>>,
}

struct Shared {
    store: Mutex<Store>,
    requests: AtomicU64,
    auth: Option<String>,
    down: AtomicBool,
}

/// A running registry; it stops when dropped.
pub struct TestRegistry {
    url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TestRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistry")
            .field("url", &self.url)
            .finish()
    }
}

impl TestRegistry {
    /// Starts a registry on a free loopback port, on its own thread (usable from synchronous
    /// and asynchronous code alike).
    pub fn start() -> std::io::Result<Self> {
        Self::start_inner(None)
    }

    /// Starts a registry that answers 401 unless the request carries these basic-auth
    /// credentials.
    pub fn start_with_basic_auth(user: &str, password: &str) -> std::io::Result<Self> {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Self::start_inner(Some(format!("Basic {token}")))
    }

    fn start_inner(auth: Option<String>) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr: SocketAddr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            requests: AtomicU64::new(0),
            auth,
            down: AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(shared.clone());
        let thread = std::thread::Builder::new()
            .name("test-registry".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(Self {
            url: format!("http://{addr}"),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The base URL, for `SCHEMA_REGISTRY_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many requests it has answered (to check a client's cache).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// While `true`, every request is answered 503, as a registry whose backing store (or
    /// the proxy in front of it) is down.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// The ids registered under `subject`, oldest version first.
    pub fn versions(&self, subject: &str) -> Vec<SchemaId> {
        lock(&self.shared)
            .subjects
            .get(subject)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Store> {
    shared.store.lock().unwrap_or_else(|p| p.into_inner())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}/versions", post(register))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions/latest", get(latest))
        .route("/schemas/ids/{id}", get(by_id))
        .with_state(shared)
}

type Shown = State<Arc<Shared>>;

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            "application/vnd.schemaregistry.v1+json",
        )],
        body.to_string(),
    )
        .into_response()
}

fn refuse(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    answer(
        status,
        json!({"error_code": code, "message": message.into()}),
    )
}

/// Counts the request and checks credentials; `Some` is the refusal to send.
fn admit(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if shared.down.load(Ordering::SeqCst) {
        return Some(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            50003,
            "Error while forwarding the request to the leader",
        ));
    }
    let expected = shared.auth.as_deref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given == Some(expected) {
        None
    } else {
        Some(refuse(StatusCode::UNAUTHORIZED, 401, "Unauthorized"))
    }
}

/// The schema of a register or lookup body, checked as the registry does; `Err` is the
/// message of a 422.
fn schema_of(body: &[u8]) -> Result<(SchemaType, String), String> {
    let invalid = |m: String| m;
    let v: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("body is not JSON: {e}")))?;
    let text = v
        .get("schema")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("no \"schema\" string".into()))?
        .to_owned();
    let schema_type = match v
        .get("schemaType")
        .and_then(Value::as_str)
        .unwrap_or("AVRO")
    {
        "AVRO" => SchemaType::Avro,
        "JSON" => SchemaType::Json,
        other => return Err(invalid(format!("schema type {other} is not served here"))),
    };
    if let Some(refs) = v.get("references").and_then(Value::as_array) {
        if !refs.is_empty() {
            return Err(invalid("schema references are not served here".into()));
        }
    }
    match schema_type {
        SchemaType::Avro => {
            Schema::parse_str(&text).map_err(|e| invalid(format!("Invalid schema: {e}")))?;
        }
        SchemaType::Json => {
            crate::JsonSchema::parse(&text).map_err(|e| invalid(format!("Invalid schema: {e}")))?;
        }
    }
    Ok((schema_type, text))
}

/// Schemas are the same when their canonical forms are (Avro) or their JSON values are.
fn same(a: &(SchemaType, String), b: &(SchemaType, String)) -> bool {
    if a.0 != b.0 {
        return false;
    }
    match a.0 {
        SchemaType::Avro => match (Schema::parse_str(&a.1), Schema::parse_str(&b.1)) {
            (Ok(x), Ok(y)) => x.canonical_form() == y.canonical_form(),
            _ => a.1 == b.1,
        },
        SchemaType::Json => {
            serde_json::from_str::<Value>(&a.1).ok() == serde_json::from_str::<Value>(&b.1).ok()
        }
    }
}

fn with_type(mut body: Value, schema_type: SchemaType) -> Value {
    if schema_type == SchemaType::Json {
        body["schemaType"] = json!("JSON");
    }
    body
}

async fn list_subjects(State(shared): Shown, headers: HeaderMap) -> Response {
    if let Some(refusal) = admit(&shared, &headers) {
        return refusal;
    }
    let mut names: Vec<String> = lock(&shared).subjects.keys().cloned().collect();
    names.sort();
    answer(StatusCode::OK, json!(names))
}

async fn register(
    State(shared): Shown,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = admit(&shared, &headers) {
        return refusal;
    }
    let candidate = match schema_of(&body) {
        Ok(s) => s,
        Err(message) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, 42201, message),
    };
    let mut store = lock(&shared);
    let versions = store.subjects.get(&subject).cloned().unwrap_or_default();
    if let Some(id) = versions
        .iter()
        .find(|id| same(&store.schemas[(**id - 1) as usize], &candidate))
    {
        return answer(StatusCode::OK, json!({"id": id}));
    }
    if let Some(latest) = versions.last() {
        let previous = &store.schemas[(*latest - 1) as usize];
        if previous.0 != candidate.0 {
            return refuse(
                StatusCode::CONFLICT,
                409,
                "Schema being registered is incompatible with an earlier schema: different schema type",
            );
        }
        if candidate.0 == SchemaType::Avro {
            if let (Ok(old), Ok(new)) = (
                Schema::parse_str(&previous.1),
                Schema::parse_str(&candidate.1),
            ) {
                if let Err(e) = SchemaCompatibility::can_read(&old, &new) {
                    return refuse(
                        StatusCode::CONFLICT,
                        409,
                        format!(
                            "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" (BACKWARD): {e}"
                        ),
                    );
                }
            }
        }
    }
    let id = match store.schemas.iter().position(|s| same(s, &candidate)) {
        Some(i) => i as SchemaId + 1,
        None => {
            store.schemas.push(candidate);
            store.schemas.len() as SchemaId
        }
    };
    store.subjects.entry(subject).or_default().push(id);
    answer(StatusCode::OK, json!({"id": id}))
}

async fn lookup(
    State(shared): Shown,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = admit(&shared, &headers) {
        return refusal;
    }
    let candidate = match schema_of(&body) {
        Ok(s) => s,
        Err(message) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, 42201, message),
    };
    let store = lock(&shared);
    let Some(versions) = store.subjects.get(&subject) else {
        return refuse(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        );
    };
    match versions
        .iter()
        .enumerate()
        .find(|(_, id)| same(&store.schemas[(**id - 1) as usize], &candidate))
    {
        Some((i, id)) => {
            let (schema_type, text) = &store.schemas[(*id - 1) as usize];
            answer(
                StatusCode::OK,
                with_type(
                    json!({"subject": subject, "id": id, "version": i + 1, "schema": text}),
                    *schema_type,
                ),
            )
        }
        None => refuse(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn latest(State(shared): Shown, Path(subject): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refusal) = admit(&shared, &headers) {
        return refusal;
    }
    let store = lock(&shared);
    let Some((version, id)) = store
        .subjects
        .get(&subject)
        .and_then(|v| v.last().map(|id| (v.len(), *id)))
    else {
        return refuse(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        );
    };
    let (schema_type, text) = &store.schemas[(id - 1) as usize];
    answer(
        StatusCode::OK,
        with_type(
            json!({"subject": subject, "id": id, "version": version, "schema": text}),
            *schema_type,
        ),
    )
}

async fn by_id(State(shared): Shown, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refusal) = admit(&shared, &headers) {
        return refusal;
    }
    let store = lock(&shared);
    let found = id
        .parse::<SchemaId>()
        .ok()
        .and_then(|id| id.checked_sub(1))
        .and_then(|i| store.schemas.get(i as usize));
    match found {
        Some((schema_type, text)) => answer(
            StatusCode::OK,
            with_type(json!({"schema": text}), *schema_type),
        ),
        None => refuse(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}
