//! Leader election with a `coordination.k8s.io` Lease (kube-lease-manager): every replica
//! ingests alerts and serves HTTP, only the leader reconciles. A leader that loses its lease
//! starts no new reconcile, lets those in flight finish (their status writes are
//! compare-and-swap, so a new leader's writes win) and exits, so it restarts as a standby with
//! no stale state.
//!
//! Hand-off on shutdown: the lease is held until the controller has stopped (no new reconciles,
//! those in flight finished) and only then released — releasing it first let a new leader act
//! while the old one still did. Status checkpoints are compare-and-swap writes as well
//! (`reconcile::StatusWriter`), for the case where the lease is lost rather than given up.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

impl LeaseSettings {
    pub fn validate(&self) -> Result<(), crate::validate::Invalid> {
        if self.grace_seconds == 0 || self.grace_seconds >= self.duration_seconds {
            return Err(format!(
                "lease grace ({}s) must be at least 1s and shorter than the lease duration ({}s)",
                self.grace_seconds, self.duration_seconds
            )
            .into());
        }
        crate::validate::dns1123_subdomain(&self.name)?;
        crate::validate::dns1123_label(&self.namespace)
    }
}

/// Held while this instance leads; [`Leadership::release`] gives the lease up.
pub struct Leadership {
    release: CancellationToken,
    watcher: JoinHandle<()>,
}

impl Leadership {
    /// Release the lease and wait (bounded) until the API server has it: call only after the
    /// controller stopped acting.
    pub async fn release(self) {
        self.release.cancel();
        if tokio::time::timeout(RELEASE_TIMEOUT, self.watcher).await.is_err() {
            error!("releasing the lease timed out; it expires on its own");
        }
    }
}

const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Wait until this instance holds the lease (or `shutdown`). Returns `None` on shutdown.
/// Once leader, losing the lease cancels `shutdown`; the lease is kept until
/// [`Leadership::release`].
pub async fn acquire(
    client: Client,
    settings: &LeaseSettings,
    shutdown: CancellationToken,
) -> crate::Result<Option<Leadership>> {
    settings.validate().map_err(|e| crate::Error::Config { path: "--lease-*".into(), message: e.to_string() })?;
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.grace_seconds)
        .build()
        .await
        .map_err(|e| crate::Error::Lease(e.to_string()))?;
    let (mut leader, task) = manager.watch().await;
    info!(lease = %settings.name, namespace = %settings.namespace, identity = %settings.identity, "waiting for leadership");
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return Ok(None) },
            _ = shutdown.cancelled() => {
                drop(leader);
                let _ = tokio::time::timeout(RELEASE_TIMEOUT, task).await;
                return Ok(None);
            }
        }
    }
    info!(identity = %settings.identity, "acquired leadership: reconciling");
    let release = CancellationToken::new();
    let watcher = tokio::spawn(watch_for_loss(leader, task, shutdown, release.clone()));
    Ok(Some(Leadership { release, watcher }))
}

/// Cancel `shutdown` when the lease is lost; on `release`, drop the receiver (the lease
/// manager then releases the lease) and wait for the manager to finish.
async fn watch_for_loss<T>(
    mut leader: watch::Receiver<bool>,
    manager: JoinHandle<T>,
    shutdown: CancellationToken,
    release: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() || !*leader.borrow_and_update() {
                    error!("lost leadership: stopping");
                    shutdown.cancel();
                    break;
                }
            }
            _ = release.cancelled() => break,
        }
    }
    drop(leader);
    let _ = manager.await;
    info!("lease released");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_before_the_crate_would_panic() {
        let ok = LeaseSettings {
            name: "antibody".into(),
            namespace: "antibody".into(),
            identity: "a".into(),
            duration_seconds: 15,
            grace_seconds: 5,
        };
        assert!(ok.validate().is_ok());
        for (duration, grace) in [(5, 5), (5, 0), (0, 0), (3, 10)] {
            let bad = LeaseSettings { duration_seconds: duration, grace_seconds: grace, ..ok.clone() };
            assert!(bad.validate().is_err(), "{duration}/{grace}");
        }
        assert!(LeaseSettings { name: "Bad_Name".into(), ..ok }.validate().is_err());
    }
}
