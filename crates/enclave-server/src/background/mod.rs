//! What runs beside the requests, each loop over the services and the
//! control seam, never a route: the usage flush with budget alerts
//! ([`alerts`]), the failed-credential audit flush, the follower of other
//! replicas' tenant changes, and the ingestion job runner ([`jobs`]).

pub mod alerts;
pub mod jobs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use enclave_store::control::TenantChange;
use tokio::task::JoinHandle;

use crate::AppState;

/// The running loops of one server.
pub(crate) struct Background {
    loops: Vec<JoinHandle<()>>,
    jobs: JoinHandle<()>,
    stop_jobs: Arc<AtomicBool>,
}

/// Starts every loop.
pub(crate) fn start(state: &AppState) -> Background {
    let mut loops = Vec::new();
    // Usage counts reach the control store every two seconds, and once
    // more after the last request.
    loops.push({
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                state
                    .inner
                    .usage
                    .flush(state.control().as_ref(), None)
                    .await;
                alerts::check(&state).await;
                alerts::sweep(&state).await;
            }
        })
    });
    // Failed credentials reach the audit log as one aggregate per chain,
    // action and cause each window.
    loops.push({
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.inner.failures.window());
            tick.tick().await;
            loop {
                tick.tick().await;
                state.inner.failures.flush(state.control().as_ref()).await;
            }
        })
    });
    // Another replica's suspend, purge or limits change drops this
    // process's cached directory entry as soon as it commits (the cache's
    // time limit is only the fallback when the feed is down).
    if let Some(mut changes) = state.control().tenant_changes() {
        let state = state.clone();
        loops.push(tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                match change {
                    TenantChange::Changed(id) => state.invalidate_tenant(&id),
                    TenantChange::Restarted => state.forget_tenants(),
                }
            }
        }));
    }
    let stop_jobs = Arc::new(AtomicBool::new(false));
    let jobs = tokio::spawn(jobs::run(state.clone(), stop_jobs.clone()));
    Background {
        loops,
        jobs,
        stop_jobs,
    }
}

impl Background {
    /// After the last request: running jobs record their progress after
    /// their current document and release their leases (what does not stop
    /// in time resumes elsewhere once its lease lapses); the counters and
    /// refusals are flushed a last time.
    pub(crate) async fn stop(self, state: &AppState) {
        self.stop_jobs.store(true, Ordering::Relaxed);
        state.inner.jobs.wake.notify_one();
        if tokio::time::timeout(Duration::from_secs(10), self.jobs)
            .await
            .is_err()
        {
            tracing::warn!("jobs still running at shutdown; their leases will lapse");
        }
        for l in self.loops {
            l.abort();
        }
        state.inner.failures.flush(state.control().as_ref()).await;
        state
            .inner
            .usage
            .flush(state.control().as_ref(), None)
            .await;
    }
}
