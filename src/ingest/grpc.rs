//! gRPC: the NEXUS `NexusFeed.Subscribe` subscriber, and Antibody's own `AlertIntake.Submit`
//! service (with gRPC reflection) on `--grpc-addr`. Code generated from proto/nexus.proto.
//!
//! The subscriber reconnects with exponential backoff and jitter, and resumes after the last
//! alert it handled (`resume_after_id`), so a NEXUS that supports it neither loses nor repeats an
//! alert across a disconnect; one that does not gets its repeats deduplicated by plan name.
//!
//! It also talks to a NEXUS generated from the original's plain `nexus.proto` (no package,
//! `service NexusFeed`, a message whose only field is `string json = 1`): when
//! `/nexus.v1.NexusFeed/Subscribe` answers UNIMPLEMENTED it subscribes to `/NexusFeed/Subscribe`
//! (and remembers which one worked), and a message whose field 1 holds a JSON object while the
//! typed fields are empty is read as that envelope. `--nexus-grpc default` is the original's
//! `localhost:7007`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::Intake;
use super::tokens::{Denied, Scope, TokenStore};
use crate::alert::ThreatAlert;
use crate::report::AlertOutcome;

#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("nexus.v1");

    /// Encoded FileDescriptorSet of nexus.proto, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nexus_descriptor.bin"));
}

use proto::alert_intake_server::{AlertIntake, AlertIntakeServer};
use proto::{SubmitReply, SubscribeRequest};

/// Feed names in metrics and audit.
pub const FEED: &str = "grpc";
pub const INTAKE_FEED: &str = "grpc_intake";

/// The original's dial address, for `--nexus-grpc default`.
pub const DEFAULT_NEXUS: &str = "http://localhost:7007";
/// Service paths: this repo's proto, then the original's package-less one.
const PACKAGED_SUBSCRIBE: &str = "/nexus.v1.NexusFeed/Subscribe";
const PLAIN_SUBSCRIBE: &str = "/NexusFeed/Subscribe";

/// The original's plain proto carries the envelope as `string json = 1`, which this proto reads
/// as `id`: field 1 holding a JSON object while every typed field is empty.
fn plain_json(message: &proto::ThreatAlert) -> Option<&str> {
    let typed_empty = message.json.is_empty()
        && message.source.is_empty()
        && message.category.is_empty()
        && message.severity.is_empty()
        && message.msg.is_empty();
    (typed_empty && message.id.trim_start().starts_with('{')).then_some(message.id.as_str())
}

/// A wire alert → a validated alert. `json`, when set, is the whole envelope.
pub fn alert_from_proto(message: &proto::ThreatAlert) -> Result<ThreatAlert, String> {
    if !message.json.is_empty() {
        return ThreatAlert::from_json(&message.json);
    }
    if let Some(json) = plain_json(message) {
        return ThreatAlert::from_json(json);
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
    let json = if message.json.is_empty() { plain_json(message).unwrap_or("") } else { message.json.as_str() };
    if !json.is_empty()
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(json)
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
    let url = if url == "default" { DEFAULT_NEXUS } else { url };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url:?}: expected http://HOST:PORT (or `default`: {DEFAULT_NEXUS})"));
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
    let mut path = PACKAGED_SUBSCRIBE;
    loop {
        let end = tokio::select! {
            end = subscribe_once(&endpoint, &intake, &mut last_id, &mut failures, &mut path) => end,
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

/// One server-streaming `Subscribe` call on `path` (either service name; same messages).
async fn subscribe_call(
    channel: tonic::transport::Channel,
    path: &'static str,
    request: SubscribeRequest,
) -> Result<tonic::codec::Streaming<proto::ThreatAlert>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<SubscribeRequest, proto::ThreatAlert>::default();
    let path = axum::http::uri::PathAndQuery::from_static(path);
    Ok(grpc.server_streaming(Request::new(request), path, codec).await?.into_inner())
}

async fn subscribe_once(
    endpoint: &Endpoint,
    intake: &Intake,
    last_id: &mut Option<String>,
    failures: &mut u32,
    path: &mut &'static str,
) -> StreamEnd {
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => return StreamEnd::Failed(format!("connect: {e}")),
    };
    let request = SubscribeRequest {
        resume_after_id: last_id.clone().unwrap_or_default(),
        subscriber: format!("antibody-{}", std::process::id()),
    };
    let mut stream = match subscribe_call(channel.clone(), path, request.clone()).await {
        Ok(stream) => stream,
        // A NEXUS built from the original's package-less proto: try its service name.
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            let other = if *path == PACKAGED_SUBSCRIBE { PLAIN_SUBSCRIBE } else { PACKAGED_SUBSCRIBE };
            match subscribe_call(channel, other, request).await {
                Ok(stream) => {
                    info!(from = *path, to = other, "NEXUS: switching service name");
                    *path = other;
                    stream
                }
                Err(status) => return StreamEnd::Failed(format!("subscribe ({path} and {other}): {status}")),
            }
        }
        Err(status) => return StreamEnd::Failed(format!("subscribe: {status}")),
    };
    info!(resume_after_id = last_id.as_deref().unwrap_or(""), path = *path, "subscribed to the NEXUS alert feed");
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

/// UNAUTHENTICATED for no valid token, PERMISSION_DENIED for a token without the scope.
pub fn status_of(denied: Denied) -> Status {
    match denied {
        Denied::Unauthenticated(_) => Status::unauthenticated(denied.to_string()),
        Denied::MissingScope { .. } => Status::permission_denied(denied.to_string()),
    }
}

#[tonic::async_trait]
impl AlertIntake for IntakeService {
    async fn submit(&self, request: Request<proto::ThreatAlert>) -> Result<Response<SubmitReply>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let requester = self.tokens.get().authorize(header, Scope::Ingest).map_err(status_of)?.to_string();
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

    /// The original's plain proto: `message ThreatAlert { string json = 1; }` on the wire.
    #[test]
    fn plain_proto_json_in_field_one() {
        use prost::Message;
        #[derive(Clone, PartialEq, prost::Message)]
        struct PlainAlert {
            #[prost(string, tag = "1")]
            json: String,
        }
        let envelope = r#"{"id":"p1","source":"Sentinel","category":"policy","severity":"high","msg":"profanity"}"#;
        let wire = PlainAlert { json: envelope.into() }.encode_to_vec();
        let message = proto::ThreatAlert::decode(wire.as_slice()).expect("decodes as this proto");
        let alert = alert_from_proto(&message).expect("field 1 read as the envelope");
        assert_eq!((alert.id.as_str(), alert.category.as_str()), ("p1", "policy"));
        let dup = PlainAlert { json: r#"{"id":"p2","id":"p3","source":"N","category":"c"}"#.into() }.encode_to_vec();
        let message = proto::ThreatAlert::decode(dup.as_slice()).expect("decodes");
        assert!(alert_from_proto(&message).expect_err("ambiguous").contains("duplicate key \"id\""));
        // A typed alert whose id merely starts with '{' is not taken for JSON.
        assert_eq!(alert_from_proto(&typed("{x", "high", None)).expect("typed").id, "{x");
    }

    #[test]
    fn endpoints_and_replies() {
        assert!(endpoint("default").is_ok_and(|e| *e.uri() == "http://localhost:7007/"));
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
