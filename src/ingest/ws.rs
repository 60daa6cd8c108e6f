//! NEXUS's Socket.IO feed: `nexus_alert` events from a Flask-SocketIO server (`--nexus-ws`).
//!
//! rust_socketio speaks Socket.IO v5 / Engine.IO v4 (python-socketio 5). It reconnects by
//! itself with exponential backoff and jitter once connected; the first connect is retried here
//! with our own backoff. Its backoff gives up after a fixed number of attempts, after which its
//! polling loop starts a fresh backoff, so it never stops trying and never spins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder, ReconnectSettings};
use rust_socketio::{Event, Payload};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Intake, alert_from_value, id_hint};

pub const FEED: &str = "ws";
pub const EVENT: &str = "nexus_alert";

pub fn check_url(url: &str) -> Result<(), String> {
    let ok = ["http://", "https://", "ws://", "wss://"].iter().any(|scheme| url.starts_with(scheme));
    if !ok || url.len() > 2048 || url.chars().any(char::is_whitespace) {
        return Err(format!("{url:?}: expected http://HOST:PORT of the NEXUS Socket.IO server"));
    }
    Ok(())
}

/// The alerts in one `nexus_alert` event: its arguments, each an alert object, a JSON string
/// of one, or a list of them.
pub fn alerts_of(payload: Payload) -> Vec<serde_json::Value> {
    let values = match payload {
        Payload::Text(values) => values,
        Payload::Binary(bytes) => {
            vec![
                serde_json::from_slice(&bytes)
                    .unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&bytes).into())),
            ]
        }
        #[allow(deprecated)]
        Payload::String(text) => vec![serde_json::Value::String(text)],
    };
    values
        .into_iter()
        .flat_map(|value| match value {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        })
        .collect()
}

async fn handle(intake: &Intake, payload: Payload) {
    for value in alerts_of(payload) {
        let id = id_hint(&value);
        match alert_from_value(value) {
            Ok(alert) => {
                let requester = alert.source.clone();
                intake.submit(&alert, FEED, &requester).await;
            }
            Err(error) => {
                intake.refuse_invalid(&id, FEED, "nexus", error);
            }
        }
    }
}

/// Connect, and stay connected until `shutdown`.
pub async fn subscribe(url: String, intake: Arc<Intake>, shutdown: CancellationToken) {
    let mut attempt = 0u32;
    let client = loop {
        match connect(&url, intake.clone()).await {
            Ok(client) => break client,
            Err(e) => {
                let delay = intake.config().ingest.reconnect_backoff().delay(attempt);
                attempt = attempt.saturating_add(1);
                warn!(%url, error = %e, delay_ms = delay.as_millis() as u64, "NEXUS Socket.IO connect failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    shutdown.cancelled().await;
    if let Err(e) = client.disconnect().await {
        warn!(error = %e, "Socket.IO disconnect");
    }
}

async fn connect(url: &str, intake: Arc<Intake>) -> Result<Client, rust_socketio::Error> {
    let backoff = intake.config().ingest.reconnect_backoff();
    // True while connected: a reconnect attempt after a live connection is one disconnect.
    let connected = Arc::new(AtomicBool::new(false));
    let on_alert = {
        let intake = intake.clone();
        move |payload: Payload, _: Client| {
            let intake = intake.clone();
            async move { handle(&intake, payload).await }.boxed()
        }
    };
    let on_connect = {
        let (connected, url) = (connected.clone(), url.to_string());
        move |_: Payload, _: Client| {
            connected.store(true, Ordering::Relaxed);
            info!(url = %url, "connected to the NEXUS Socket.IO feed");
            async {}.boxed()
        }
    };
    let on_error = {
        let url = url.to_string();
        move |payload: Payload, _: Client| {
            warn!(url = %url, error = ?payload, "NEXUS Socket.IO error");
            async {}.boxed()
        }
    };
    let on_reconnect = {
        let (connected, intake, url) = (connected.clone(), intake.clone(), url.to_string());
        move || {
            if connected.swap(false, Ordering::Relaxed) {
                warn!(url = %url, "NEXUS Socket.IO connection lost; reconnecting");
                intake.metrics().feed_reconnect(FEED);
            }
            async { ReconnectSettings::new() }.boxed()
        }
    };
    ClientBuilder::new(url)
        .namespace("/")
        .on(EVENT, on_alert)
        .on(Event::Connect, on_connect)
        .on(Event::Error, on_error)
        .on_reconnect(on_reconnect)
        .reconnect(true)
        .reconnect_on_disconnect(true)
        .reconnect_delay(backoff.base.as_millis() as u64, backoff.cap.as_millis() as u64)
        .max_reconnect_attempts(50)
        .connect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_shapes() {
        let one = json!({"id":"a1"});
        assert_eq!(alerts_of(Payload::Text(vec![one.clone()])), vec![one.clone()]);
        assert_eq!(alerts_of(Payload::Text(vec![json!([one.clone(), one.clone()])])).len(), 2);
        assert_eq!(alerts_of(Payload::Text(vec![json!("{\"id\":\"s\"}")])), vec![json!("{\"id\":\"s\"}")]);
        assert_eq!(alerts_of(Payload::Binary(br#"{"id":"b"}"#.to_vec().into())), vec![json!({"id":"b"})]);
        assert_eq!(alerts_of(Payload::Text(vec![])), Vec::<serde_json::Value>::new());
    }

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:5000").is_ok());
        assert!(check_url("wss://nexus/").is_ok());
        assert!(check_url("127.0.0.1:5000").is_err());
        assert!(check_url("http://a b").is_err());
    }
}
