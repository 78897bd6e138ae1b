//! The control seam's conformance suite: each check takes a freshly opened,
//! empty [`ControlStore`] and states one promise of the seam, so the
//! embedded and the PostgreSQL control planes are held to the same
//! behaviour. Run it with [`control_conformance!`](crate::control_conformance)
//! from a backend's tests.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Datelike, Utc};
use enclave_core::{Isolation, Slug, TenantId};
use serde_json::json;

use crate::control::{
    verify_chain, BudgetAlert, ClaimedJob, ControlStore, IdempotencyState, JobBounds,
    JobItemResult, NewAuditEvent, NewJob, NewTenant, PLATFORM_SCOPE,
};

/// Generates one `#[tokio::test]` per check over the store `$open` (an
/// expression of type `Arc<dyn ControlStore>`, awaited per test).
#[macro_export]
macro_rules! control_conformance {
    ($open:expr) => {
        $crate::control_conformance!(@tests $open;
            a_job_is_claimed_by_one_owner_and_one_job_per_tenant_at_a_time,
            an_expired_lease_passes_the_job_to_another_owner,
            idempotency_goes_through_every_state,
            a_budget_alert_is_recorded_once_and_retried_with_backoff,
            audit_chains_verify_per_scope,
        );
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: std::sync::Arc<dyn $crate::control::ControlStore> = $open.await;
                $crate::testkit::control::$name(store).await;
            }
        )*
    };
}

const BOUNDS: JobBounds = JobBounds {
    max_jobs: 16,
    max_bytes: 1 << 20,
};
const LEASE: Duration = Duration::from_secs(30);

async fn tenant(store: &dyn ControlStore, id: &str) -> TenantId {
    let id = TenantId::parse(id).expect("a tenant id");
    store
        .create_tenant(NewTenant {
            id: id.clone(),
            slug: Slug::parse(id.as_str()).expect("a slug"),
            name: id.to_string(),
            plan: "free".into(),
            isolation: Isolation::Shared,
            limits: Default::default(),
            search: Default::default(),
            now: Utc::now(),
        })
        .await
        .expect("create the tenant");
    id
}

async fn job(store: &dyn ControlStore, t: &TenantId, n: u32) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    store
        .tenant(t)
        .create_job(
            NewJob {
                job_id: id.clone(),
                kind: "documents".into(),
                payload: json!([{"name": format!("d{n}"), "content": "x"}]),
                total: 1,
                created_by: "key:test".into(),
                created_at: Utc::now(),
            },
            BOUNDS,
        )
        .await
        .expect("create a job");
    id
}

/// Two owners never hold one job, and a tenant has one job running at a
/// time across owners: its next one is claimable only once that finishes.
pub async fn a_job_is_claimed_by_one_owner_and_one_job_per_tenant_at_a_time(
    store: Arc<dyn ControlStore>,
) {
    let (a, b) = (
        tenant(&*store, "acme").await,
        tenant(&*store, "globex").await,
    );
    let a1 = job(&*store, &a, 1).await;
    let a2 = job(&*store, &a, 2).await;
    let b1 = job(&*store, &b, 1).await;
    let first = store.claim_job("o1", LEASE).await.unwrap().expect("a job");
    let second = store.claim_job("o2", LEASE).await.unwrap().expect("a job");
    assert_ne!(first.tenant, second.tenant, "one running job per tenant");
    assert!(
        store.claim_job("o3", LEASE).await.unwrap().is_none(),
        "acme's second job waits for its first"
    );
    let (a_owner, a_job) = if first.tenant == a {
        ("o1", &first.job_id)
    } else {
        ("o2", &second.job_id)
    };
    assert_eq!(a_job, &a1, "a tenant's jobs run in the order they came");
    let b_job = if first.tenant == b {
        &first.job_id
    } else {
        &second.job_id
    };
    assert_eq!(b_job, &b1);
    assert!(
        !store
            .tenant(&a)
            .finish_job(a_job, "intruder")
            .await
            .unwrap(),
        "only the lease holder finishes a job"
    );
    assert!(store.tenant(&a).finish_job(a_job, a_owner).await.unwrap());
    let next = store
        .claim_job("o3", LEASE)
        .await
        .unwrap()
        .expect("acme's next job");
    assert_eq!(next, claimed(&a, &a2));
    assert_eq!(store.unfinished_jobs().await.unwrap(), 2);
}

/// A holder that stops renewing loses the job to the next claimant, and its
/// late progress is refused.
pub async fn an_expired_lease_passes_the_job_to_another_owner(store: Arc<dyn ControlStore>) {
    let t = tenant(&*store, "acme").await;
    let id = job(&*store, &t, 1).await;
    let short = Duration::from_millis(200);
    assert_eq!(
        store.claim_job("o1", short).await.unwrap(),
        Some(claimed(&t, &id))
    );
    assert!(store.claim_job("o2", LEASE).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        store.claim_job("o2", LEASE).await.unwrap(),
        Some(claimed(&t, &id)),
        "the lapsed lease is taken over"
    );
    let result = JobItemResult {
        index: 0,
        document_id: Some("d".into()),
        error: None,
    };
    let control = store.tenant(&t);
    assert!(!control
        .job_progress(&id, "o1", std::slice::from_ref(&result), LEASE)
        .await
        .unwrap());
    assert!(control
        .job_progress(&id, "o2", &[result], LEASE)
        .await
        .unwrap());
    let (_, results) = control.get_job(&id).await.unwrap().expect("the job");
    assert_eq!(results.len(), 1);
}

/// An `Idempotency-Key` is acquired, in progress, a mismatch for another
/// body, completed with its stored answer, released by an abort, taken
/// over once abandoned, and absent once expired.
pub async fn idempotency_goes_through_every_state(store: Arc<dyn ControlStore>) {
    let t = tenant(&*store, "acme").await;
    let c = store.tenant(&t);
    let now = Utc::now();
    let (long_ago, hour) = (now - chrono::Duration::days(1), chrono::Duration::hours(1));
    let begin = |key: &'static str, hash: &'static [u8], abandoned, expired| {
        let c = c.clone();
        async move {
            c.idempotency_begin(key, hash, now, abandoned, expired)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        begin("k", b"h1", long_ago, long_ago).await,
        IdempotencyState::Acquired
    );
    assert_eq!(
        begin("k", b"h1", long_ago, long_ago).await,
        IdempotencyState::InProgress
    );
    assert_eq!(
        begin("k", b"h2", long_ago, long_ago).await,
        IdempotencyState::Mismatch
    );
    let body = json!({"document_id": "x"});
    c.idempotency_finish("k", 201, &body).await.unwrap();
    assert_eq!(
        begin("k", b"h1", long_ago, long_ago).await,
        IdempotencyState::Completed { status: 201, body }
    );
    assert_eq!(
        begin("k", b"h1", long_ago, now + hour).await,
        IdempotencyState::Acquired,
        "an expired record counts as absent"
    );
    assert_eq!(
        begin("a", b"h", long_ago, long_ago).await,
        IdempotencyState::Acquired
    );
    c.idempotency_abort("a").await.unwrap();
    assert_eq!(
        begin("a", b"h", long_ago, long_ago).await,
        IdempotencyState::Acquired
    );
    assert_eq!(
        begin("a", b"h", now + hour, long_ago).await,
        IdempotencyState::Acquired,
        "a pending record whose request died is taken over"
    );
    let other = tenant(&*store, "globex").await;
    assert_eq!(
        store
            .tenant(&other)
            .idempotency_begin("k", b"h2", now, long_ago, long_ago)
            .await
            .unwrap(),
        IdempotencyState::Acquired,
        "keys are per tenant"
    );
}

/// One alert per tenant, month and threshold; due ones are taken once per
/// backoff step and never after delivery.
pub async fn a_budget_alert_is_recorded_once_and_retried_with_backoff(
    store: Arc<dyn ControlStore>,
) {
    let t = tenant(&*store, "acme").await;
    let now = Utc::now();
    let alert = BudgetAlert {
        tenant_id: t.clone(),
        month: format!("{:04}-{:02}", now.year(), now.month()),
        threshold_percent: 80,
        budget_usd: 10.0,
        spent_usd: 8.5,
        created_at: now,
        attempts: 1,
    };
    let c = store.tenant(&t);
    assert!(c.record_budget_alert(&alert, Duration::ZERO).await.unwrap());
    assert!(
        !c.record_budget_alert(&alert, Duration::ZERO).await.unwrap(),
        "the same tenant, month and threshold is recorded once"
    );
    let later = BudgetAlert {
        threshold_percent: 100,
        ..alert.clone()
    };
    assert!(c
        .record_budget_alert(&later, Duration::from_secs(3600))
        .await
        .unwrap());
    let due = store
        .due_budget_alerts(10, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "only the alert whose retry is due: {due:?}");
    assert_eq!(due[0].id(), alert.id());
    assert!(due[0].attempts >= 2, "the attempt is counted: {due:?}");
    assert!(
        store
            .due_budget_alerts(10, Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty(),
        "the next attempt waits for its backoff"
    );
    store
        .budget_alert_delivered(&t, &alert.month, 80)
        .await
        .unwrap();
    assert!(store
        .due_budget_alerts(10, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .all(|a| a.threshold_percent != 80));
}

/// Each scope (a tenant, the platform) is its own hash chain, and every
/// event of it verifies.
pub async fn audit_chains_verify_per_scope(store: Arc<dyn ControlStore>) {
    let (a, b) = (
        tenant(&*store, "acme").await,
        tenant(&*store, "globex").await,
    );
    let ev = |action: &str| NewAuditEvent {
        actor: "key:test".into(),
        action: action.into(),
        target: None,
        detail: json!({"n": 1.5, "list": [1, 2]}),
        at: Utc::now(),
    };
    for i in 0..3 {
        store
            .tenant(&a)
            .append_audit(ev(&format!("a{i}")))
            .await
            .unwrap();
    }
    store.tenant(&b).append_audit(ev("b0")).await.unwrap();
    for i in 0..2 {
        store
            .append_platform_audit(ev(&format!("p{i}")))
            .await
            .unwrap();
    }
    let scopes = store.audit_scopes().await.unwrap();
    for (scope, n) in [(a.as_str(), 3), (b.as_str(), 1), (PLATFORM_SCOPE, 2)] {
        assert!(scopes.iter().any(|s| s == scope), "{scope} in {scopes:?}");
        let events = store.audit_events(scope, 0, 100).await.unwrap();
        assert_eq!(events.len(), n);
        assert_eq!(verify_chain(&events), Ok(n as u64), "{scope}");
    }
    let a_events = store.audit_events(a.as_str(), 0, 100).await.unwrap();
    assert!(
        a_events.iter().all(|e| e.action.starts_with('a')),
        "no event of another scope"
    );
}

fn claimed(tenant: &TenantId, job_id: &str) -> ClaimedJob {
    ClaimedJob {
        tenant: tenant.clone(),
        job_id: job_id.to_owned(),
    }
}
