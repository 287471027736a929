//! `jwksUri` keys: fetched over HTTP or HTTPS (system roots; a Service host name is
//! resolved from the mesh configuration to a ready endpoint, anything else by DNS;
//! the fetch goes straight to that address, not through HBONE) when a rule first needs
//! them, refreshed every `--jwks-refresh-secs`, and kept when a refresh fails, so a
//! key server outage never turns valid tokens into 401s (nor revokes a key early).
//! Until a first fetch succeeds, tokens for that issuer are refused (401), never passed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::keys::KeySet;

/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Istio refreshes remote keys every 20 minutes (`PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(20 * 60);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{uri}` is not a URL this proxy can fetch: {message}")]
    Uri { uri: String, message: String },
    #[error("GET {uri}: cannot resolve or connect: {message}")]
    Connect { uri: String, message: String },
    #[error("GET {uri}: TLS: {message}")]
    Tls { uri: String, message: String },
    #[error("GET {uri}: {message}")]
    Request { uri: String, message: String },
    #[error("GET {uri}: status {status}")]
    Status { uri: String, status: u16 },
    #[error("GET {uri}: no answer within {timeout:?}")]
    Timeout { uri: String, timeout: Duration },
    #[error("GET {uri}: body: {message}")]
    Body { uri: String, message: String },
    #[error("{uri}: {message}")]
    Parse { uri: String, message: String },
}

/// Maps a URI's host and port to an address before DNS is asked: the proxy's own
/// configuration resolves Service names (`jwks.ns.svc.cluster.local`) to a ready endpoint.
pub type Resolver = Box<dyn Fn(&str, u16) -> Option<SocketAddr> + Send + Sync>;

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<SystemTime>,
    last_error: Option<String>,
    failures: u64,
}

struct Entry {
    state: Mutex<State>,
    /// One fetch at a time per URI; later callers reuse its result.
    fetching: tokio::sync::Mutex<()>,
}

/// Remote key sets by URI, shared by every snapshot of one proxy.
pub struct JwksCache {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    tls: Arc<rustls::ClientConfig>,
    resolver: Resolver,
}

impl JwksCache {
    /// HTTPS trusts the system's root certificates.
    pub fn new(resolver: Resolver) -> Arc<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!("system root certificates: {e}");
        }
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!("no system root certificates found: https jwksUri fetches will fail");
        }
        Self::with_roots(roots, resolver)
    }

    pub fn with_roots(roots: rustls::RootCertStore, resolver: Resolver) -> Arc<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| rustls::ClientConfig::builder())
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            tls: Arc::new(tls),
            resolver,
        })
    }

    fn entry(&self, uri: &str) -> Arc<Entry> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .entry(uri.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    state: Mutex::new(State::default()),
                    fetching: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// The keys of `uri` as last fetched, without waiting.
    pub fn current(&self, uri: &str) -> Option<Arc<KeySet>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(uri)?;
        let state = entry.state.lock().unwrap_or_else(|p| p.into_inner());
        state.keys.clone()
    }

    /// The keys of `uri`, fetching them first (bounded by `timeout`) if there are none yet.
    pub async fn keys(&self, uri: &str, timeout: Duration) -> Option<Arc<KeySet>> {
        if let Some(k) = self.current(uri) {
            return Some(k);
        }
        let entry = self.entry(uri);
        let _one = entry.fetching.lock().await;
        if let Some(k) = entry.state.lock().unwrap_or_else(|p| p.into_inner()).keys.clone() {
            return Some(k);
        }
        self.fetch_into(uri, &entry, timeout).await;
        let state = entry.state.lock().unwrap_or_else(|p| p.into_inner());
        state.keys.clone()
    }

    /// Makes the cache hold exactly `uris` (those of the configuration in force) and
    /// fetches the new ones in the background.
    pub fn track(self: &Arc<Self>, uris: &[(String, Duration)]) {
        let fresh: Vec<(String, Duration)> = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.retain(|u, _| uris.iter().any(|(w, _)| w == u));
            uris.iter().filter(|(u, _)| !entries.contains_key(u)).cloned().collect()
        };
        for (uri, timeout) in fresh {
            let cache = self.clone();
            tokio::spawn(async move {
                cache.keys(&uri, timeout).await;
            });
        }
    }

    /// Refreshes every tracked URI each `every` (a fetch bounded by `timeout`), forever.
    pub async fn run_refresher(self: Arc<Self>, every: Duration, timeout: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let all: Vec<(String, Arc<Entry>)> = {
                let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
                entries.iter().map(|(u, e)| (u.clone(), e.clone())).collect()
            };
            for (uri, entry) in all {
                let _one = entry.fetching.lock().await;
                self.fetch_into(&uri, &entry, timeout).await;
            }
        }
    }

    async fn fetch_into(&self, uri: &str, entry: &Entry, timeout: Duration) {
        let result = self.fetch(uri, timeout).await;
        let mut state = entry.state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(keys) => {
                for s in &keys.skipped {
                    tracing::warn!(uri, "jwksUri key skipped: {s}");
                }
                tracing::info!(uri, keys = keys.keys.len(), "jwksUri fetched");
                state.keys = Some(Arc::new(keys));
                state.fetched_at = Some(SystemTime::now());
                state.last_error = None;
            }
            Err(e) => {
                state.failures += 1;
                let kept = state.keys.is_some();
                tracing::warn!(uri, kept_last_good_keys = kept, "jwksUri fetch failed: {e}");
                state.last_error = Some(e.to_string());
            }
        }
    }

    async fn fetch(&self, uri: &str, timeout: Duration) -> Result<KeySet, FetchError> {
        tokio::time::timeout(timeout, self.get(uri))
            .await
            .map_err(|_| FetchError::Timeout {
                uri: uri.into(),
                timeout,
            })?
    }

    async fn get(&self, uri: &str) -> Result<KeySet, FetchError> {
        let err_uri = |message: String| FetchError::Uri {
            uri: uri.into(),
            message,
        };
        let parsed: http::Uri = uri.parse().map_err(|e: http::uri::InvalidUri| err_uri(e.to_string()))?;
        let https = parsed.scheme_str() == Some("https");
        let host = parsed.host().ok_or_else(|| err_uri("no host".into()))?.to_owned();
        let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = self.resolve(uri, &host, port).await?;
        let connect = |e: std::io::Error| FetchError::Connect {
            uri: uri.into(),
            message: format!("{addr}: {e}"),
        };
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(connect)?;
        let authority = parsed.authority().map_or(host.clone(), |a| a.to_string());
        let request = http::Request::get(parsed.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| err_uri(e.to_string()))?;
        let resp = if https {
            let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| err_uri(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| FetchError::Tls {
                    uri: uri.into(),
                    message: e.to_string(),
                })?;
            send(tls, request).await
        } else {
            send(tcp, request).await
        }
        .map_err(|e| FetchError::Request {
            uri: uri.into(),
            message: e.to_string(),
        })?;
        if resp.status() != http::StatusCode::OK {
            return Err(FetchError::Status {
                uri: uri.into(),
                status: resp.status().as_u16(),
            });
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Body {
                uri: uri.into(),
                message: e.to_string(),
            })?
            .to_bytes();
        KeySet::parse(&String::from_utf8_lossy(&body)).map_err(|message| FetchError::Parse {
            uri: uri.into(),
            message,
        })
    }

    async fn resolve(&self, uri: &str, host: &str, port: u16) -> Result<SocketAddr, FetchError> {
        if let Some(a) = (self.resolver)(host, port) {
            return Ok(a);
        }
        let mut found = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| FetchError::Connect {
                uri: uri.into(),
                message: format!("{host}: {e}"),
            })?;
        found.next().ok_or_else(|| FetchError::Connect {
            uri: uri.into(),
            message: format!("{host}: no address"),
        })
    }

    /// For `/config_dump`: per URI, keys held, last fetch, last error.
    pub fn summary(&self) -> BTreeMap<String, serde_json::Value> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .map(|(uri, e)| {
                let s = e.state.lock().unwrap_or_else(|p| p.into_inner());
                let age = s.fetched_at.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs());
                (
                    uri.clone(),
                    serde_json::json!({
                        "keys": s.keys.as_ref().map(|k| k.keys.len()),
                        "secondsSinceFetch": age,
                        "failures": s.failures,
                        "lastError": s.last_error,
                    }),
                )
            })
            .collect()
    }
}

/// One request on a fresh HTTP/1.1 connection (a refresh every few minutes needs no pool).
async fn send<I>(io: I, request: http::Request<Empty<Bytes>>) -> hyper::Result<http::Response<hyper::body::Incoming>>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("jwksUri connection ended: {e}");
        }
    });
    sender.send_request(request).await
}
