//! TLS for TURN over TLS (RFC 8656 §3.1, `turns:`): rustls, TLS 1.2 and 1.3 only, ALPN
//! `stun.turn` / `stun.nat-discovery` (RFC 7443) accepted when offered. The certificate is
//! reloaded on SIGHUP; a broken new certificate keeps the old one serving.

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

/// The crypto provider used everywhere (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Load a PEM chain and key into a server config.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            why: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            why: "no CERTIFICATE block in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        why: e.to_string(),
    })?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// The current server config, swappable at runtime.
#[derive(Debug)]
pub struct TlsStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsStore {
    /// Load the files now.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Self, TlsError> {
        let current = RwLock::new(load(&cert, &key)?);
        Ok(Self { cert, key, current })
    }

    /// The config new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reload the files; on error the old certificate keeps serving.
    pub fn reload(&self) -> Result<(), TlsError> {
        let new = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }
}
