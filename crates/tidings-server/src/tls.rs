//! TLS for both listeners (rustls on ring): a certificate chain and its
//! private key read from PEM files, reloaded when the server gets SIGHUP —
//! connections made after the reload get the new certificate, those open
//! keep theirs — and kept as they were when a reload fails (the reason is
//! logged), so a half-written file never takes the listeners down.
//!
//! With `--tls-client-ca`, clients may log in by certificate (mutual TLS):
//! a certificate chaining to one of those CAs is verified at the handshake
//! and its subject's common name is the connection's user (see
//! `tidings_auth::certificate`). `--tls-client-auth required` (the default)
//! refuses a handshake without one; `requested` lets such clients on to log
//! in by password or token. The CA file is reloaded at SIGHUP with the
//! certificate.

use std::path::{Path, PathBuf};

use std::sync::{Arc, RwLock};
use std::time::Duration;
use tidings_auth::Principal;

use anyhow::{Context, Result};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake: one that stalls is
/// closed, as a slow request head is.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a client must show a certificate, with `--tls-client-ca`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A handshake without a client certificate is refused.
    #[default]
    Required,
    /// A certificate is asked for; without one the client logs in by
    /// password or token.
    Requested,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<ClientAuth, String> {
        match text {
            "required" => Ok(ClientAuth::Required),
            "requested" => Ok(ClientAuth::Requested),
            _ => Err(format!("{text:?}: required or requested")),
        }
    }
}

impl std::fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientAuth::Required => "required",
            ClientAuth::Requested => "requested",
        })
    }
}

/// The files TLS is made from.
#[derive(Clone, Debug)]
pub(crate) struct Files {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// The CAs of client certificates, and whether one is required.
    pub(crate) client_ca: Option<(PathBuf, ClientAuth)>,
}

/// The server's certificate, as loaded last: the acceptors of the HTTP
/// listener (which offers `http/1.1` by ALPN) and of the Kafka listener.
pub(crate) struct Certificates {
    files: Files,
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
    pub(crate) fn load(files: Files) -> Result<Certificates> {
        Ok(Certificates {
            current: RwLock::new(acceptors(&files)?),
            files,
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
        let fresh = acceptors(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

fn acceptors(files: &Files) -> Result<Acceptors> {
    Ok(Acceptors {
        http: read(files, &[b"http/1.1".to_vec()])?,
        kafka: read(files, &[])?,
    })
}

/// The verifier of client certificates chaining to the CAs in `ca`.
fn client_verifier(
    ca: &Path,
    auth: ClientAuth,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read the client CA file {}", ca.display()))?
    {
        let cert = cert.with_context(|| format!("{} is not PEM certificates", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a certificate in {} is not a usable CA", ca.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "{} holds no CA certificate (PEM `BEGIN CERTIFICATE`)",
        ca.display()
    );
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(provider),
    );
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Requested => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .with_context(|| format!("the client CAs of {}", ca.display()))
}

fn read(files: &Files, alpn: &[Vec<u8>]) -> Result<TlsAcceptor> {
    let (cert, key) = (&files.cert, &files.key);
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
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some((ca, auth)) => {
            builder.with_client_cert_verifier(client_verifier(ca, *auth, &provider)?)
        }
    };
    let mut config = builder.with_single_cert(chain, private).with_context(|| {
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
                    tracing::info!(cert = %certificates.files.cert.display(), "SIGHUP: TLS certificate reloaded; new connections get it")
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

/// The principal of the client certificate a TLS handshake verified: none
/// when the client showed none; an error when its certificate names no user.
pub(crate) fn certified(
    connection: &rustls::ServerConnection,
) -> Result<Option<Principal>, tidings_auth::certificate::CertificateError> {
    match connection
        .peer_certificates()
        .and_then(|chain| chain.first())
    {
        None => Ok(None),
        Some(leaf) => tidings_auth::certificate::principal(leaf).map(Some),
    }
}
