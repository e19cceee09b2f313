//! Real HTTP servers on loopback for the portal's tests: a REST API and an OAuth2 token
//! endpoint, each recording what it saw; and helpers to run a portal and a client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use clustera_send::client::Client;
use clustera_send::config::{PortalConfig, Wire};
use clustera_send::portal::Portal;

/// What the API saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
pub struct ApiState {
    pub seen: Mutex<Vec<Seen>>,
    /// Tokens the API accepts; `None` accepts requests without a token.
    pub accepted: Mutex<Option<HashSet<String>>>,
    pub internal_hits: AtomicU64,
    pub internal_url: Mutex<String>,
}

pub struct Api {
    pub url: String,
    pub state: Arc<ApiState>,
}

fn record(
    state: &ApiState,
    method: &str,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), StatusCode> {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let auth = headers.get("authorization").cloned();
    state.seen.lock().unwrap().push(Seen {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
    });
    if let Some(accepted) = state.accepted.lock().unwrap().as_ref() {
        let token = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
        if !token.is_some_and(|t| accepted.contains(t)) {
            return Err(StatusCode::UNAUTHORIZED);
        }
    }
    Ok(())
}

/// Deterministic bytes for generated bodies.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

impl Api {
    pub async fn start() -> Self {
        let state = Arc::new(ApiState::default());
        let app = Router::new()
            .route(
                "/api/v1/echo",
                post(|State(s): State<Arc<ApiState>>, h: HeaderMap, body: Bytes| async move {
                    if let Err(r) = record(&s, "POST", "/api/v1/echo", &h) {
                        return r.into_response();
                    }
                    (
                        [
                            ("content-type", "application/octet-stream"),
                            ("x-echo", "yes"),
                            ("set-cookie", "session=secret"),
                        ],
                        body,
                    )
                        .into_response()
                }),
            )
            .route(
                "/api/v1/upload",
                post(|State(s): State<Arc<ApiState>>, h: HeaderMap, body: Bytes| async move {
                    if let Err(r) = record(&s, "POST", "/api/v1/upload", &h) {
                        return r.into_response();
                    }
                    use sha2::Digest;
                    let sha = hex::encode(sha2::Sha256::digest(&body));
                    axum::Json(serde_json::json!({"size": body.len(), "sha256": sha})).into_response()
                }),
            )
            .route(
                // Refuses a token before reading any of the body (the portal may still be
                // sending it), and answers with the size and SHA-256 of what it received.
                "/api/v1/strict-upload",
                post(|State(s): State<Arc<ApiState>>, request: axum::extract::Request| async move {
                    let (parts, body) = request.into_parts();
                    if let Err(r) = record(&s, "POST", "/api/v1/strict-upload", &parts.headers) {
                        return r.into_response();
                    }
                    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                    use sha2::Digest;
                    let sha = hex::encode(sha2::Sha256::digest(&body));
                    axum::Json(serde_json::json!({"size": body.len(), "sha256": sha})).into_response()
                }),
            )
            .route(
                // Answers 401 whatever the token.
                "/api/v1/unauthorized",
                get(|State(s): State<Arc<ApiState>>, h: HeaderMap| async move {
                    let _ = record(&s, "GET", "/api/v1/unauthorized", &h);
                    StatusCode::UNAUTHORIZED.into_response()
                }),
            )
            .route(
                "/api/v1/blob/{n}",
                get(|State(s): State<Arc<ApiState>>, h: HeaderMap, Path(n): Path<usize>| async move {
                    if let Err(r) = record(&s, "GET", "/api/v1/blob", &h) {
                        return r.into_response();
                    }
                    bytes(n, n as u64).into_response()
                }),
            )
            .route(
                "/api/v1/documents/{id}",
                get(|State(s): State<Arc<ApiState>>, h: HeaderMap, Path(id): Path<String>| async move {
                    if let Err(r) = record(&s, "GET", &format!("/api/v1/documents/{id}"), &h) {
                        return r.into_response();
                    }
                    axum::Json(serde_json::json!({"id": id})).into_response()
                }),
            )
            .route(
                "/api/v1/slow",
                get(|State(s): State<Arc<ApiState>>, h: HeaderMap| async move {
                    if let Err(r) = record(&s, "GET", "/api/v1/slow", &h) {
                        return r.into_response();
                    }
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "late".into_response()
                }),
            )
            .route(
                "/api/v1/redirect",
                get(|State(s): State<Arc<ApiState>>, h: HeaderMap| async move {
                    if let Err(r) = record(&s, "GET", "/api/v1/redirect", &h) {
                        return r.into_response();
                    }
                    let to = s.internal_url.lock().unwrap().clone();
                    (StatusCode::FOUND, [("location", to)]).into_response()
                }),
            )
            .route(
                "/internal/secret",
                get(|State(s): State<Arc<ApiState>>| async move {
                    s.internal_hits.fetch_add(1, Ordering::SeqCst);
                    "secret"
                }),
            )
            .layer(DefaultBodyLimit::disable())
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        *state.internal_url.lock().unwrap() = format!("http://{addr}/internal/secret");
        Self {
            url: format!("http://{addr}"),
            state,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

/// An upload API on a bare socket that answers 401 to a refused token *before* reading the
/// request body, then reads the rest of it (so the client sees the 401 while still sending),
/// and otherwise answers `{"size", "sha256"}` of the body it received. The request line and
/// headers are recorded in `state.seen`. Bare because an HTTP framework closes the connection
/// on an unread body, which the client may see as an error rather than the 401.
pub struct EarlyRefusalApi {
    pub url: String,
    pub state: Arc<ApiState>,
}

impl EarlyRefusalApi {
    pub async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ApiState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let state = shared.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut piece = vec![0u8; 64 * 1024];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match socket.read(&mut piece).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&piece[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let mut lines = head.split("\r\n");
                    let line = lines.next().unwrap_or_default().to_owned();
                    let mut headers = HeaderMap::new();
                    for l in lines {
                        if let Some((k, v)) = l.split_once(':') {
                            if let (Ok(k), Ok(v)) = (
                                axum::http::HeaderName::from_bytes(k.trim().as_bytes()),
                                axum::http::HeaderValue::from_str(v.trim()),
                            ) {
                                headers.insert(k, v);
                            }
                        }
                    }
                    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                    let refused = record(&state, "POST", &path, &headers).is_err();
                    if refused {
                        let _ = socket
                            .write_all(
                                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\
                                  Connection: close\r\n\r\n",
                            )
                            .await;
                    }
                    // The body: as long as Content-Length says, or chunked to its last chunk.
                    let length: Option<usize> = headers
                        .get("content-length")
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                    let mut body = buf[head_end..].to_vec();
                    let complete = |b: &[u8]| match length {
                        Some(n) => b.len() >= n,
                        None => b.ends_with(b"\r\n0\r\n\r\n") || b == b"0\r\n\r\n",
                    };
                    while !complete(&body) {
                        match socket.read(&mut piece).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => body.extend_from_slice(&piece[..n]),
                        }
                    }
                    if refused {
                        return;
                    }
                    let body = if length.is_some() {
                        body
                    } else {
                        dechunk(&body)
                    };
                    use sha2::Digest;
                    let json = serde_json::json!({
                        "size": body.len(),
                        "sha256": hex::encode(sha2::Sha256::digest(&body)),
                    })
                    .to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
                        json.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self {
            url: format!("http://{addr}"),
            state,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

/// The bytes of a complete chunked body.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// An OAuth2 token endpoint (client credentials, HTTP Basic), issuing `token-1`, `token-2`…
pub struct TokenServer {
    pub url: String,
    pub issued: Arc<AtomicU64>,
    pub expires_in: Arc<AtomicU64>,
}

impl TokenServer {
    pub async fn start(api: &Api) -> Self {
        Self::start_for(api.state.clone()).await
    }

    /// A token endpoint whose tokens the API with `api_state` accepts.
    pub async fn start_for(api_state: Arc<ApiState>) -> Self {
        let issued = Arc::new(AtomicU64::new(0));
        let expires_in = Arc::new(AtomicU64::new(3600));
        *api_state.accepted.lock().unwrap() = Some(HashSet::new());
        let (i, e) = (issued.clone(), expires_in.clone());
        let app = Router::new().route(
            "/oauth/token",
            post(move |h: HeaderMap, body: String| {
                let (i, e, api_state) = (i.clone(), e.clone(), api_state.clone());
                async move {
                    use base64::Engine as _;
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode("portal-client:s3cret")
                    );
                    if h.get("authorization").and_then(|v| v.to_str().ok())
                        != Some(expected.as_str())
                        || !body.contains("grant_type=client_credentials")
                    {
                        return (StatusCode::UNAUTHORIZED, "bad client").into_response();
                    }
                    let n = i.fetch_add(1, Ordering::SeqCst) + 1;
                    let token = format!("token-{n}");
                    api_state
                        .accepted
                        .lock()
                        .unwrap()
                        .get_or_insert_with(HashSet::new)
                        .insert(token.clone());
                    axum::Json(serde_json::json!({
                        "access_token": token,
                        "token_type": "Bearer",
                        "expires_in": e.load(Ordering::SeqCst),
                    }))
                    .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}/oauth/token"),
            issued,
            expires_in,
        }
    }
}

pub const REQUESTS: &str = "kafkasend-requests";
pub const RESPONSES: &str = "kafkasend-responses";

/// A running portal.
pub struct RunningPortal {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningPortal {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

impl Drop for RunningPortal {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a portal for `api` on `bootstrap` with these extra variables.
pub async fn portal(bootstrap: &str, api: &Api, vars: &[(&str, &str)]) -> RunningPortal {
    portal_at(bootstrap, &format!("{}/api", api.url), vars).await
}

/// Starts a portal for the API at `base_url` on `bootstrap` with these extra variables.
pub async fn portal_at(bootstrap: &str, base_url: &str, vars: &[(&str, &str)]) -> RunningPortal {
    let mut map: HashMap<String, String> = HashMap::from([
        ("PORTAL_API_BASE_URL".to_owned(), base_url.to_owned()),
        (
            "PORTAL_ALLOWED_ENDPOINTS".to_owned(),
            "/v1/echo,/v1/upload,/v1/strict-upload,/v1/unauthorized,/v1/blob/*,/v1/documents/*,/v1/slow,/v1/redirect"
                .to_owned(),
        ),
        (
            "PORTAL_ALLOWED_HEADERS".to_owned(),
            "Content-Type,X-Request-ID,Authorization,Cookie".to_owned(),
        ),
    ]);
    for (k, v) in vars {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = PortalConfig::from_vars(&|k| map.get(k).cloned()).unwrap();
    let mut kafka = clustera::Config::for_brokers("kafkasend-portal", bootstrap, &[REQUESTS]);
    if let Some(addr) = map.get("CLUSTERA_HTTP_ADDR") {
        kafka.runtime.http_addr = Some(addr.parse().unwrap());
    }
    // KIP-848: a portal started after another stopped gets its partitions at once.
    if let Some(protocol) = map.get("KAFKA_GROUP_PROTOCOL") {
        kafka.properties.insert(
            "group.protocol".into(),
            clustera::config::Secret::new(protocol.as_str()),
        );
    }
    // The mock broker does not wake waiting fetches; keep its polling tight.
    kafka.properties.insert(
        "fetch.wait.max.ms".into(),
        clustera::config::Secret::new("10"),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        Portal::run(config, kafka, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    RunningPortal {
        stop: Some(stop),
        task: Some(task),
    }
}

/// An HTTP API on loopback that records each request line exactly as it arrived (bytes up to
/// the first CR LF) and answers `200 ok`. Written on a bare socket on purpose: an HTTP
/// framework would parse and normalise the request target before a handler could see it.
pub struct RawApi {
    pub url: String,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl RawApi {
    pub async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let recorded = lines.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut piece = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match socket.read(&mut piece).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&piece[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let line = head.split("\r\n").next().unwrap_or_default().to_owned();
                    recorded.lock().unwrap().push(line);
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = buf.len() - head_end;
                    while body < length {
                        match socket.read(&mut piece).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => body += n,
                        }
                    }
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                              Content-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        Self {
            url: format!("http://{addr}"),
            lines,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// A free loopback address for a portal's `/metrics`.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The wire settings a test's clients use (`chunk_size` bytes per chunk).
pub fn wire(chunk_size: u32) -> Wire {
    let size = chunk_size.to_string();
    Wire::from_vars(&|k| (k == "KAFKASEND_CHUNK_SIZE").then(|| size.clone())).unwrap()
}

/// A client on `bootstrap`.
pub async fn client(bootstrap: &str, chunk_size: u32) -> Client {
    let kafka = clustera::Config::for_brokers("kafkasend-test-client", bootstrap, &[]);
    let wire = wire(chunk_size);
    tokio::task::spawn_blocking(move || Client::connect(&kafka, wire))
        .await
        .unwrap()
        .unwrap()
}

/// A one-broker mock cluster with the KafkaSend topics.
pub fn mock() -> (clustera::testing::MockBroker, String) {
    let broker = clustera::testing::MockBroker::start(1).unwrap();
    broker.create_topic(REQUESTS, 3).unwrap();
    broker.create_topic(RESPONSES, 3).unwrap();
    broker.create_topic(&format!("{REQUESTS}.dlq"), 1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    (broker, bootstrap)
}
