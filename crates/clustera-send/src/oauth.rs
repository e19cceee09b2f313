//! OAuth2 client credentials. The token is cached until shortly before it expires; one
//! request at a time refreshes it (the others wait for its result); a 401 from the API drops
//! it so the next call fetches a new one.

use std::time::{Duration, Instant};

use clustera::config::Secret;
use serde::Deserialize;
use url::Url;

/// Where and how to get tokens: `OAUTH2_TOKEN_URL`, `OAUTH2_CLIENT_ID`,
/// `OAUTH2_CLIENT_SECRET`, `OAUTH2_SCOPE`.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// The token endpoint.
    pub token_url: Url,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// The scope asked for, if any.
    pub scope: Option<String>,
}

/// The token endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// No answer.
    #[error("token endpoint unreachable: {0}")]
    Http(#[from] reqwest::Error),
    /// An answer that is not a token.
    #[error("token endpoint answered {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The start of its body.
        body: String,
    },
}

impl OAuthError {
    /// What a client may be told: nothing of the token endpoint's address or answer (those
    /// are logged).
    pub fn public_message(&self) -> String {
        match self {
            Self::Http(_) => "the token endpoint could not be reached".to_owned(),
            Self::Refused { status, .. } => {
                format!("the token endpoint refused to issue a token (HTTP {status})")
            }
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct Cached {
    value: String,
    refresh_at: Instant,
}

/// Tokens for the REST API calls.
pub struct TokenSource {
    config: Option<OAuthConfig>,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenSource {
    /// Tokens from `config`, or none at all without one; `roots` are extra trusted CA
    /// certificates.
    pub fn new(
        config: Option<OAuthConfig>,
        roots: &[reqwest::Certificate],
    ) -> Result<Self, OAuthError> {
        // The token endpoint is the operator's; still, no redirects and no proxies.
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(30));
        for root in roots {
            http = http.add_root_certificate(root.clone());
        }
        let http = http.build()?;
        Ok(Self {
            config,
            http,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether calls carry a token.
    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// The current token (`None` without OAuth2), fetching one if needed.
    pub async fn token(&self) -> Result<Option<String>, OAuthError> {
        let Some(config) = &self.config else {
            return Ok(None);
        };
        // Held across the fetch: concurrent callers wait for one refresh.
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(Some(c.value.clone()));
            }
        }
        let fresh = self.fetch(config).await?;
        let value = fresh.value.clone();
        *cache = Some(fresh);
        Ok(Some(value))
    }

    /// Forgets `rejected` (the API answered 401 to it), unless it was already replaced.
    pub async fn invalidate(&self, rejected: &str) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| c.value == rejected) {
            *cache = None;
        }
    }

    async fn fetch(&self, config: &OAuthConfig) -> Result<Cached, OAuthError> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &config.scope {
            form.push(("scope", scope));
        }
        let started = Instant::now();
        let response = self
            .http
            .post(config.token_url.clone())
            .basic_auth(&config.client_id, Some(config.client_secret.expose()))
            .form(&form)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        let token: TokenResponse = match serde_json::from_slice(&body) {
            Ok(t) if status.is_success() => t,
            _ => {
                return Err(OAuthError::Refused {
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                })
            }
        };
        // Refresh a little early: a tenth of the lifetime, at most a minute.
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(300));
        let margin = (lifetime / 10).min(Duration::from_secs(60));
        tracing::debug!(expires_in_s = lifetime.as_secs(), "fetched an OAuth2 token");
        Ok(Cached {
            value: token.access_token,
            refresh_at: started + lifetime - margin,
        })
    }
}
