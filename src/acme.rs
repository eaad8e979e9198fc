//! Certificates from an ACME CA (RFC 8555; Let's Encrypt by default) for `domain`: the
//! certificate TURN over TLS and the HTTPS page serve, obtained and renewed by natpass itself.
//!
//! On [`instant_acme`] (a maintained async ACME client on rustls, from the author of rustls'
//! Quinn and hickory work; `rustls-acme` would have been the other choice, but it owns the TLS
//! acceptor, and natpass's TLS is accepted in two places: the relay shards and the shared
//! port). The challenge is TLS-ALPN-01 (RFC 8737), answered on the TLS port itself by the
//! certificate resolver ([`crate::tls::TlsStore::set_challenge`]), so nothing but the TURN
//! port needs to be open.
//!
//! State in `state-dir/acme`: `account.json` (the account's key and URL), `cert.pem` and
//! `key.pem` (owner-only), written atomically. At start the kept certificate serves if it is
//! for the same names; otherwise a self-signed placeholder serves until the first issuance.
//! A check runs at start and every 12 hours (`NATPASS_ACME_CHECK_SECONDS` for tests): a
//! certificate within `acme-renew-days` of expiry is renewed, without a restart (new
//! handshakes get the new one). When the CA cannot be reached or refuses, the running
//! certificate stays and the attempt is retried after a backoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;

use crate::config::{AcmeChallenge, AcmeConfig};
use crate::tls::TlsStore;

/// Why an issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA (or the way to it).
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    /// The state directory.
    #[error("ACME state in {path}: {source}")]
    State {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// What the CA returned or asked is unusable.
    #[error("ACME: {0}")]
    Other(String),
}

fn state_err(path: &Path) -> impl FnOnce(std::io::Error) -> AcmeError + '_ {
    move |source| AcmeError::State {
        path: path.display().to_string(),
        source,
    }
}

/// Write `data` to `path` through a temporary file and a rename (never a half-written
/// certificate), readable by the owner only.
fn write_private(path: &Path, data: &[u8]) -> Result<(), AcmeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(state_err(&tmp))?;
    f.write_all(data).map_err(state_err(&tmp))?;
    f.sync_all().map_err(state_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(state_err(path))
}

fn cert_path(c: &AcmeConfig) -> PathBuf {
    c.dir.join("cert.pem")
}

fn key_path(c: &AcmeConfig) -> PathBuf {
    c.dir.join("key.pem")
}

/// The names and the end of validity of a chain's first certificate.
pub fn cert_info(ck: &CertifiedKey) -> Option<(Vec<String>, i64)> {
    let der = ck.cert.first()?;
    let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let not_after = x.validity().not_after.timestamp();
    let mut names: Vec<String> = x
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Some((names, not_after))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The kept certificate when it is for these names, else None.
fn kept(c: &AcmeConfig) -> Option<Arc<CertifiedKey>> {
    let ck = crate::tls::load_key(&cert_path(c), &key_path(c)).ok()?;
    let (names, _) = cert_info(&ck)?;
    let mut want = c.domains.clone();
    want.sort();
    (names == want).then_some(ck)
}

/// What the TLS store serves at start: the kept certificate, or a self-signed placeholder
/// for the names until the first issuance.
pub fn initial_key(c: &AcmeConfig) -> Result<Arc<CertifiedKey>, crate::tls::TlsError> {
    if let Some(k) = kept(c) {
        return Ok(k);
    }
    let ck = rcgen::generate_simple_self_signed(c.domains.clone())
        .map_err(|e| crate::tls::TlsError::Config(e.to_string()))?;
    crate::tls::certified_pem(&ck.cert.pem(), &ck.signing_key.serialize_pem())
}

/// Whether the certificate being served must be replaced now: a placeholder, other names,
/// or within `renew_before` of its end.
fn due(c: &AcmeConfig, store: &TlsStore) -> bool {
    if kept(c).is_none() {
        return true;
    }
    let Some((_, not_after)) = cert_info(&store.certificate()) else {
        return true;
    };
    not_after - now_unix() < c.renew_before.as_secs() as i64
}

/// The account kept in the state directory, or a new one (then kept).
async fn account(c: &AcmeConfig) -> Result<Account, AcmeError> {
    let path = c.dir.join("account.json");
    let builder = || match &c.ca_root {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(creds) = serde_json::from_str::<AccountCredentials>(&text) {
            return Ok(builder()?.from_credentials(creds).await?);
        }
        tracing::warn!(path = %path.display(), "ACME account file unreadable; registering a new account");
    }
    let contact: Vec<String> = c.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            c.directory.clone(),
            None,
        )
        .await?;
    let json = serde_json::to_vec(&creds).map_err(|e| AcmeError::Other(e.to_string()))?;
    write_private(&path, &json)?;
    tracing::info!(directory = %c.directory, "ACME account registered");
    Ok(account)
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737 §3: the name, and the SHA-256 of the key
/// authorization in a critical acmeIdentifier extension).
fn challenge_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])
        .map_err(|e| AcmeError::Other(e.to_string()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Other(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| AcmeError::Other(e.to_string()))?;
    // Not through `certified()`: its check parses the certificate with webpki, which refuses
    // the critical acmeIdentifier extension that this certificate exists to carry.
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let signing = crate::tls::provider()
        .key_provider
        .load_private_key(der.into())
        .map_err(|e| AcmeError::Other(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// The http-01 responder (RFC 8555 §8.3): plain HTTP on `acme-http-listen` for as long as an
/// issuance needs it, answering `/.well-known/acme-challenge/<token>` with the key
/// authorization and 404 to everything else, behind the web side's connection gate and
/// deadlines (8 connections per address, 64 in all). Stopped when dropped.
struct Http01 {
    tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
}

impl Http01 {
    async fn start(addr: std::net::SocketAddr) -> Result<Self, AcmeError> {
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            AcmeError::Other(format!("http-01 needs {addr} (acme-http-listen): {e}"))
        })?;
        let tokens: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>> =
            Arc::default();
        let t = tokens.clone();
        let app = axum::Router::new().route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(
                move |axum::extract::Path(token): axum::extract::Path<String>| {
                    let answer = t
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&token)
                        .cloned();
                    async move {
                        match answer {
                            Some(a) => (axum::http::StatusCode::OK, a).into_response(),
                            None => axum::http::StatusCode::NOT_FOUND.into_response(),
                        }
                    }
                },
            ),
        );
        // The web side's bounds: a connection cap (per address and in all), deadlines for
        // the request head and idle connections; stopped with the issuance.
        let stop = tokio_util::sync::CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            let _ = crate::web::limits::serve_bounded(
                l,
                app,
                crate::web::limits::Front::Plain,
                crate::web::limits::HttpLimits::default(),
                crate::web::limits::ConnGate::with_cap(8, 64),
                shutdown,
            )
            .await;
        });
        Ok(Self { tokens, task, stop })
    }

    fn answer(&self, token: &str, key_authorization: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned(), key_authorization.to_owned());
    }
}

impl Drop for Http01 {
    fn drop(&mut self) {
        // Close the listener and the connections (the task's JoinSet goes with it).
        self.stop.cancel();
        self.task.abort();
    }
}

/// Removes the challenge certificates however the issuance ends.
struct Challenges<'a> {
    store: &'a TlsStore,
    names: Vec<String>,
}

impl Drop for Challenges<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            self.store.set_challenge(n, None);
        }
    }
}

/// Get a certificate for the configured names and serve it; keep it in the state directory.
pub async fn issue(c: &AcmeConfig, store: &TlsStore) -> Result<(), AcmeError> {
    std::fs::create_dir_all(&c.dir).map_err(state_err(&c.dir))?;
    let account = account(c).await?;
    let ids: Vec<Identifier> = c.domains.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut served = Challenges {
        store,
        names: Vec::new(),
    };
    let mut http: Option<Http01> = None;
    let mut auths = order.authorizations();
    while let Some(a) = auths.next().await {
        let mut a = a?;
        match a.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Err(AcmeError::Other(format!(
                    "authorization is {other:?}, not pending"
                )));
            }
        }
        match c.challenge {
            AcmeChallenge::TlsAlpn01 => {
                let mut ch = a.challenge(ChallengeType::TlsAlpn01).ok_or_else(|| {
                    AcmeError::Other("the CA offers no tls-alpn-01 challenge".into())
                })?;
                let name = ch.identifier().to_string();
                let cert = challenge_cert(&name, ch.key_authorization().digest().as_ref())?;
                store.set_challenge(&name, Some(cert));
                served.names.push(name);
                ch.set_ready().await?;
            }
            AcmeChallenge::Http01(addr) => {
                let mut ch = a
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| AcmeError::Other("the CA offers no http-01 challenge".into()))?;
                if http.is_none() {
                    http = Some(Http01::start(addr).await?);
                }
                if let Some(h) = &http {
                    h.answer(&ch.token, ch.key_authorization().as_str());
                }
                ch.set_ready().await?;
            }
        }
    }
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(Duration::from_secs(120));
    let status = order.poll_ready(&retry).await?;
    if status != OrderStatus::Ready {
        let why = order
            .state()
            .error
            .as_ref()
            .map_or_else(|| format!("{status:?}"), |p| format!("{p:?}"));
        return Err(AcmeError::Other(format!("the order is not ready: {why}")));
    }
    drop(served);
    drop(http);
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&retry).await?;
    let ck = crate::tls::certified_pem(&chain_pem, &key_pem)
        .map_err(|e| AcmeError::Other(format!("the issued certificate: {e}")))?;
    write_private(&key_path(c), key_pem.as_bytes())?;
    write_private(&cert_path(c), chain_pem.as_bytes())?;
    let expires = cert_info(&ck).map_or(0, |(_, t)| t);
    store.set(ck);
    tracing::info!(
        names = ?c.domains,
        expires_in_days = (expires - now_unix()) / 86_400,
        "ACME: certificate issued and now served"
    );
    Ok(())
}

/// An error and its causes ("client error (Connect): tcp connect error: Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !out.contains(&c_text) {
            out.push_str(": ");
            out.push_str(&c_text);
        }
        cause = c.source();
    }
    out
}

/// Keep the certificate valid until `stop`: issue when due (at start and every check),
/// keep the running one when the CA fails, and retry sooner then.
pub async fn maintain(
    c: AcmeConfig,
    store: Arc<TlsStore>,
    stop: tokio_util::sync::CancellationToken,
) {
    let every = std::env::var("NATPASS_ACME_CHECK_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(Duration::from_secs(12 * 3600), Duration::from_secs);
    // A failed validation counts against the CA's limit (Let's Encrypt: 5 an hour per name):
    // a minute, doubling.
    let first_retry = Duration::from_secs(60).min(every);
    let mut backoff = first_retry;
    loop {
        let wait = if due(&c, &store) {
            // Bounded (the client has no per-request timeout) and cut short by shutdown.
            let attempt = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(Duration::from_secs(600), issue(&c, &store)) => {
                    r.unwrap_or_else(|_| Err(AcmeError::Other("no answer from the CA in 10 minutes".into())))
                }
            };
            match attempt {
                Ok(()) => {
                    backoff = first_retry;
                    every
                }
                Err(e) => {
                    let e = chain(&e);
                    tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "ACME: no new certificate; the running one stays");
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(3600));
                    w
                }
            }
        } else {
            every
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
