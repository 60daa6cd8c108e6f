//! TLS for the intake listeners (the HTTP listener: REST, Socket.IO, metrics; and the gRPC
//! intake), rustls with the ring provider (the one kube already uses).
//!
//! `--tls-cert`/`--tls-key` are PEM files, loaded and checked (key matches certificate) at
//! startup: a bad pair is a startup error. Afterwards the pair is re-read when either file's
//! modification time changes (checked at most once a second, on a handshake), so a renewed
//! Kubernetes Secret takes effect for new connections without a restart; a renewed pair that
//! does not load is logged and the previous one kept.
//!
//! Handshakes run off the accept loop (each in its own task, at most [`MAX_HANDSHAKES`] at once,
//! [`HANDSHAKE_TIMEOUT`] each), so a client that opens a socket and says nothing cannot stall
//! other clients; finished streams reach the HTTP server (axum `Listener`) or tonic (a stream of
//! connections) through a channel.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

/// ALPN of the HTTP listener (HTTP/2 or HTTP/1.1: Socket.IO's WebSocket upgrade needs 1.1).
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the gRPC listener (gRPC clients require h2).
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_HANDSHAKES: usize = 256;
/// How often at most the certificate files are looked at.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The serving certificate and key, and where they came from.
#[derive(Debug)]
pub struct ServerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    checked: Instant,
    key: Arc<CertifiedKey>,
}

/// Modification times of (certificate, key).
type Stamp = (Option<SystemTime>, Option<SystemTime>);

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

impl ServerTls {
    /// Load and check the pair; the error names the file and what is wrong with it.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, String> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let stamp = stamp(cert_file, key_file);
        let key = certified_key(&provider, cert_file, key_file)?;
        let loaded = Mutex::new(Loaded { stamp, checked: Instant::now(), key });
        Ok(Arc::new(Self { cert_file: cert_file.into(), key_file: key_file.into(), provider, loaded }))
    }

    /// The pair to serve now, re-read first if the files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if loaded.checked.elapsed() >= RECHECK_INTERVAL {
            loaded.checked = Instant::now();
            let now = stamp(&self.cert_file, &self.key_file);
            if now != loaded.stamp {
                match certified_key(&self.provider, &self.cert_file, &self.key_file) {
                    Ok(key) => {
                        info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
                        loaded.key = key;
                        loaded.stamp = now;
                    }
                    // Half-written during a rotation, or broken: keep serving the old pair and
                    // look again next time.
                    Err(error) => warn!(%error, "TLS certificate changed but does not load: keeping the previous one"),
                }
            }
        }
        loaded.key.clone()
    }

    fn acceptor(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<TlsAcceptor, crate::validate::Invalid> {
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[derive(Debug)]
struct Resolver(Arc<ServerTls>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn certified_key(provider: &CryptoProvider, cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certs = read_certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let signing_key =
        provider.key_provider.load_private_key(key).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|e| {
        format!("{} and {}: the key does not belong to the certificate ({e})", key_file.display(), cert_file.display())
    })?;
    Ok(Arc::new(certified))
}

/// A CA bundle for dialing out: the PEM text, once it is known to hold a certificate.
pub fn read_ca_pem(path: &Path) -> Result<Vec<u8>, String> {
    read_certificates(path)?;
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A client config trusting only the certificates of `ca_file` (for `wss://` with `--nexus-ca`).
pub fn client_config(ca_file: &Path) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, String> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in read_certificates(ca_file)? {
        roots.add(cert).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connections that finished their TLS handshake on one listener.
pub struct TlsIncoming {
    streams: mpsc::Receiver<TlsStream<TcpStream>>,
    local_addr: SocketAddr,
}

/// Accept on `listener`, handshake each connection in its own task; the accept task ends when
/// the returned [`TlsIncoming`] is dropped.
pub fn accept(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    alpn: &[&[u8]],
) -> Result<TlsIncoming, crate::validate::Invalid> {
    let acceptor = tls.acceptor(alpn)?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (sender, streams) = mpsc::channel(64);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = sender.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        drop(permit);
                        let _ = sender.send(stream).await;
                    }
                    Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Ok(TlsIncoming { streams, local_addr })
}

impl TlsIncoming {
    /// For tonic's `serve_with_incoming*`.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
        futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(self.streams), Ok)
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.streams.recv().await {
                Some(stream) => match stream.get_ref().0.peer_addr() {
                    Ok(peer) => return (stream, peer),
                    Err(_) => continue,
                },
                // The accept task only ends when this is dropped; wait for shutdown instead.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let missing = dir.path().join("missing.pem");
        let cases: &[(&Path, &Path, &str)] = &[
            (&missing, &empty, "missing.pem"),
            (&empty, &empty, "no PEM certificate"),
            (&empty, &missing, "empty.pem"),
        ];
        for (cert, key, want) in cases {
            let error = ServerTls::load(cert, key).expect_err("refused");
            assert!(error.contains(want), "{cert:?} {key:?}: {error}");
        }
        assert!(read_ca_pem(&empty).is_err_and(|e| e.contains("no PEM certificate")));
    }
}
