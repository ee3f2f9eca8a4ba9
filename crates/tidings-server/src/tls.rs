//! TLS for both listeners (rustls on ring): a certificate chain and its
//! private key read from PEM files, reloaded when the server gets SIGHUP —
//! connections made after the reload get the new certificate, those open
//! keep theirs — and kept as they were when a reload fails (the reason is
//! logged), so a half-written file never takes the listeners down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake: one that stalls is
/// closed, as a slow request head is.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's certificate, as loaded last: the acceptors of the HTTP
/// listener (which offers `http/1.1` by ALPN) and of the Kafka listener.
pub(crate) struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Acceptors>,
}

#[derive(Clone)]
struct Acceptors {
    http: TlsAcceptor,
    kafka: TlsAcceptor,
}

impl Certificates {
    /// Reads the certificate chain and key; refuses files that do not hold
    /// a usable pair.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Certificates> {
        Ok(Certificates {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(acceptors(cert, key)?),
        })
    }

    fn current(&self) -> Acceptors {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The acceptor of new HTTP connections.
    pub(crate) fn http(&self) -> TlsAcceptor {
        self.current().http
    }

    /// The acceptor of new Kafka connections.
    pub(crate) fn kafka(&self) -> TlsAcceptor {
        self.current().kafka
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub(crate) fn reload(&self) -> Result<()> {
        let fresh = acceptors(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

fn acceptors(cert: &Path, key: &Path) -> Result<Acceptors> {
    Ok(Acceptors {
        http: read(cert, key, &[b"http/1.1".to_vec()])?,
        kafka: read(cert, key, &[])?,
    })
}

fn read(cert: &Path, key: &Path, alpn: &[Vec<u8>]) -> Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no certificate (PEM `BEGIN CERTIFICATE`)",
        cert.display()
    );
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{} holds no PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .with_context(|| {
            format!(
                "the key {} does not go with the certificate {}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Reloads `certificates` at every SIGHUP until the process ends.
#[cfg(unix)]
pub(crate) fn reload_on_hangup(certificates: Arc<Certificates>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match certificates.reload() {
                Ok(()) => {
                    tracing::info!(cert = %certificates.cert.display(), "SIGHUP: TLS certificate reloaded; new connections get it")
                }
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "SIGHUP: the TLS certificate could not be reloaded; keeping the one in use"
                ),
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn reload_on_hangup(_certificates: Arc<Certificates>) -> Result<()> {
    Ok(())
}
