//! TLS for the standalone server (the `tls` feature): certificates from PEM files, rustls on
//! ring, and HTTP/2 or HTTP/1.1 chosen per connection by ALPN.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, InconsistentKeys, ServerConfig};
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the TLS handshake once connected.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocols [`TlsConfig::from_pem_files`] offers, in order of preference: HTTP/2, then
/// HTTP/1.1.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// TLS settings for the standalone server ([`Serve::with_tls`](crate::Serve::with_tls)): a
/// certificate chain and its private key, and the ALPN protocols offered to clients.
///
/// A cheap clone (an `Arc` inside). Made from PEM files with [`TlsConfig::from_pem_files`], or
/// from a rustls [`ServerConfig`] you built yourself with [`TlsConfig::from_server_config`].
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ServerConfig>,
}

impl TlsConfig {
    /// Reads a certificate chain and its private key from PEM files, and offers HTTP/2 then
    /// HTTP/1.1 by ALPN ([`ALPN_PROTOCOLS`]); TLS 1.3 and 1.2, with rustls's `ring` provider.
    ///
    /// `cert_chain` holds one or more `CERTIFICATE` sections, the server's own certificate first
    /// and then the intermediates (what Let's Encrypt calls `fullchain.pem`). `key` holds the
    /// private key: the first `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY`
    /// section in it. Other sections in either file are ignored.
    ///
    /// # Errors
    ///
    /// A [`TlsError`] that names the file and what is wrong with it: it cannot be read, it is
    /// not valid PEM, it holds no certificate or no private key, the key does not belong to the
    /// certificate, or rustls cannot use them.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let certs = read_certs(cert_path)?;
        let key = read_key(key_path)?;
        let unusable = |source| TlsError::Unusable {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            source,
        };
        // An explicit provider: `ServerConfig::builder()` would panic in a program whose
        // dependencies enable both of rustls's providers and install neither.
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(unusable)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|error| match error {
                rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
                    TlsError::KeyMismatch {
                        cert: cert_path.to_owned(),
                        key: key_path.to_owned(),
                    }
                }
                error => unusable(error),
            })?;
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// Serves with a rustls configuration you built yourself (client certificates, a certificate
    /// resolver for several names, another crypto provider, ...), as it is.
    ///
    /// Its `alpn_protocols` decide what clients can speak: set them to [`ALPN_PROTOCOLS`] for
    /// HTTP/2 (what browsers need to open more than six streams to one origin); a connection that
    /// negotiated no protocol is served like a cleartext one (HTTP/1.1, or HTTP/2 with prior
    /// knowledge). `rustls` is this crate's [`rustls`](crate::rustls) re-export, so the versions
    /// match.
    pub fn from_server_config(config: impl Into<Arc<ServerConfig>>) -> Self {
        Self {
            config: config.into(),
        }
    }

    /// The rustls configuration connections are served with.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// Completes the handshake on `socket` within [`TLS_HANDSHAKE_TIMEOUT`].
    pub(crate) async fn accept<S>(&self, socket: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake timed out",
                ))
            })
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let alpn: Vec<_> = self
            .config
            .alpn_protocols
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect();
        f.debug_struct("TlsConfig")
            .field("alpn_protocols", &alpn)
            .finish_non_exhaustive()
    }
}

/// Why [`TlsConfig::from_pem_files`] could not use the certificate and key it was given. Each
/// message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read: it does not exist, or this process may not read it. Check the
    /// path and the file's permissions.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A PEM section in the file is malformed (a `BEGIN` line without its `END`, bad base64).
    /// Check that the file was copied whole.
    #[error("{} is not valid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is malformed.
        #[source]
        source: pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` section: not a PEM file, or the key file was
    /// given in its place.
    #[error("no certificate in {}: expected a PEM CERTIFICATE section", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key section: not a PEM file, or the certificate file was
    /// given in its place.
    #[error(
        "no private key in {}: expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is not the one the certificate was issued for. Give the key that was
    /// generated with the certificate's signing request.
    #[error(
        "the private key in {} does not belong to the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls cannot use the certificate or the key: a certificate that is not valid DER, or a
    /// key of a type the `ring` provider does not support (it supports RSA, ECDSA P-256 and
    /// P-384, and Ed25519).
    #[error(
        "the certificate in {} or the private key in {} cannot be used: {source}",
        cert.display(),
        key.display()
    )]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path) -> impl FnOnce(pem::Error) -> TlsError + '_ {
    move |source| TlsError::Pem {
        path: path.to_owned(),
        source,
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(path))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        error => pem_error(path)(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own for each test, in the system's temporary directory.
    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("sseio-hyper-tls-{}", std::process::id()))
            .join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A self-signed certificate for `localhost` and its key, written as PEM into `dir`.
    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_matching_pair_offers_h2_then_http11() {
        let dir = dir("matching");
        let (cert, key) = write_pair(&dir, "server");
        let tls = TlsConfig::from_pem_files(&cert, &key).unwrap();
        assert_eq!(
            tls.server_config().alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = dir("missing");
        let (cert, key) = write_pair(&dir, "server");
        let nowhere = dir.join("nowhere.pem");

        let error = TlsConfig::from_pem_files(&nowhere, &key).unwrap_err();
        assert!(matches!(&error, TlsError::Read { path, .. } if *path == nowhere));
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot read {}: ", nowhere.display()))
        );

        let error = TlsConfig::from_pem_files(&cert, &nowhere).unwrap_err();
        assert!(matches!(&error, TlsError::Read { path, .. } if *path == nowhere));
    }

    #[test]
    fn a_key_of_another_certificate_is_a_mismatch() {
        let dir = dir("mismatch");
        let (cert, _) = write_pair(&dir, "one");
        let (_, other_key) = write_pair(&dir, "two");
        let error = TlsConfig::from_pem_files(&cert, &other_key).unwrap_err();
        assert!(
            matches!(&error, TlsError::KeyMismatch { cert: c, key: k } if *c == cert && *k == other_key),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "the private key in {} does not belong to the certificate in {}",
                other_key.display(),
                cert.display()
            )
        );
    }

    #[test]
    fn garbage_holds_no_certificate_and_no_key() {
        let dir = dir("garbage");
        let (cert, key) = write_pair(&dir, "server");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "this is not PEM\n\x00\x01\x02").unwrap();

        let error = TlsConfig::from_pem_files(&garbage, &key).unwrap_err();
        assert!(matches!(&error, TlsError::NoCertificate { path } if *path == garbage));
        assert!(error.to_string().contains(&garbage.display().to_string()));

        let error = TlsConfig::from_pem_files(&cert, &garbage).unwrap_err();
        assert!(matches!(&error, TlsError::NoPrivateKey { path } if *path == garbage));
        assert!(error.to_string().contains(&garbage.display().to_string()));
    }

    #[test]
    fn swapped_files_are_told_apart() {
        let dir = dir("swapped");
        let (cert, key) = write_pair(&dir, "server");
        let error = TlsConfig::from_pem_files(&key, &cert).unwrap_err();
        assert!(matches!(&error, TlsError::NoCertificate { path } if *path == key));
    }

    #[test]
    fn a_broken_section_is_invalid_pem() {
        let dir = dir("broken");
        let (_, key) = write_pair(&dir, "server");
        let broken = dir.join("broken.crt");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64 !!!\n").unwrap();
        let error = TlsConfig::from_pem_files(&broken, &key).unwrap_err();
        assert!(
            matches!(&error, TlsError::Pem { path, .. } if *path == broken),
            "{error:?}"
        );

        // A certificate section whose contents are not a certificate.
        let bogus = dir.join("bogus.crt");
        std::fs::write(
            &bogus,
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = TlsConfig::from_pem_files(&bogus, &key).unwrap_err();
        assert!(
            matches!(&error, TlsError::Unusable { cert: c, .. } if *c == bogus),
            "{error:?}"
        );
    }
}
