//! gRPC: the NEXUS `NexusFeed.Subscribe` subscriber, and Antibody's own `AlertIntake.Submit`
//! service (with gRPC reflection) on `--grpc-addr`. Code generated from proto/nexus.proto.
//!
//! The subscriber reconnects with exponential backoff and jitter, and resumes after the last
//! alert it handled (`resume_after_id`), so a NEXUS that supports it neither loses nor repeats an
//! alert across a disconnect; one that does not gets its repeats deduplicated by plan name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::Intake;
use super::tokens::TokenStore;
use crate::alert::ThreatAlert;
use crate::report::AlertOutcome;

#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("nexus.v1");

    /// Encoded FileDescriptorSet of nexus.proto, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nexus_descriptor.bin"));
}

use proto::alert_intake_server::{AlertIntake, AlertIntakeServer};
use proto::nexus_feed_client::NexusFeedClient;
use proto::{SubmitReply, SubscribeRequest};

/// Feed names in metrics and audit.
pub const FEED: &str = "grpc";
pub const INTAKE_FEED: &str = "grpc_intake";

/// A wire alert → a validated alert. `json`, when set, is the whole envelope.
pub fn alert_from_proto(message: &proto::ThreatAlert) -> Result<ThreatAlert, String> {
    if !message.json.is_empty() {
        return ThreatAlert::from_json(&message.json);
    }
    let severity = message.severity.parse().map_err(|e: String| format!("severity: {e}"))?;
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let alert = ThreatAlert {
        id: message.id.clone(),
        source: message.source.clone(),
        category: message.category.clone(),
        severity,
        msg: message.msg.clone(),
        patch_hint: non_empty(&message.patch_hint),
        ts: non_empty(&message.ts),
    };
    alert.validate()?;
    Ok(alert)
}

/// Best-effort id of a wire alert that did not validate.
fn id_hint(message: &proto::ThreatAlert) -> String {
    if !message.json.is_empty()
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(&message.json)
    {
        let id = super::id_hint(&value);
        if id != "-" {
            return id;
        }
    }
    let id = &message.id;
    if !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic()) { id.clone() } else { "-".into() }
}

pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url:?}: expected http://HOST:PORT"));
    }
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| format!("{url:?}: {e}"))?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5)))
}

/// Why one subscription ended.
enum StreamEnd {
    /// The server closed a live stream cleanly.
    Closed,
    /// A live stream broke.
    Lost(String),
    /// No stream was established (connect or subscribe failed).
    Failed(String),
}

/// Subscribe until `shutdown`, reconnecting with backoff; never returns early.
pub async fn subscribe(endpoint: Endpoint, intake: Arc<Intake>, shutdown: CancellationToken) {
    let url = endpoint.uri().to_string();
    let mut last_id: Option<String> = None;
    let mut failures: u32 = 0;
    loop {
        let end = tokio::select! {
            end = subscribe_once(&endpoint, &intake, &mut last_id, &mut failures) => end,
            _ = shutdown.cancelled() => return,
        };
        let last = last_id.as_deref().unwrap_or("");
        match end {
            StreamEnd::Closed => {
                info!(%url, last_id = last, "NEXUS closed the alert stream");
                intake.metrics().feed_reconnect(FEED);
            }
            StreamEnd::Lost(error) => {
                warn!(%url, %error, last_id = last, "NEXUS alert stream lost");
                intake.metrics().feed_reconnect(FEED);
            }
            StreamEnd::Failed(error) => warn!(%url, %error, last_id = last, "cannot subscribe to NEXUS"),
        }
        let delay = intake.config().ingest.reconnect_backoff().delay(failures);
        failures = failures.saturating_add(1);
        info!(%url, delay_ms = delay.as_millis() as u64, attempt = failures, "reconnecting to NEXUS");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn subscribe_once(
    endpoint: &Endpoint,
    intake: &Intake,
    last_id: &mut Option<String>,
    failures: &mut u32,
) -> StreamEnd {
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => return StreamEnd::Failed(format!("connect: {e}")),
    };
    let mut client = NexusFeedClient::new(channel);
    let request = SubscribeRequest {
        resume_after_id: last_id.clone().unwrap_or_default(),
        subscriber: format!("antibody-{}", std::process::id()),
    };
    let mut stream = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return StreamEnd::Failed(format!("subscribe: {status}")),
    };
    info!(resume_after_id = last_id.as_deref().unwrap_or(""), "subscribed to the NEXUS alert feed");
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                // A live stream: the next disconnect starts the backoff over.
                *failures = 0;
                let handled_id = match alert_from_proto(&message) {
                    Ok(alert) => {
                        let requester = alert.source.clone();
                        intake.submit(&alert, FEED, &requester).await;
                        Some(alert.id)
                    }
                    Err(error) => {
                        let id = id_hint(&message);
                        intake.refuse_invalid(&id, FEED, "nexus", error);
                        (id != "-").then_some(id)
                    }
                };
                if handled_id.is_some() {
                    *last_id = handled_id;
                }
            }
            Ok(None) => return StreamEnd::Closed,
            Err(status) => return StreamEnd::Lost(status.to_string()),
        }
    }
}

/// `AlertIntake`: one alert per call, bearer token in the `authorization` metadata.
pub struct IntakeService {
    intake: Arc<Intake>,
    tokens: Arc<TokenStore>,
}

pub fn reply(outcome: &AlertOutcome) -> SubmitReply {
    let name = outcome.name().to_string();
    match outcome {
        AlertOutcome::PlanCreated { plan } | AlertOutcome::Deduplicated { plan } => {
            SubmitReply { outcome: name, plan: plan.clone(), ..Default::default() }
        }
        AlertOutcome::CooledDown { target, plan } => SubmitReply {
            outcome: name,
            plan: plan.clone(),
            message: format!("{target} is cooling down after plan {plan}"),
            ..Default::default()
        },
        AlertOutcome::Ignored { rule } => SubmitReply { outcome: name, reason: rule.clone(), ..Default::default() },
        AlertOutcome::Refused { reason, message } => {
            SubmitReply { outcome: name, reason: reason.clone(), message: message.clone(), ..Default::default() }
        }
    }
}

#[tonic::async_trait]
impl AlertIntake for IntakeService {
    async fn submit(&self, request: Request<proto::ThreatAlert>) -> Result<Response<SubmitReply>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let requester = self.tokens.get().authorize(header).map_err(Status::unauthenticated)?.to_string();
        let message = request.into_inner();
        match alert_from_proto(&message) {
            Ok(alert) => {
                let outcome = self.intake.submit(&alert, INTAKE_FEED, &requester).await;
                Ok(Response::new(reply(&outcome)))
            }
            Err(error) => {
                self.intake.refuse_invalid(&id_hint(&message), INTAKE_FEED, &requester, error.clone());
                Err(Status::invalid_argument(error))
            }
        }
    }
}

/// Serve `AlertIntake` plus reflection (v1 and v1alpha, for older grpcurl) until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    intake: Arc<Intake>,
    tokens: Arc<TokenStore>,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let io = |e: &dyn std::fmt::Display| crate::Error::Io(std::io::Error::other(e.to_string()));
    // Advertise what is served here: AlertIntake and reflection, not NexusFeed (same .proto).
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .with_service_name(<AlertIntakeServer<IntakeService> as tonic::server::NamedService>::NAME)
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection = builder().build_v1().map_err(|e| io(&e))?;
    let reflection_alpha = builder().build_v1alpha().map_err(|e| io(&e))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "gRPC alert intake listening");
    Server::builder()
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(AlertIntakeServer::new(IntakeService { intake, tokens }))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async move {
            shutdown.cancelled().await
        })
        .await
        .map_err(|e| io(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;

    fn typed(id: &str, severity: &str, hint: Option<&str>) -> proto::ThreatAlert {
        proto::ThreatAlert {
            id: id.into(),
            source: "NEXUS".into(),
            category: "heartbeat".into(),
            severity: severity.into(),
            msg: "Pulse missed".into(),
            patch_hint: hint.map(Into::into),
            ts: Some("2025-05-30T12:34:56Z".into()),
            json: String::new(),
        }
    }

    #[test]
    fn typed_and_json_envelopes() {
        let a = alert_from_proto(&typed("a1", "high", Some("restart:VAEL_Core"))).expect("typed");
        assert_eq!((a.id.as_str(), a.severity), ("a1", Severity::High));
        assert_eq!(a.patch_hint.as_deref(), Some("restart:VAEL_Core"));
        let empty_hint = alert_from_proto(&typed("a1", "WARNING", Some(""))).expect("empty hint = none");
        assert_eq!((empty_hint.patch_hint, empty_hint.severity), (None, Severity::Warn));

        let json = proto::ThreatAlert {
            id: "ignored-when-json-is-set".into(),
            json: r#"{"id":"j1","source":"NEXUS","category":"policy","severity":"high","patch_hint":"reload_flask:VAEL_UI"}"#
                .into(),
            ..Default::default()
        };
        let j = alert_from_proto(&json).expect("json envelope");
        assert_eq!((j.id.as_str(), j.category.as_str()), ("j1", "policy"));

        let bad: &[(proto::ThreatAlert, &str, &str)] = &[
            (typed("a1", "urgent", None), "unknown severity", "a1"),
            (typed("", "high", None), "id is missing", "-"),
            (typed("a2", "high", Some("restart:../x")), "invalid target", "a2"),
            (typed("a3", "high", Some("edit_env:VAEL_Core:K=V\nX=Y")), "control character", "a3"),
            (
                proto::ThreatAlert { json: "{nope".into(), id: "wire-id".into(), ..Default::default() },
                "malformed",
                "wire-id",
            ),
            (
                proto::ThreatAlert {
                    json: r#"{"id":"j2","source":"N","category":"c","severity":"x"}"#.into(),
                    ..Default::default()
                },
                "unknown variant",
                "j2",
            ),
        ];
        for (message, want, id) in bad {
            let error = alert_from_proto(message).expect_err(want);
            assert!(error.contains(want), "{message:?}: {error}");
            assert_eq!(id_hint(message), *id);
        }
    }

    #[test]
    fn endpoints_and_replies() {
        assert!(endpoint("http://127.0.0.1:50051").is_ok());
        assert!(endpoint("127.0.0.1:50051").is_err());
        assert!(endpoint("ftp://x").is_err());
        let r = reply(&AlertOutcome::CooledDown { target: "VAEL_Core".into(), plan: "hb-1".into() });
        assert_eq!((r.outcome.as_str(), r.plan.as_str()), ("cooled_down", "hb-1"));
        let r = reply(&AlertOutcome::Refused { reason: "NotAllowed".into(), message: "no".into() });
        assert_eq!((r.outcome.as_str(), r.reason.as_str(), r.plan.as_str()), ("refused", "NotAllowed", ""));
    }

    #[test]
    fn descriptor_set_lists_both_services() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
        let services: Vec<String> =
            set.file.iter().flat_map(|f| f.service.iter().map(|s| s.name().to_string())).collect();
        assert_eq!(services, ["NexusFeed", "AlertIntake"]);
    }
}
