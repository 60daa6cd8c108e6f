//! Live plan news for the VAEL UI: Socket.IO (socketioxide, namespace `/`, on the same axum
//! listener as `/metrics`) emits `patch_applied` when a plan's `PatchApplied` turns True,
//! `patch_unverified` when it ended without an observed effect and `patch_failed` when it
//! fails, each with [`plan_summary`]. `GET /api/antibody/plans` lists recent plans, newest
//! first, for a UI that connects late.
//!
//! Both need a token with scope `read` ([`super::access`]): the API an `Authorization: Bearer`
//! header, a Socket.IO connect its `auth` payload (`{"token": …}`) or that header on the
//! handshake; a connect without one is refused with a `connect_error` saying why. A `read`
//! token sees values and messages redacted, a `reveal` token sees them: each socket joins the
//! room of its visibility and every event is emitted once per room, in its form for that room.
//! After a token file reload, connected sockets are checked again before the next event: a
//! socket whose token lost `read` is disconnected and hears nothing more.
//!
//! Every replica serves this from its own watch of PatchPlan status ([`Broadcast::follow`]),
//! not from the leader's reconciler: a UI connected to a standby hears the same outcomes, and
//! each (plan, outcome) is emitted once per replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use jiff::Timestamp;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Sid;
use socketioxide::{SocketIo, adapter::LocalAdapter};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::access::{Visibility, authorize_read, authorize_socket, visibility_by_name};
use super::summary::plan_summary;
use super::{ReportedTransitions, TransitionKind, terminal_transition};
use crate::plan::PatchPlan;
use crate::tokens::denied_response;
use crate::tokens::{Denied, TokenStore, Tokens};

pub const PATCH_APPLIED_EVENT: &str = "patch_applied";
pub const PATCH_FAILED_EVENT: &str = "patch_failed";
/// Every action carried out, not every effect observed: never announced as `patch_applied`.
pub const PATCH_UNVERIFIED_EVENT: &str = "patch_unverified";
/// Plans kept for `GET /api/antibody/plans`.
pub const RECENT_PLANS: usize = 200;
/// (plan, outcome) pairs remembered as announced: far more than plans finish between two
/// listings of the watch.
const ANNOUNCED_CAPACITY: usize = 20_000;

/// The socket.io event a transition is announced with, if any.
pub fn event_for(kind: TransitionKind) -> Option<&'static str> {
    kind.broadcast().then(|| kind.name())
}

fn name_of(plan: &PatchPlan) -> &str {
    plan.metadata.name.as_deref().unwrap_or_default()
}

struct Entry {
    key: String,
    created: Option<Timestamp>,
    name: String,
    summary: Value,
}

/// The newest plans (by creation time), each with its latest summary. Bounded.
pub struct RecentPlans {
    capacity: usize,
    /// Newest first.
    entries: Vec<Entry>,
}

impl RecentPlans {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: Vec::new() }
    }

    fn key(plan: &PatchPlan) -> String {
        plan.metadata
            .uid
            .clone()
            .unwrap_or_else(|| format!("{}/{}", plan.metadata.namespace.as_deref().unwrap_or_default(), name_of(plan)))
    }

    /// Insert or replace `plan`'s summary (`replace: false` keeps a newer one already there).
    pub fn upsert(&mut self, plan: &PatchPlan, replace: bool) {
        let key = Self::key(plan);
        if let Some(index) = self.entries.iter().position(|e| e.key == key) {
            if !replace {
                return;
            }
            self.entries.remove(index);
        }
        let entry = Entry {
            key,
            created: plan.metadata.creation_timestamp.as_ref().map(|t| t.0),
            name: name_of(plan).to_string(),
            summary: plan_summary(plan),
        };
        // Newest first; same second: by name, so the order is stable.
        let position = self
            .entries
            .iter()
            .position(|e| (e.created, std::cmp::Reverse(&e.name)) < (entry.created, std::cmp::Reverse(&entry.name)))
            .unwrap_or(self.entries.len());
        self.entries.insert(position, entry);
        self.entries.truncate(self.capacity);
    }

    pub fn list(&self, limit: usize) -> Vec<Value> {
        self.entries.iter().take(limit).map(|e| e.summary.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The broadcast hook. `on_plan` only queues: emitting happens on a task.
pub struct Broadcast {
    io: SocketIo<LocalAdapter>,
    queue: mpsc::UnboundedSender<(&'static str, Value)>,
    recent: Mutex<RecentPlans>,
    /// The live token set (swapped on reload): read on every request and connect.
    tokens: Arc<TokenStore>,
}

/// Admitted sockets: the name of the token each presented and what it was let see.
type Sessions = Arc<Mutex<HashMap<Sid, (String, Visibility)>>>;

/// Why a Socket.IO connect was refused: the `connect_error` message the client sees.
#[derive(Debug)]
struct ConnectRefused(Denied);

impl std::fmt::Display for ConnectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Denied::Unauthenticated(why) => write!(f, "unauthorized: {why}"),
            denied @ Denied::MissingScope { .. } => write!(f, "forbidden: {denied}"),
        }
    }
}

impl Broadcast {
    /// The hook and the Socket.IO layer to put on the HTTP router. Call inside the runtime.
    pub fn new(tokens: Arc<TokenStore>) -> (Arc<Self>, SocketIoLayer) {
        let (layer, io) = SocketIo::new_layer();
        let sessions: Sessions = Arc::default();
        let admit = {
            let (tokens, sessions) = (tokens.clone(), sessions.clone());
            move |socket: SocketRef, TryData(auth): TryData<Value>| {
                let (tokens, sessions) = (tokens.clone(), sessions.clone());
                async move {
                    let authorization = socket
                        .req_parts()
                        .headers
                        .get(header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap_or_default().to_string());
                    match authorize_socket(&tokens.get(), auth.ok().as_ref(), authorization.as_deref()) {
                        // Joined before the client hears it is connected: no event is missed.
                        Ok((name, visibility)) => {
                            socket.join(visibility.room());
                            sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(socket.id, (name, visibility));
                            Ok(())
                        }
                        Err(denied) => {
                            debug!(sid = %socket.id, %denied, "socket.io connect refused");
                            Err(ConnectRefused(denied))
                        }
                    }
                }
            }
        };
        let connected = {
            let sessions = sessions.clone();
            move |socket: SocketRef| {
                let sessions = sessions.clone();
                async move {
                    debug!(sid = %socket.id, "socket.io client connected");
                    socket.on_disconnect(move |socket: SocketRef| {
                        sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&socket.id);
                        async {}
                    });
                }
            }
        };
        io.ns("/", connected.with(admit));
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(emit_loop(io.clone(), pending, tokens.clone(), sessions));
        (Arc::new(Self { io, queue, recent: Mutex::new(RecentPlans::new(RECENT_PLANS)), tokens }), layer)
    }

    /// `GET /api/antibody/plans[?limit=N]` → `{"plans": [summary, …]}`, newest first.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().route("/api/antibody/plans", get(list_plans)).with_state(self.clone())
    }

    /// Follow PatchPlan status with a watch of our own, until `shutdown`: keep the recent list
    /// and emit each plan's terminal outcome once. Outcomes that were already terminal at the
    /// first listing are not announced again (a restarted replica repeats no old news); one
    /// that became terminal while the watch was reconnecting is. Lists in pages of 500.
    pub async fn follow(self: Arc<Self>, plans: Api<PatchPlan>, shutdown: tokio_util::sync::CancellationToken) {
        let config = watcher::Config::default().page_size(500);
        let mut events = watcher(plans, config).backoff(crate::backoff::WatchBackoff::new()).boxed();
        let mut announced = ReportedTransitions::new(ANNOUNCED_CAPACITY);
        let mut first_listing = true;
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                None => return,
                Some(Err(e)) => warn!(error = %e, "PatchPlan watch for the UI broadcast"),
                Some(Ok(watcher::Event::InitDone)) => {
                    if first_listing {
                        debug!(
                            plans = self.recent.lock().unwrap_or_else(|p| p.into_inner()).len(),
                            "recent plans loaded"
                        );
                    }
                    first_listing = false;
                }
                Some(Ok(watcher::Event::Init | watcher::Event::Delete(_))) => {}
                Some(Ok(watcher::Event::InitApply(plan))) => self.observe(&plan, &mut announced, !first_listing),
                Some(Ok(watcher::Event::Apply(plan))) => self.observe(&plan, &mut announced, true),
            }
        }
    }

    /// One plan as the watch shows it: its summary for the list, its outcome to the clients.
    fn observe(&self, plan: &PatchPlan, announced: &mut ReportedTransitions, emit: bool) {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).upsert(plan, true);
        let (Some(uid), Some((kind, _, _))) = (plan.metadata.uid.as_deref(), terminal_transition(plan)) else {
            return;
        };
        let Some(event) = event_for(kind) else { return };
        if announced.first_time(uid, kind) && emit {
            // Only fails once the emitter stopped (shutdown): nothing left to tell.
            let _ = self.queue.send((event, plan_summary(plan)));
        }
    }

    /// Disconnect every client: the HTTP server's graceful shutdown waits for open connections.
    pub async fn close(&self) {
        self.io.close().await;
    }

    pub fn recent(&self, limit: usize) -> Vec<Value> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).list(limit)
    }
}

/// Each event once per visibility room, in that room's form. When the token set changed since
/// the last event, the connected sockets are checked against it first.
async fn emit_loop(
    io: SocketIo<LocalAdapter>,
    mut pending: mpsc::UnboundedReceiver<(&'static str, Value)>,
    tokens: Arc<TokenStore>,
    sessions: Sessions,
) {
    let mut checked_against: Option<Arc<Tokens>> = None;
    while let Some((event, summary)) = pending.recv().await {
        let current = tokens.get();
        if !checked_against.as_ref().is_some_and(|seen| Arc::ptr_eq(seen, &current)) {
            recheck_sockets(&io, &current, &sessions);
            checked_against = Some(current);
        }
        for visibility in [Visibility::Revealed, Visibility::Redacted] {
            let room = visibility.room();
            match io.to(room).emit(event, &visibility.apply(&summary)).await {
                Ok(()) => debug!(event, room, plan = %summary["id"], "socket.io broadcast"),
                Err(e) => warn!(event, room, error = %e, "socket.io broadcast failed"),
            }
        }
    }
}

/// Move each connected socket to the room its token's name now allows, or disconnect it.
fn recheck_sockets(io: &SocketIo<LocalAdapter>, tokens: &Tokens, sessions: &Sessions) {
    let mut dropped = Vec::new();
    {
        let mut sessions = sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|sid, (name, visibility)| {
            let Some(socket) = io.get_socket(*sid) else { return false };
            match visibility_by_name(tokens, name) {
                None => {
                    dropped.push((socket, name.clone()));
                    false
                }
                Some(now) => {
                    if now != *visibility {
                        socket.leave(visibility.room());
                        socket.join(now.room());
                        *visibility = now;
                    }
                    true
                }
            }
        });
    }
    // Outside the lock: the disconnect handler takes it.
    for (socket, name) in dropped {
        debug!(sid = %socket.id, token = %name, "socket.io client's token lost scope read: disconnected");
        let _ = socket.disconnect();
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

/// Needs `read` (401/403 otherwise, before the query is looked at); values only for `reveal`.
async fn list_plans(
    State(broadcast): State<Arc<Broadcast>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or_default());
    let visibility = match authorize_read(&broadcast.tokens.get(), authorization) {
        Ok(visibility) => visibility,
        Err(denied) => return denied_response(&denied),
    };
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return rejection.into_response(),
    };
    let plans: Vec<Value> = broadcast
        .recent(query.limit.unwrap_or(RECENT_PLANS).min(RECENT_PLANS))
        .iter()
        .map(|summary| visibility.apply(summary))
        .collect();
    Json(json!({ "plans": plans })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ActionType, PatchPlanSpec, PlanAction};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn plan(name: &str, uid: &str, created: i64) -> PatchPlan {
        let mut plan = PatchPlan::new(
            name,
            PatchPlanSpec {
                alert: None,
                actions: vec![PlanAction::new(ActionType::Restart, "X")],
                ..Default::default()
            },
        );
        plan.metadata.uid = Some(uid.into());
        plan.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).expect("time")));
        plan
    }

    fn names(recent: &RecentPlans) -> Vec<String> {
        recent.list(usize::MAX).iter().map(|s| s["id"].as_str().unwrap_or_default().to_string()).collect()
    }

    #[test]
    fn newest_first_bounded_and_updated_in_place() {
        let mut recent = RecentPlans::new(3);
        recent.upsert(&plan("b", "2", 20), true);
        recent.upsert(&plan("a", "1", 10), true);
        recent.upsert(&plan("d", "4", 30), true);
        recent.upsert(&plan("c", "3", 30), true);
        assert_eq!(names(&recent), ["c", "d", "b"], "newest first, ties by name, oldest dropped");
        recent.upsert(&plan("a", "1", 10), true);
        assert_eq!(names(&recent), ["c", "d", "b"], "an old plan does not push a newer one out");

        let mut updated = plan("b", "2", 20);
        updated.metadata.namespace = Some("after".into());
        recent.upsert(&updated, false);
        assert_eq!(recent.list(3)[2]["namespace"], Value::Null, "seeding keeps the newer summary");
        recent.upsert(&updated, true);
        assert_eq!(recent.list(3)[2]["namespace"], "after", "a transition replaces it");
        assert_eq!(recent.len(), 3);
        assert_eq!(recent.list(1).len(), 1);
    }

    #[test]
    fn only_terminal_outcomes_are_broadcast() {
        assert_eq!(event_for(TransitionKind::Applied), Some("patch_applied"));
        assert_eq!(event_for(TransitionKind::Failed), Some("patch_failed"));
        assert_eq!(event_for(TransitionKind::Unverified), Some("patch_unverified"));
        for kind in [TransitionKind::Started, TransitionKind::ActionSucceeded { index: 0 }, TransitionKind::DryRun] {
            assert_eq!(event_for(kind), None, "{kind:?}");
        }
    }
}
