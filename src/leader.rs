//! Leader election with a `coordination.k8s.io` Lease (kube-lease-manager): every replica
//! ingests alerts and serves HTTP, only the leader reconciles. A leader that loses its lease
//! stops reconciling at once and exits, so it restarts as a standby with no stale state.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
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
    pub fn validate(&self) -> Result<(), String> {
        if self.grace_seconds == 0 || self.grace_seconds >= self.duration_seconds {
            return Err(format!(
                "lease grace ({}s) must be at least 1s and shorter than the lease duration ({}s)",
                self.grace_seconds, self.duration_seconds
            ));
        }
        crate::validate::dns1123_subdomain(&self.name)?;
        crate::validate::dns1123_label(&self.namespace)
    }
}

/// Wait until this instance holds the lease (or `shutdown`). Returns `false` on shutdown.
/// Once leader, losing the lease cancels `shutdown`.
pub async fn acquire(client: Client, settings: &LeaseSettings, shutdown: CancellationToken) -> crate::Result<bool> {
    settings.validate().map_err(|message| crate::Error::Config { path: "--lease-*".into(), message })?;
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.grace_seconds)
        .build()
        .await
        .map_err(|e| crate::Error::Config { path: "lease".into(), message: e.to_string() })?;
    let (mut leader, _task) = manager.watch().await;
    info!(lease = %settings.name, namespace = %settings.namespace, identity = %settings.identity, "waiting for leadership");
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return Ok(false) },
            _ = shutdown.cancelled() => return Ok(false),
        }
    }
    info!(identity = %settings.identity, "acquired leadership: reconciling");
    tokio::spawn(watch_for_loss(leader, shutdown));
    Ok(true)
}

async fn watch_for_loss(mut leader: watch::Receiver<bool>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            changed = leader.changed() => {
                if changed.is_err() || !*leader.borrow_and_update() {
                    error!("lost leadership: stopping");
                    shutdown.cancel();
                    return;
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
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
