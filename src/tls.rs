//! TLS for TURN over TLS (RFC 8656 §3.1, `turns:`): rustls, TLS 1.2 and 1.3 only, ALPN
//! `stun.turn` / `stun.nat-discovery` (RFC 7443) accepted when offered. The certificate is
//! reloaded on SIGHUP; a broken new certificate keeps the old one serving.

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or parsing the PEM chain.
    #[error("TLS certificate {path}: {why}")]
    Cert {
        /// File.
        path: String,
        /// Cause.
        why: String,
    },
    /// Reading or parsing the key.
    #[error("TLS key {path}: {why}")]
    Key {
        /// File.
        path: String,
        /// Cause.
        why: String,
    },
    /// rustls refused the pair.
    #[error("TLS certificate and key do not work together: {0}")]
    Config(String),
}

/// The ALPN identifiers of RFC 7443.
pub const ALPN: [&[u8]; 2] = [b"stun.turn", b"stun.nat-discovery"];

/// ALPN of ACME's TLS-ALPN-01 challenge (RFC 8737): such a handshake gets the challenge
/// certificate and nothing else.
pub const ACME_ALPN: &[u8] = b"acme-tls/1";

/// The crypto provider used everywhere (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |why: String| TlsError::Cert {
        path: cert.display().to_string(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

/// A chain and key as rustls serves them, checked to belong together.
pub fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let ck = CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(ck))
}

/// A chain and key from PEM text.
pub fn certified_pem(chain: &str, key: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Config(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Config("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| TlsError::Config(format!("key: {e}")))?;
    certified(certs, key)
}

/// Read a PEM chain and key and check them.
pub fn load_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_chain(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        why: e.to_string(),
    })?;
    certified(certs, key)
}

/// A server config for one fixed certificate (the HTTPS listener's own `http-tls-cert`).
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = Arc::new(Resolver::new(load_key(cert, key)?));
    server_config(resolver)
}

fn server_config(resolver: Arc<Resolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let sessions = resolver.sessions.clone();
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.session_storage = sessions;
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    cfg.alpn_protocols.push(ACME_ALPN.to_vec());
    Ok(Arc::new(cfg))
}

/// Picks the certificate of each handshake: the current one, or an ACME challenge
/// certificate for a TLS-ALPN-01 validation (ALPN `acme-tls/1` and the name being validated).
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    sessions: Arc<Sessions>,
}

impl Resolver {
    fn new(current: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(current),
            challenges: RwLock::default(),
            sessions: Arc::new(Sessions {
                generation: std::sync::atomic::AtomicU64::new(0),
                cache: rustls::server::ServerSessionMemoryCache::new(1024),
            }),
        }
    }
}

/// Session resumption state, per certificate: a new certificate starts a new generation, so
/// a client cannot resume (and keep seeing) a session made with the old one.
#[derive(Debug)]
struct Sessions {
    generation: std::sync::atomic::AtomicU64,
    cache: Arc<rustls::server::ServerSessionMemoryCache>,
}

impl Sessions {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut k = g.to_be_bytes().to_vec();
        k.extend_from_slice(key);
        k
    }
}

impl rustls::server::StoresServerSessions for Sessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.cache.put(self.key(&key), value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.get(&self.key(key))
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.take(&self.key(key))
    }
    fn can_cache(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: a validation offers `acme-tls/1` and nothing else.
        let acme = hello
            .alpn()
            .is_some_and(|mut a| a.next() == Some(ACME_ALPN) && a.next().is_none());
        if acme {
            // Only the challenge certificate, never the real one (RFC 8737 §3).
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
        }
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The certificate TURN over TLS (and a port shared with the page) serves, swappable at
/// runtime: reread from its files on SIGHUP, or replaced by ACME.
#[derive(Debug)]
pub struct TlsStore {
    /// Files to reread on reload (None: the certificate comes from ACME).
    files: Option<(PathBuf, PathBuf)>,
    resolver: Arc<Resolver>,
    config: Arc<ServerConfig>,
}

impl TlsStore {
    /// Load the files now.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let resolver = Arc::new(Resolver::new(load_key(&cert, &key)?));
        Ok(Self {
            config: server_config(resolver.clone())?,
            files: Some((cert, key)),
            resolver,
        })
    }

    /// A store serving `key` until [`TlsStore::set`] replaces it (ACME).
    pub fn with_key(key: Arc<CertifiedKey>) -> Result<Self, TlsError> {
        let resolver = Arc::new(Resolver::new(key));
        Ok(Self {
            config: server_config(resolver.clone())?,
            files: None,
            resolver,
        })
    }

    /// The config new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The certificate being served now.
    pub fn certificate(&self) -> Arc<CertifiedKey> {
        self.resolver
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serve `key` from the next handshake on (sessions made with the old one are not
    /// resumed).
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = key;
        self.resolver
            .sessions
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Answer TLS-ALPN-01 for `name` with `cert` (None: stop answering).
    pub fn set_challenge(&self, name: &str, cert: Option<Arc<CertifiedKey>>) {
        let mut c = self
            .resolver
            .challenges
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match cert {
            Some(k) => c.insert(name.to_ascii_lowercase(), k),
            None => c.remove(&name.to_ascii_lowercase()),
        };
    }

    /// Reread the files; on error the old certificate keeps serving. A certificate from ACME
    /// has no files to reread (ACME renews it itself).
    pub fn reload(&self) -> Result<(), TlsError> {
        if let Some((cert, key)) = &self.files {
            self.set(load_key(cert, key)?);
        }
        Ok(())
    }
}
