//! OAuth2 client credentials. The token is cached until shortly before it expires; one
//! request at a time refreshes it (the others wait for its result).
//!
//! A 401 from the API refreshes the token **at most once per token generation**: the first
//! call refused with generation `g` marks it stale and retries with the next token (one fetch,
//! whoever asks first); calls refused with a generation already replaced just retry with the
//! current one. When the fresh token is refused too, the API is refusing something other
//! than the token (an endpoint that always answers 401): that generation is not refreshed on
//! a 401 again, so such an endpoint cannot make the portal fetch a token per job; it is
//! replaced when it expires. Expiry arithmetic saturates: an `expires_in` of any size is
//! cached at most [`MAX_LIFETIME`].

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

/// When to refresh a token fetched at `started` that expires in `expires_in` seconds (300 if
/// not said): a little early (a tenth of the lifetime, at most a minute), never later than
/// [`MAX_LIFETIME`], and without overflow whatever the number.
fn refresh_at(started: Instant, expires_in: Option<u64>) -> Instant {
    let lifetime = Duration::from_secs(expires_in.unwrap_or(300)).min(MAX_LIFETIME);
    let margin = (lifetime / 10).min(Duration::from_secs(60));
    tracing::debug!(expires_in_s = lifetime.as_secs(), "fetched an OAuth2 token");
    started
        .checked_add(lifetime.saturating_sub(margin))
        .unwrap_or(started)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The longest a token is used without fetching a new one, whatever its `expires_in`.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A token and its generation (1 for the first fetched, then 2, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The bearer token.
    pub value: String,
    /// Which fetch it came from.
    pub generation: u64,
}

struct Cached {
    token: Token,
    refresh_at: Instant,
    /// A 401 asked for its replacement.
    stale: bool,
    /// A call refused with it right after it replaced a refused one: 401s no longer refresh
    /// this generation.
    exhausted: bool,
}

#[derive(Default)]
struct Cache {
    current: Option<Cached>,
    generations: u64,
}

/// Tokens for the REST API calls.
pub struct TokenSource {
    config: Option<OAuthConfig>,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Cache>,
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
            cache: tokio::sync::Mutex::new(Cache::default()),
        })
    }

    /// Whether calls carry a token.
    pub fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// The current token (`None` without OAuth2), fetching one if needed.
    pub async fn token(&self) -> Result<Option<Token>, OAuthError> {
        let Some(config) = &self.config else {
            return Ok(None);
        };
        // Held across the fetch: concurrent callers wait for one refresh.
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.current.as_ref() {
            if !c.stale && Instant::now() < c.refresh_at {
                return Ok(Some(c.token.clone()));
            }
        }
        let (value, refresh_at) = self.fetch(config).await?;
        cache.generations += 1;
        let token = Token {
            value,
            generation: cache.generations,
        };
        cache.current = Some(Cached {
            token: token.clone(),
            refresh_at,
            stale: false,
            exhausted: false,
        });
        Ok(Some(token))
    }

    /// The API answered 401 to a call made with `token`; `retry` says whether that call was
    /// already the retry after a 401. Returns whether to call once more (with
    /// [`TokenSource::token`], which fetches a new token if this one was marked stale).
    pub async fn unauthorized(&self, token: &Token, retry: bool) -> bool {
        let mut cache = self.cache.lock().await;
        let Some(current) = cache.current.as_mut() else {
            return !retry;
        };
        if current.token.generation != token.generation {
            // Already replaced: a first attempt retries with the newer token.
            return !retry;
        }
        if retry {
            current.exhausted = true;
            return false;
        }
        if current.exhausted {
            return false;
        }
        current.stale = true;
        true
    }

    /// A new token and when to refresh it.
    async fn fetch(&self, config: &OAuthConfig) -> Result<(String, Instant), OAuthError> {
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
        Ok((token.access_token, refresh_at(started, token.expires_in)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_saturates_and_refreshes_early() {
        let now = Instant::now();
        assert_eq!(
            refresh_at(now, Some(u64::MAX)),
            now + MAX_LIFETIME - Duration::from_secs(60)
        );
        assert_eq!(refresh_at(now, Some(100)), now + Duration::from_secs(90));
        assert_eq!(refresh_at(now, Some(0)), now);
        assert_eq!(refresh_at(now, None), now + Duration::from_secs(270));
    }
}
