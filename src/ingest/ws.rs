//! NEXUS's Socket.IO feed: `nexus_alert` events from a Flask-SocketIO server (`--nexus-ws`).
//!
//! Socket.IO v5 over Engine.IO v4, WebSocket transport only (python-socketio 5 accepts a direct
//! WebSocket connection, no long-polling handshake needed). The WebSocket itself is
//! tokio-tungstenite (TLS through rustls for `https://`/`wss://`: the built-in Mozilla roots, or
//! only `--nexus-ca` when given); this file only frames the two
//! thin protocols on top, which is all a receive-only client needs: answer the server's pings,
//! join the default namespace, take `nexus_alert` events. (rust_socketio would do the same but
//! drags in native-tls/OpenSSL, which the static image cannot carry and which would switch every
//! reqwest client in the binary to OpenSSL.)
//!
//! A connection is judged dead when the server's ping is late (`pingInterval + pingTimeout`, as
//! the server announced them); then we reconnect with exponential backoff and jitter.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Intake, alert_from_value, id_hint};

pub const FEED: &str = "ws";
pub const EVENT: &str = "nexus_alert";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `http://nexus:5000` → `ws://nexus:5000/socket.io/?EIO=4&transport=websocket`. A path other
/// than `/` is kept (a server mounted elsewhere than `/socket.io/`).
pub fn websocket_url(url: &str) -> Result<String, crate::validate::Invalid> {
    let bad = || format!("{url:?}: expected http://HOST:PORT of the NEXUS Socket.IO server");
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = match scheme {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad().into()),
    };
    if rest.is_empty() || url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad().into());
    }
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.is_empty() || path.contains('?') || path.contains('#') {
        return Err(bad().into());
    }
    let path = match path.trim_end_matches('/') {
        "" => "socket.io",
        custom => custom,
    };
    Ok(format!("{scheme}://{authority}/{path}/?EIO=4&transport=websocket"))
}

pub fn check_url(url: &str) -> Result<(), crate::validate::Invalid> {
    websocket_url(url).map(|_| ())
}

/// An Engine.IO v4 packet (WebSocket transport: one packet per text frame).
#[derive(Debug, Clone, PartialEq)]
pub enum EnginePacket {
    Open {
        ping_interval: Duration,
        ping_timeout: Duration,
    },
    Close,
    Ping(String),
    Pong,
    Message(String),
    /// upgrade / noop: nothing to do.
    Ignored,
}

pub fn engine_packet(frame: &str) -> Result<EnginePacket, crate::validate::Invalid> {
    let mut chars = frame.chars();
    let kind = chars.next().ok_or("empty Engine.IO packet")?;
    let body = chars.as_str();
    Ok(match kind {
        '0' => {
            let open: Value = serde_json::from_str(body).map_err(|e| format!("Engine.IO open packet: {e}"))?;
            let millis = |field: &str| {
                open.get(field)
                    .and_then(Value::as_u64)
                    .map(Duration::from_millis)
                    .ok_or_else(|| format!("Engine.IO open packet lacks {field}"))
            };
            EnginePacket::Open { ping_interval: millis("pingInterval")?, ping_timeout: millis("pingTimeout")? }
        }
        '1' => EnginePacket::Close,
        '2' => EnginePacket::Ping(body.to_string()),
        '3' => EnginePacket::Pong,
        '4' => EnginePacket::Message(body.to_string()),
        '5' | '6' => EnginePacket::Ignored,
        other => return Err(format!("unknown Engine.IO packet type {other:?}").into()),
    })
}

/// A Socket.IO v5 packet of the default namespace (others are [`SocketPacket::Ignored`]).
#[derive(Debug, Clone, PartialEq)]
pub enum SocketPacket {
    Connect,
    Disconnect,
    Event {
        name: String,
        args: Vec<Value>,
    },
    ConnectError(String),
    /// Acks, binary events, other namespaces.
    Ignored,
}

pub fn socket_packet(text: &str) -> Result<SocketPacket, crate::validate::Invalid> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or("empty Socket.IO packet")?;
    let mut rest = chars.as_str();
    if rest.starts_with('/') {
        let (namespace, after) = rest.split_once(',').unwrap_or((rest, ""));
        if namespace != "/" {
            return Ok(SocketPacket::Ignored);
        }
        rest = after;
    }
    Ok(match kind {
        '0' => SocketPacket::Connect,
        '1' => SocketPacket::Disconnect,
        '2' => {
            // An ack id may precede the JSON array; we never ack (receive only).
            let data = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            // Duplicate keys anywhere in the event refuse it (the NEXUS side may read the first).
            let values = match crate::validate::json_strict(data.as_bytes()) {
                Ok(Value::Array(values)) => values,
                Ok(_) => return Err("Socket.IO event is not a JSON array".into()),
                Err(e) => return Err(format!("Socket.IO event: {e}").into()),
            };
            let mut values = values.into_iter();
            let name = match values.next() {
                Some(Value::String(name)) => name,
                _ => return Err("Socket.IO event without a name".into()),
            };
            SocketPacket::Event { name, args: values.collect() }
        }
        '4' => {
            let message = serde_json::from_str::<Value>(rest)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                .unwrap_or_else(|| rest.to_string());
            SocketPacket::ConnectError(message)
        }
        '3' | '5' | '6' => SocketPacket::Ignored,
        other => return Err(format!("unknown Socket.IO packet type {other:?}").into()),
    })
}

/// The alerts in one `nexus_alert` event: its arguments, each an alert object, a JSON string of
/// one, or a list of them.
pub fn alerts_of(args: Vec<Value>) -> Vec<Value> {
    args.into_iter()
        .flat_map(|value| match value {
            Value::Array(items) => items,
            other => vec![other],
        })
        .collect()
}

async fn handle(intake: &Intake, args: Vec<Value>) {
    for value in alerts_of(args) {
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

/// Stay subscribed until `shutdown`, reconnecting with backoff and jitter.
/// `tls`: the client config to dial `wss://` with (`None`: tungstenite's built-in roots).
pub async fn subscribe(
    url: String,
    intake: Arc<Intake>,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    shutdown: CancellationToken,
) {
    let ws_url = match websocket_url(&url) {
        Ok(ws_url) => ws_url,
        Err(e) => {
            warn!(error = %e, "NEXUS Socket.IO feed not started");
            return;
        }
    };
    let mut failures: u32 = 0;
    loop {
        let mut live = false;
        let ended = tokio::select! {
            ended = session(&ws_url, &intake, tls.clone(), &mut live, &shutdown) => ended,
            _ = shutdown.cancelled() => return,
        };
        let error = match ended {
            Ok(()) => return,
            Err(error) => error,
        };
        if live {
            failures = 0;
            warn!(%url, %error, "NEXUS Socket.IO connection lost; reconnecting");
            intake.metrics().feed_reconnect(FEED);
        } else {
            warn!(%url, %error, "cannot connect to the NEXUS Socket.IO feed");
        }
        let delay = super::reconnect_backoff(&intake.config().ingest).delay(failures);
        failures = failures.saturating_add(1);
        debug!(%url, delay_ms = delay.as_millis() as u64, attempt = failures, "reconnecting to NEXUS Socket.IO");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame (WebSocket pings are answered by tungstenite), within `wait`.
async fn next_text(socket: &mut Socket, wait: Duration) -> Result<String, String> {
    let next = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
                Some(Ok(Message::Close(_))) | None => return Err("the server closed the connection".to_string()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("WebSocket: {e}")),
            }
        }
    };
    tokio::time::timeout(wait, next).await.map_err(|_| format!("no packet for {wait:?}"))?
}

/// One connection: handshake, then events until it ends. `Ok` only on shutdown.
async fn session(
    url: &str,
    intake: &Intake,
    tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    live: &mut bool,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let connector = tls.map(tokio_tungstenite::Connector::Rustls);
    let connect = tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector);
    let (mut socket, _) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
        .await
        .map_err(|_| "WebSocket connect timed out".to_string())?
        .map_err(|e| format!("WebSocket connect: {e}"))?;
    let EnginePacket::Open { ping_interval, ping_timeout } =
        engine_packet(&next_text(&mut socket, HANDSHAKE_TIMEOUT).await?)?
    else {
        return Err("expected the Engine.IO open packet first".into());
    };
    let send = |text: String| Message::Text(text.into());
    socket.send(send("40".into())).await.map_err(|e| format!("WebSocket send: {e}"))?;
    // A ping arrives at least every interval; allow the timeout on top, as the server does.
    let liveness = ping_interval + ping_timeout;
    loop {
        let frame = tokio::select! {
            frame = next_text(&mut socket, liveness) => Some(frame?),
            _ = shutdown.cancelled() => None,
        };
        let Some(frame) = frame else {
            let _ = socket.send(send("41".into())).await;
            let _ = socket.close(None).await;
            return Ok(());
        };
        match engine_packet(&frame)? {
            EnginePacket::Ping(probe) => {
                socket.send(send(format!("3{probe}"))).await.map_err(|e| format!("WebSocket send: {e}"))?
            }
            EnginePacket::Close => return Err("the server closed the Engine.IO session".into()),
            EnginePacket::Message(text) => match socket_packet(&text) {
                Ok(SocketPacket::Connect) => {
                    *live = true;
                    info!(url, "connected to the NEXUS Socket.IO feed");
                }
                Ok(SocketPacket::Event { name, args }) if name == EVENT => handle(intake, args).await,
                Ok(SocketPacket::Event { name, .. }) => debug!(event = %name, "ignoring Socket.IO event"),
                Ok(SocketPacket::Disconnect) => return Err("the server disconnected the namespace".into()),
                Ok(SocketPacket::ConnectError(message)) => return Err(format!("the server refused: {message}")),
                Ok(SocketPacket::Ignored) => {}
                // A malformed packet is the server's problem, not a reason to drop the feed.
                Err(error) => {
                    intake.refuse_invalid("-", FEED, "nexus", format!("unreadable Socket.IO packet: {error}"));
                }
            },
            EnginePacket::Open { .. } | EnginePacket::Pong | EnginePacket::Ignored => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_keys_refuse_the_event() {
        let packet =
            r#"2["nexus_alert",{"id":"a","source":"N","category":"c","severity":"info","severity":"critical"}]"#;
        let error = socket_packet(packet).map(|_| ()).expect_err("ambiguous event");
        assert!(error.contains("duplicate key \"severity\" in $[1]"), "{error}");
        assert!(matches!(socket_packet(r#"2["nexus_alert",{"id":"a"}]"#), Ok(SocketPacket::Event { .. })));
    }

    #[test]
    fn urls() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://127.0.0.1:5000", Some("ws://127.0.0.1:5000/socket.io/?EIO=4&transport=websocket")),
            ("http://nexus:5000/", Some("ws://nexus:5000/socket.io/?EIO=4&transport=websocket")),
            ("https://nexus.vael/feed/socket.io/", Some("wss://nexus.vael/feed/socket.io/?EIO=4&transport=websocket")),
            ("wss://nexus", Some("wss://nexus/socket.io/?EIO=4&transport=websocket")),
            ("127.0.0.1:5000", None),
            ("ftp://nexus", None),
            ("http://", None),
            ("http://a b", None),
            ("http://nexus/?x=1", None),
        ];
        for (url, want) in cases {
            assert_eq!(websocket_url(url).ok().as_deref(), *want, "{url}");
        }
    }

    #[test]
    fn engine_packets() {
        let open = r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(
            engine_packet(open),
            Ok(EnginePacket::Open { ping_interval: Duration::from_secs(25), ping_timeout: Duration::from_secs(20) })
        );
        assert_eq!(engine_packet("2"), Ok(EnginePacket::Ping(String::new())));
        assert_eq!(engine_packet("2probe"), Ok(EnginePacket::Ping("probe".into())));
        assert_eq!(engine_packet("40"), Ok(EnginePacket::Message("0".into())));
        assert_eq!(engine_packet("1"), Ok(EnginePacket::Close));
        assert_eq!(engine_packet("6"), Ok(EnginePacket::Ignored));
        for bad in ["", "9", "0{", r#"0{"sid":"x"}"#] {
            assert!(engine_packet(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn socket_packets() {
        let cases: Vec<(&str, SocketPacket)> = vec![
            (r#"0{"sid":"x"}"#, SocketPacket::Connect),
            ("1", SocketPacket::Disconnect),
            (
                r#"2["nexus_alert",{"id":"a1"}]"#,
                SocketPacket::Event { name: "nexus_alert".into(), args: vec![json!({"id":"a1"})] },
            ),
            (
                r#"212["nexus_alert","{\"id\":\"s\"}"]"#,
                SocketPacket::Event { name: "nexus_alert".into(), args: vec![json!("{\"id\":\"s\"}")] },
            ),
            (r#"2/,["x"]"#, SocketPacket::Event { name: "x".into(), args: vec![] }),
            (r#"2/admin,["nexus_alert",{}]"#, SocketPacket::Ignored),
            (r#"4{"message":"Not allowed"}"#, SocketPacket::ConnectError("Not allowed".into())),
            (r#"51-["nexus_alert",{"_placeholder":true,"num":0}]"#, SocketPacket::Ignored),
            ("3[1]", SocketPacket::Ignored),
        ];
        for (text, want) in cases {
            assert_eq!(socket_packet(text), Ok(want), "{text}");
        }
        for bad in ["", "2{", "2[1]", "2[]", "8"] {
            assert!(socket_packet(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_arguments_to_alerts() {
        let one = json!({"id":"a1"});
        assert_eq!(alerts_of(vec![one.clone()]), vec![one.clone()]);
        assert_eq!(alerts_of(vec![json!([one.clone(), one.clone()])]).len(), 2);
        assert_eq!(alerts_of(vec![one.clone(), json!("{\"id\":\"s\"}")]).len(), 2);
        assert!(alerts_of(vec![]).is_empty());
    }
}
