//! The VAEL UI's Flask-SocketIO message queue: publish the JSON message python-socketio's
//! pub/sub manager reads, and every UI server broadcasts the event to its browsers.
//!
//! Format, checked against python-socketio 5.18.1 `pubsub_manager.py` / `redis_manager.py`
//! (queue messages are JSON since 5.14; earlier releases pickled them — the UI needs ≥ 5.14):
//! `{"method":"emit","event":…,"data":…,"binary":false,"namespace":"/","room":null,
//! "skip_sid":null,"callback":null,"host_id":…}`. `data` is the summary object, not the
//! one-element list 5.18's own publisher sends: the receiver unwraps such a list, but hands a
//! non-list `data` to the clients as is, so an object works whether or not it unwraps.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};

use super::config::redact;
use super::{NotifyEvent, SendError};

/// The pub/sub message for one event.
pub fn pubsub_message(event: &str, data: &Value, namespace: &str, room: Option<&str>, host_id: &str) -> Value {
    json!({
        "method": "emit",
        "event": event,
        "data": data,
        "binary": false,
        "namespace": namespace,
        "room": room,
        "skip_sid": null,
        "callback": null,
        "host_id": host_id,
    })
}

pub struct RedisSink {
    client: redis::Client,
    url: String,
    channel: String,
    namespace: String,
    room: Option<String>,
    host_id: String,
    require_subscriber: bool,
    timeout: Duration,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl RedisSink {
    pub fn new(config: &super::NotifyConfig, url: &str, host_id: String) -> Result<Self, crate::validate::Invalid> {
        let client = redis::Client::open(url).map_err(|e| format!("{}: {e}", redact(url)))?;
        Ok(Self {
            client,
            url: redact(url),
            channel: config.channel.clone(),
            namespace: config.namespace.clone(),
            room: config.room.clone(),
            host_id,
            require_subscriber: config.require_subscriber,
            timeout: Duration::from_millis(config.delivery.timeout_ms),
            connection: tokio::sync::Mutex::default(),
        })
    }

    /// The cached connection, or a new one.
    async fn connection(&self) -> Result<MultiplexedConnection, SendError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = connect(&self.client, self.timeout)
            .await
            .map_err(|e| SendError::retry(format!("cannot connect to {}: {e}", self.url)))?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn forget_connection(&self) {
        self.connection.lock().await.take();
    }

    pub async fn send(&self, event: &NotifyEvent) -> Result<(), SendError> {
        let message = pubsub_message(event.event, &event.data, &self.namespace, self.room.as_deref(), &self.host_id);
        let payload = serde_json::to_string(&message).map_err(|e| SendError::permanent(e.to_string()))?;
        let mut connection = self.connection().await?;
        let published: redis::RedisResult<i64> =
            redis::cmd("PUBLISH").arg(&self.channel).arg(&payload).query_async(&mut connection).await;
        let receivers = match published {
            Ok(n) => n,
            Err(e) => {
                self.forget_connection().await;
                return Err(SendError::retry(format!("PUBLISH on {} at {}: {e}", self.channel, self.url)));
            }
        };
        if receivers == 0 && self.require_subscriber {
            // Pub/sub keeps nothing: with no UI server subscribed the event reached nobody.
            return Err(SendError::retry(format!(
                "no Socket.IO server is subscribed to channel {:?} at {}",
                self.channel, self.url
            )));
        }
        Ok(())
    }
}

async fn connect(client: &redis::Client, timeout: Duration) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// `check-config`: connect and PING within `timeout`.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| format!("{}: {e}", redact(url)))?;
    let ping = async {
        let mut connection = connect(&client, timeout).await?;
        redis::cmd("PING").query_async::<String>(&mut connection).await
    };
    match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot reach Redis at {}: {e}", redact(url))),
        Err(_) => Err(format!("cannot reach Redis at {}: no answer within {timeout:?}", redact(url))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_what_python_socketio_pubsub_reads() {
        let data = json!({"id": "plan-a", "actions": [{"type": "restart", "target": "VAEL_Core"}]});
        let cases = [(None, json!(null)), (Some("ops"), json!("ops"))];
        for (room, want_room) in cases {
            let message = pubsub_message("patch_applied", &data, "/", room, "antibody-7");
            assert_eq!(
                message,
                json!({
                    "method": "emit", "event": "patch_applied", "data": data, "binary": false,
                    "namespace": "/", "room": want_room, "skip_sid": null, "callback": null,
                    "host_id": "antibody-7",
                })
            );
        }
    }
}
