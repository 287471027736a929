//! `mesh_config_source_*`: whether the configuration source is reachable, and since
//! when the model is stale.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_common::source::status::SourceStatus;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

#[derive(Clone, Default)]
pub(super) struct SourceGauges {
    connected: Gauge,
    synced: Gauge,
    last_sync: Gauge<f64, AtomicU64>,
    checks: prometheus_client::metrics::counter::Counter,
}

impl SourceGauges {
    pub(super) fn register(metrics: &Metrics) -> Self {
        let g = Self::default();
        metrics.register(|r| {
            r.register(
                "mesh_config_source_connected",
                "1 while the configuration source (every watch on the Kubernetes API server, or the directory) reads fine, 0 while the daemon serves its last known state",
                g.connected.clone(),
            );
            r.register(
                "mesh_config_source_synced",
                "1 once the configuration source has been read completely at least once",
                g.synced.clone(),
            );
            r.register(
                "mesh_config_source_last_sync_timestamp_seconds",
                "Unix time at which the model last matched its source (advances while connected)",
                g.last_sync.clone(),
            );
            r.register(
                "mesh_config_source_checks",
                "Times the daemon has evaluated its configuration source's status (every second and on each change)",
                g.checks.clone(),
            );
        });
        g
    }

    pub(super) fn show(&self, s: &SourceStatus) {
        self.connected.set(i64::from(s.connected));
        self.synced.set(i64::from(s.synced));
        self.tick(s);
    }

    pub(super) fn tick(&self, s: &SourceStatus) {
        self.checks.inc();
        if s.connected && s.synced {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_sync.set(now.as_secs_f64());
        }
    }
}
