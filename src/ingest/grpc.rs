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
//! `localhost:7007`. `https://` dials with TLS: trust roots from `--nexus-ca` or the system store;
//! with neither usable the flag is refused at startup (not accepted and failing at every dial).
//!
//! Intake hardening (issue 17): [`GuardedIntake`] sits in front of the generated service and
//! checks the bearer token on the request headers *before* any body byte is read or decoded, so
//! an unauthenticated caller costs a header parse and the HTTP/2 flow-control window (64 KiB per
//! stream), never a decoded message. Authenticated calls then need one of
//! [`GrpcLimits::max_concurrent_calls`] permits (none free: RESOURCE_EXHAUSTED at once, no queue)
//! and are decoded with `ingest.max_body_bytes` as the message limit, read from the live config
//! per call: a hot reload applies to the calls that start after it. A message announced bigger
//! than that is refused from its 5-byte length prefix (RESOURCE_EXHAUSTED), before buffering.
//! The HTTP/2 side bounds streams per connection, requests in flight per connection, header list
//! size, pending-accept resets and call duration (see [`GrpcLimits`]). Reflection, which needs
//! no token, decodes requests of at most 16 KiB.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, Bytes, Service, StdError};
use tonic::server::NamedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Server};
use tonic::{Code, Request, Response, Status};
use tracing::{info, warn};

use super::Intake;
use crate::alert::{AlertError, ThreatAlert};
use crate::report::AlertOutcome;
use crate::tokens::{Denied, Scope, TokenStore};

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
pub fn alert_from_proto(message: &proto::ThreatAlert) -> Result<ThreatAlert, AlertError> {
    if !message.json.is_empty() {
        return ThreatAlert::from_json(&message.json);
    }
    if let Some(json) = plain_json(message) {
        return ThreatAlert::from_json(json);
    }
    let severity = message.severity.parse().map_err(|e: String| AlertError::Field(format!("severity: {e}")))?;
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

/// The NEXUS dial: `http://` plaintext, `https://` TLS with the roots of `ca_file` (PEM) or,
/// without it, of the system store. Everything that cannot work is an error here, at startup.
pub fn endpoint(url: &str, ca_file: Option<&Path>) -> Result<Endpoint, crate::validate::Invalid> {
    let url = if url == "default" { DEFAULT_NEXUS } else { url };
    let https = url.starts_with("https://");
    if !(url.starts_with("http://") || https) {
        return Err(
            format!("{url:?}: expected http://HOST:PORT or https://HOST:PORT (or `default`: {DEFAULT_NEXUS})").into()
        );
    }
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| format!("{url:?}: {e}"))?;
    let endpoint = match (https, ca_file) {
        (false, None) => endpoint,
        (false, Some(ca)) => {
            return Err(format!("--nexus-ca {} is set but {url:?} is plaintext: use https://", ca.display()).into());
        }
        (true, Some(ca)) => {
            let pem = crate::tls::read_ca_pem(ca)?;
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            endpoint.tls_config(tls).map_err(|e| format!("{url:?}: TLS: {e}"))?
        }
        (true, None) => {
            let found = rustls_native_certs::load_native_certs().certs.len();
            if found == 0 {
                return Err(format!(
                    "{url:?}: https:// needs trust roots and the system store has none: pass --nexus-ca FILE"
                )
                .into());
            }
            let tls = ClientTlsConfig::new().with_native_roots();
            endpoint.tls_config(tls).map_err(|e| format!("{url:?}: TLS: {e}"))?
        }
    };
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
        let delay = super::reconnect_backoff(&intake.config().ingest).delay(failures);
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

/// `AlertIntake`: one alert per call. Authentication happened in [`GuardedIntake`], which
/// hands the requester over in the request extensions.
pub struct IntakeService {
    intake: Arc<Intake>,
}

/// The token name that authenticated a call (put in the request extensions by [`GuardedIntake`]).
#[derive(Debug, Clone)]
pub struct Requester(pub String);

/// Bounds of the gRPC intake listener. Memory held by calls in flight is at most about
/// `max_concurrent_calls × 2 × ingest.max_body_bytes` (the buffered frame and the decoded
/// message) plus 64 KiB of flow-control window per open stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Authenticated calls in flight on the whole listener; beyond: RESOURCE_EXHAUSTED.
    pub max_concurrent_calls: usize,
    /// HTTP/2 streams a client may open on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Requests served at once on one connection; the rest wait for a slot.
    pub per_connection_calls: usize,
    /// Longest a call may take, grpc-timeout or not.
    pub call_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 32,
            max_concurrent_streams: 64,
            per_connection_calls: 16,
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// Largest header list a client may send (the bearer token is small; metadata is not a payload).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Largest reflection request (a file or symbol name, a few hundred bytes in practice).
const REFLECTION_MAX_MESSAGE: usize = 16 * 1024;
/// Streams a client may reset before they were accepted (the HTTP/2 "rapid reset" bound).
const MAX_PENDING_ACCEPT_RESETS: usize = 32;

/// Authentication, the global call limit and the live decode limit in front of `AlertIntake`.
/// A tower service so it runs on the HTTP request, before the body is touched.
#[derive(Clone)]
pub struct GuardedIntake {
    service: Arc<IntakeService>,
    intake: Arc<Intake>,
    tokens: Arc<TokenStore>,
    calls: Arc<Semaphore>,
}

impl GuardedIntake {
    pub fn new(intake: Arc<Intake>, tokens: Arc<TokenStore>, max_concurrent_calls: usize) -> Self {
        let service = Arc::new(IntakeService { intake: intake.clone() });
        Self { service, intake, tokens, calls: Arc::new(Semaphore::new(max_concurrent_calls)) }
    }
}

impl NamedService for GuardedIntake {
    const NAME: &'static str = <AlertIntakeServer<IntakeService> as NamedService>::NAME;
}

type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<B> Service<tonic::codegen::http::Request<B>> for GuardedIntake
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: tonic::codegen::http::Request<B>) -> Self::Future {
        let refuse = |status: Status| -> Self::Future { Box::pin(std::future::ready(Ok(status.into_http()))) };
        // The body is dropped unread when this refuses: nothing of it is decoded.
        let header = request.headers().get("authorization").and_then(|v| v.to_str().ok());
        match self.tokens.get().authorize(header, Scope::Ingest) {
            Ok(name) => {
                request.extensions_mut().insert(Requester(name.to_string()));
            }
            Err(denied) => return refuse(status_of(denied)),
        }
        let Ok(permit) = self.calls.clone().try_acquire_owned() else {
            return refuse(Status::resource_exhausted("too many gRPC intake calls in flight: retry later"));
        };
        let limit = self.intake.config().ingest.max_body_bytes;
        let mut server = AlertIntakeServer::from_arc(self.service.clone()).max_decoding_message_size(limit);
        Box::pin(async move {
            let response = server.call(request).await;
            drop(permit);
            response.map(|response| oversize_as_resource_exhausted(response, limit))
        })
    }
}

/// tonic answers a message over the decode limit with OUT_OF_RANGE; gRPC's convention (and what
/// grpc-go / C-core clients expect) is RESOURCE_EXHAUSTED. The handler never says OUT_OF_RANGE,
/// so that code here always means the decoder's refusal.
fn oversize_as_resource_exhausted(response: HttpResponse, limit: usize) -> HttpResponse {
    let out_of_range = (Code::OutOfRange as i32).to_string();
    match response.headers().get("grpc-status") {
        Some(code) if code.as_bytes() == out_of_range.as_bytes() => Status::resource_exhausted(format!(
            "alert message larger than ingest.max_body_bytes ({limit} bytes): refused before decoding"
        ))
        .into_http(),
        _ => response,
    }
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
            SubmitReply { outcome: name, reason: reason.to_string(), message: message.clone(), ..Default::default() }
        }
        AlertOutcome::Resolved { plan, result } => {
            SubmitReply { outcome: name, plan: plan.clone(), reason: result.clone(), ..Default::default() }
        }
        AlertOutcome::Escalated { plan, step, from } => SubmitReply {
            outcome: name,
            plan: plan.clone(),
            message: format!("step {step}, escalated from plan {from}"),
            ..Default::default()
        },
        AlertOutcome::Paged { rule, target } => SubmitReply {
            outcome: name,
            reason: rule.clone(),
            message: format!("escalation exhausted for {target}: a human is paged, its breaker is open"),
            ..Default::default()
        },
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
        // Only GuardedIntake routes here, after authenticating; no requester = a wiring bug.
        let requester = match request.extensions().get::<Requester>() {
            Some(Requester(name)) => name.clone(),
            None => return Err(Status::unauthenticated("no authenticated requester")),
        };
        let message = request.into_inner();
        match alert_from_proto(&message) {
            Ok(alert) => {
                let outcome = self.intake.submit(&alert, INTAKE_FEED, &requester).await;
                Ok(Response::new(reply(&outcome)))
            }
            Err(error) => {
                self.intake.refuse_invalid(&id_hint(&message), INTAKE_FEED, &requester, error.clone());
                Err(Status::invalid_argument(error.to_string()))
            }
        }
    }
}

/// Serve `AlertIntake` plus reflection (v1 and v1alpha, for older grpcurl) until `shutdown`;
/// over TLS when `tls` is given (certificates re-read when their files change).
pub async fn serve(
    addr: SocketAddr,
    intake: Arc<Intake>,
    tokens: Arc<TokenStore>,
    limits: GrpcLimits,
    tls: Option<Arc<crate::tls::ServerTls>>,
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
    // Reflection is unauthenticated (grpcurl list): its requests are a symbol name, so its
    // decode limit is small, or it would be the 4 MiB-per-message hole the intake closed.
    let reflection = builder().build_v1().map_err(|e| io(&e))?.max_decoding_message_size(REFLECTION_MAX_MESSAGE);
    let reflection_alpha =
        builder().build_v1alpha().map_err(|e| io(&e))?.max_decoding_message_size(REFLECTION_MAX_MESSAGE);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, tls = tls.is_some(), ?limits, "gRPC alert intake listening");
    let router = Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .concurrency_limit_per_connection(limits.per_connection_calls)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .timeout(limits.call_timeout)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(GuardedIntake::new(intake, tokens, limits.max_concurrent_calls));
    let stopped = async move { shutdown.cancelled().await };
    match tls {
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            router.serve_with_incoming_shutdown(incoming, stopped).await
        }
        Some(tls) => {
            let incoming = crate::tls::accept(listener, tls, crate::tls::GRPC_ALPN).map_err(|e| io(&e))?.into_stream();
            router.serve_with_incoming_shutdown(incoming, stopped).await
        }
    }
    .map_err(|e| io(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;
    use crate::reason::Reason;

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
            assert!(error.to_string().contains(want), "{message:?}: {error}");
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
        assert!(alert_from_proto(&message).expect_err("ambiguous").to_string().contains("duplicate key \"id\""));
        // A typed alert whose id merely starts with '{' is not taken for JSON.
        assert_eq!(alert_from_proto(&typed("{x", "high", None)).expect("typed").id, "{x");
    }

    #[test]
    fn endpoints_and_replies() {
        assert!(endpoint("default", None).is_ok_and(|e| *e.uri() == "http://localhost:7007/"));
        assert!(endpoint("http://127.0.0.1:50051", None).is_ok());
        assert!(endpoint("127.0.0.1:50051", None).is_err());
        assert!(endpoint("ftp://x", None).is_err());
        let plaintext_with_ca = endpoint("http://127.0.0.1:50051", Some(Path::new("/etc/hostname")));
        assert!(plaintext_with_ca.is_err_and(|e| e.contains("use https://")));
        let missing_ca = endpoint("https://127.0.0.1:50051", Some(Path::new("/nonexistent/ca.pem")));
        assert!(missing_ca.is_err_and(|e| e.contains("/nonexistent/ca.pem")));
        let r = reply(&AlertOutcome::CooledDown { target: "VAEL_Core".into(), plan: "hb-1".into() });
        assert_eq!((r.outcome.as_str(), r.plan.as_str()), ("cooled_down", "hb-1"));
        let r = reply(&AlertOutcome::Refused { reason: Reason::NotAllowed, message: "no".into() });
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
