//! SSRF protection. It cannot be disabled, and it judges parsed URLs and resolved addresses,
//! never raw strings.
//!
//! A client names only an endpoint: a path (and query) under the operator's configured API
//! base URL. [`Guard::endpoint_url`] accepts only its canonical form ([`crate::path`]: no
//! absolute or scheme-relative URL, no dot segment however encoded, no separator, escape or
//! character a server could read otherwise), appended to the base path. The
//! configured target itself is trusted (it may be a loopback sidecar). Any other host, should
//! one ever reach the HTTP client, is resolved by [`GuardedResolver`] and refused if any of
//! its addresses is internal ([`forbidden`]); the client connects only to the addresses that
//! were checked, so a second DNS answer cannot rebind it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use url::{Host, Url};

use crate::path::{Endpoint, PathError, PathRules};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// The endpoint is not a canonical path ([`crate::path`]).
    #[error(transparent)]
    Path(#[from] PathError),
    /// The resulting URL would leave the configured API (another host, port, scheme or base
    /// path, or a path the URL parser changed). The URL itself is logged, not returned: it
    /// names the internal API.
    #[error("endpoint {0:?} does not stay under the configured API")]
    OutsideTarget(String),
    /// The URL carries a user name or password.
    #[error("URL {0} carries userinfo")]
    Userinfo(String),
    /// A host name that always means something internal.
    #[error("host {0:?} is an internal name")]
    InternalName(String),
    /// An address that is internal.
    #[error("host {host:?} is {address} ({class} address)")]
    ForbiddenAddress {
        /// The host as written.
        host: String,
        /// The address it is or resolved to.
        address: IpAddr,
        /// Which kind of internal address.
        class: &'static str,
    },
    /// The host could not be resolved.
    #[error("host {host:?} could not be resolved: {error}")]
    Unresolvable {
        /// The host.
        host: String,
        /// The resolver's error.
        error: String,
    },
}

/// The kind of internal address `ip` is, or `None` for a public unicast address.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata",
        (0, _, _) => "unspecified (this network)",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "carrier-grade NAT",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some("cloud metadata");
    }
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback",
        // Forms that embed an IPv4 address reach IPv4 hosts, whatever the address.
        [0, 0, 0, 0, 0, 0xffff, _, _] => "IPv4-mapped",
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible",
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 1, ..] => "NAT64",
        [0x2002, ..] => "6to4",
        [0x2001, 0, ..] => "Teredo",
        [0x2001, 0xdb8, ..] => "documentation",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique local (private)",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// Names that always mean the local machine or a cloud's metadata service.
fn internal_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "metadata.google.internal"
        || host == "metadata.goog"
        || host == "metadata"
        || host == "instance-data"
        || host.ends_with(".internal")
}

/// Resolves host names; the test suite substitutes one that answers what it is told.
pub trait Resolve: Send + Sync {
    /// The addresses of `host`.
    fn resolve(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The system's resolver (`getaddrinfo` through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let host = format!("{host}:0");
        Box::pin(async move {
            Ok(tokio::net::lookup_host(host)
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// Validates what clients send against the configured API.
#[derive(Clone)]
pub struct Guard {
    target: Url,
    resolver: Arc<dyn Resolve>,
    rules: PathRules,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("target", &self.target.as_str())
            .finish()
    }
}

impl Guard {
    /// A guard for the API at `target` (the operator's `PORTAL_API_BASE_URL`).
    pub fn new(target: Url, resolver: Arc<dyn Resolve>) -> Self {
        Self {
            target,
            resolver,
            rules: PathRules::default(),
        }
    }

    /// The same guard with `rules` for endpoints (non-ASCII, length).
    pub fn with_rules(mut self, rules: PathRules) -> Self {
        self.rules = rules;
        self
    }

    /// The configured API.
    pub fn target(&self) -> &Url {
        &self.target
    }

    /// The URL to call for a client's `endpoint`, or why it may not be called: the endpoint
    /// is parsed into its canonical form ([`Endpoint`]), appended to the base path, and the
    /// resulting URL must have exactly that path and query, and the base's scheme, host and
    /// port.
    pub fn endpoint_url(&self, endpoint: &str) -> Result<Url, SsrfError> {
        let parsed = Endpoint::parse(endpoint, &self.rules)?;
        let base_path = self.target.path().trim_end_matches('/');
        let path = match parsed.path().as_str() {
            "/" if !base_path.is_empty() => base_path.to_owned(),
            p => format!("{base_path}{p}"),
        };
        let query = parsed.query();
        let mut url = self.target.clone();
        url.set_path(&path);
        url.set_query(query.as_deref());
        url.set_fragment(None);
        let outside = || {
            tracing::warn!(endpoint, url = %url, "endpoint refused: it does not stay under the API");
            SsrfError::OutsideTarget(endpoint.chars().take(120).collect())
        };
        // Defence in depth: the canonical form is one the URL parser keeps as it is.
        if url.path() != path
            || url.query() != query.as_deref()
            || url.scheme() != self.target.scheme()
            || url.host() != self.target.host()
            || url.port_or_known_default() != self.target.port_or_known_default()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(outside());
        }
        Ok(url)
    }

    /// The endpoint path of `url` under the base path, as allow-lists see it.
    pub fn relative_path<'a>(&self, url: &'a Url) -> &'a str {
        let base_path = self.target.path().trim_end_matches('/');
        let rest = url.path().strip_prefix(base_path).unwrap_or(url.path());
        if rest.is_empty() {
            "/"
        } else {
            rest
        }
    }

    /// The addresses `host` may be reached at: the configured target's, unchecked (it is
    /// trusted); any other host's only if every address is public.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, SsrfError> {
        let trusted = self
            .target
            .host_str()
            .is_some_and(|t| t.eq_ignore_ascii_case(host));
        let parsed = Host::parse(host).map_err(|e| SsrfError::Unresolvable {
            host: host.to_owned(),
            error: e.to_string(),
        })?;
        let addresses = match parsed {
            Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
            Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
            Host::Domain(name) => {
                if !trusted && internal_name(&name) {
                    return Err(SsrfError::InternalName(host.to_owned()));
                }
                self.resolver
                    .resolve(&name)
                    .await
                    .map_err(|e| SsrfError::Unresolvable {
                        host: host.to_owned(),
                        error: e.to_string(),
                    })?
            }
        };
        if addresses.is_empty() {
            return Err(SsrfError::Unresolvable {
                host: host.to_owned(),
                error: "no addresses".to_owned(),
            });
        }
        if !trusted {
            for &address in &addresses {
                if let Some(class) = forbidden(address) {
                    return Err(SsrfError::ForbiddenAddress {
                        host: host.to_owned(),
                        address,
                        class,
                    });
                }
            }
        }
        Ok(addresses)
    }

    /// Checks an absolute URL a client influenced (for example a redirect's `Location`):
    /// userinfo, then every address its host resolves to.
    pub async fn check_url(&self, url: &Url) -> Result<Vec<IpAddr>, SsrfError> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SsrfError::Userinfo(url.to_string()));
        }
        let host = url.host_str().ok_or_else(|| SsrfError::Unresolvable {
            host: String::new(),
            error: format!("{url} has no host"),
        })?;
        // A bracketed IPv6 host is given without its brackets to the parser.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        self.addresses(&host).await
    }
}

/// reqwest's resolver, through the guard: the HTTP client connects only to addresses the
/// guard returned, so a name cannot resolve to something else between check and connect.
pub struct GuardedResolver(pub Guard);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = guard
                .addresses(&host)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let addrs: reqwest::dns::Addrs =
                Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
