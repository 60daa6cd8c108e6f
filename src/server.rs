//! The HTTP listener: one axum server for REST ingest, health, metrics and Socket.IO.

use std::net::SocketAddr;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub async fn serve(addr: SocketAddr, router: Router, shutdown: CancellationToken) -> crate::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "http listening");
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await?;
    Ok(())
}
