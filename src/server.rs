//! The HTTP listener: one axum server for REST ingest, health, metrics and Socket.IO; over TLS
//! when `--tls-cert`/`--tls-key` are given (see [`crate::tls`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::tls::{self, ServerTls};

pub async fn serve(
    addr: SocketAddr,
    router: Router,
    tls: Option<Arc<ServerTls>>,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, tls = tls.is_some(), "http listening");
    let stopped = async move { shutdown.cancelled().await };
    match tls {
        None => axum::serve(listener, router).with_graceful_shutdown(stopped).await?,
        Some(tls) => {
            let incoming = tls::accept(listener, tls, tls::HTTP_ALPN).map_err(std::io::Error::other)?;
            axum::serve(incoming, router).with_graceful_shutdown(stopped).await?
        }
    }
    Ok(())
}
