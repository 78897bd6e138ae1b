use super::*;
use enclave_core::TokenCounter;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Records which tenant's texts it computed, in order, one text at a
/// time, slowly enough that a queue forms.
struct Recorder {
    log: Mutex<Vec<String>>,
    busy: AtomicUsize,
    most_busy: AtomicUsize,
    calls: AtomicUsize,
    /// The first call waits for this (when `gated`).
    gate: tokio::sync::Notify,
    gated: bool,
}

#[async_trait::async_trait]
impl Embedder for Recorder {
    fn model_id(&self) -> &str {
        "recorder"
    }
    fn dimensions(&self) -> usize {
        1
    }
    fn max_input_tokens(&self) -> u32 {
        512
    }
    fn token_counter(&self) -> Arc<dyn TokenCounter> {
        enclave_embed::HashEmbedder::new(1).token_counter()
    }
    async fn embed(&self, texts: Vec<String>) -> Vectors {
        if self.gated && self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            self.gate.notified().await;
        }
        let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_busy.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.log.lock().extend(texts.iter().cloned());
        self.busy.fetch_sub(1, Ordering::SeqCst);
        Ok(texts.iter().map(|_| vec![1.0]).collect())
    }
}

fn recorder() -> Arc<Recorder> {
    Arc::new(Recorder {
        log: Mutex::new(Vec::new()),
        busy: AtomicUsize::new(0),
        most_busy: AtomicUsize::new(0),
        calls: AtomicUsize::new(0),
        gate: tokio::sync::Notify::new(),
        gated: false,
    })
}

fn one_worker() -> Scheduling {
    Scheduling {
        workers: 1,
        per_tenant_concurrency: 1,
        unit_tokens: 1,
        ..Scheduling::default()
    }
}

#[tokio::test]
async fn a_light_tenant_is_served_between_a_heavy_tenants_units() {
    // One slot; A's first unit holds it until the gate opens, so A's
    // other 19 units and B's one are all queued when work resumes.
    let rec = Arc::new(Recorder {
        gated: true,
        ..Arc::into_inner(recorder()).unwrap()
    });
    let s = Scheduler::new(rec.clone(), one_worker());
    let a = TenantId::parse("a").unwrap();
    let b = TenantId::parse("b").unwrap();
    let flood: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
    let (s2, a2) = (s.clone(), a.clone());
    let flood_task =
        tokio::spawn(async move { s2.embed(&a2, flood, &[1; 20], Priority::Normal).await });
    let wait_queued = |n: u64| {
        let s = s.clone();
        async move {
            while s.stats().queued_units != n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    wait_queued(19).await;
    let (s3, b3) = (s.clone(), b.clone());
    let b_task = tokio::spawn(async move {
        s3.embed(&b3, vec!["b0".into()], &[1], Priority::Normal)
            .await
    });
    wait_queued(20).await;
    rec.gate.notify_one();
    assert_eq!(b_task.await.unwrap().unwrap().len(), 1);
    let flood_out = flood_task.await.unwrap().unwrap();
    assert_eq!(flood_out.len(), 20, "every unit of the flood is answered");
    let log = rec.log.lock().clone();
    // Round-robin: A's running unit, A's next (A was ahead in the ring
    // when B arrived), then B — not after A's 19 queued units.
    assert_eq!(log.iter().position(|t| t == "b0"), Some(2), "{log:?}");
    // A's units stay in order.
    let a_order: Vec<_> = log.iter().filter(|t| t.starts_with('a')).cloned().collect();
    assert_eq!(
        a_order,
        (0..20).map(|i| format!("a{i}")).collect::<Vec<_>>()
    );
    assert_eq!(s.stats().queued_units, 0);
}

#[tokio::test]
async fn no_tenant_runs_more_units_than_its_cap() {
    let rec = recorder();
    let s = Scheduler::new(
        rec.clone(),
        Scheduling {
            workers: 4,
            per_tenant_concurrency: 2,
            unit_tokens: 1,
            ..Scheduling::default()
        },
    );
    let a = TenantId::parse("a").unwrap();
    let texts: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    let out = s
        .embed(&a, texts, &[1; 12], Priority::Normal)
        .await
        .unwrap();
    assert_eq!(out.len(), 12);
    let most = rec.most_busy.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&most),
        "{most} units of one tenant at once"
    );
    let st = s.stats();
    assert_eq!(st.units_total.iter().sum::<u64>(), 12);
    assert_eq!(st.running, [0, 0]);
}

#[tokio::test]
async fn units_hold_about_unit_tokens_and_results_keep_input_order() {
    let s = Scheduler::new(
        Arc::new(enclave_embed::HashEmbedder::new(16)),
        Scheduling {
            unit_tokens: 10,
            ..Scheduling::default()
        },
    );
    let a = TenantId::parse("a").unwrap();
    let texts: Vec<String> = (0..7).map(|i| format!("text number {i}")).collect();
    let out = s
        .embed(&a, texts.clone(), &[4; 7], Priority::Normal)
        .await
        .unwrap();
    let direct = enclave_embed::HashEmbedder::new(16);
    for (t, v) in texts.iter().zip(&out) {
        assert_eq!(v, &direct.embed_one(t));
    }
    // 4 + 4 fit in 10, a third does not: 7 texts → 4 units.
    assert_eq!(s.stats().units_total.iter().sum::<u64>(), 4);
}

#[tokio::test]
async fn a_tenant_using_over_its_share_runs_in_the_background_lane() {
    let config = Scheduling {
        unit_tokens: 100,
        heavy_tokens: 250.0,
        ..Scheduling::default()
    };
    let hash = Arc::new(enclave_embed::HashEmbedder::new(16));
    let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());

    // Alone, a tenant is never heavy: it gets the foreground lane.
    let alone = Scheduler::new(hash.clone(), config);
    alone
        .embed(&a, vec!["x".into(); 6], &[100; 6], Priority::Normal)
        .await
        .unwrap();
    assert_eq!(alone.stats().units_total, [6, 0]);

    let s = Scheduler::new(hash, config);
    s.embed(&b, vec!["y".into()], &[10], Priority::Normal)
        .await
        .unwrap();
    s.embed(&a, vec!["x".into()], &[100], Priority::Normal)
        .await
        .unwrap();
    assert_eq!(s.stats().units_total, [2, 0], "both light: foreground");
    s.embed(&a, vec!["x".into(); 4], &[100; 4], Priority::Normal)
        .await
        .unwrap();
    let st = s.stats();
    assert!(
        st.units_total[1] >= 3,
        "a heavy beside b: background {st:?}"
    );
    // B, light, stays in the foreground while A is heavy.
    s.embed(&b, vec!["y".into()], &[10], Priority::Normal)
        .await
        .unwrap();
    assert_eq!(s.stats().units_total[0], st.units_total[0] + 1);
    // Background priority is honoured whatever the demand.
    s.embed(&b, vec!["y".into()], &[1], Priority::Background)
        .await
        .unwrap();
    assert_eq!(s.stats().units_total[1], st.units_total[1] + 1);
    s.embed_query("q".into()).await.unwrap();
    assert_eq!(s.stats().queries_total, 1);
}

/// bench-abuse's abandoned-upload outlier: a flood that ended a while
/// ago kept counting in the fair share (its decayed tokens stayed over
/// one for a minute), so the one tenant still embedding was made heavy
/// and its units waited in the background lane.
#[tokio::test]
async fn a_flood_that_ended_a_half_life_ago_makes_nobody_heavy() {
    let config = Scheduling {
        unit_tokens: 100,
        heavy_tokens: 250.0,
        heavy_half_life: Duration::from_millis(100),
        ..Scheduling::default()
    };
    let hash = Arc::new(enclave_embed::HashEmbedder::new(16));
    let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
    let s = Scheduler::new(hash, config);
    s.embed(&a, vec!["x".into(); 8], &[100; 8], Priority::Normal)
        .await
        .unwrap();
    // Three half-lives later A's decayed demand is 100 tokens: still
    // over one, no longer active.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = s.stats().units_total;
    s.embed(&b, vec!["y".into(); 4], &[100; 4], Priority::Normal)
        .await
        .unwrap();
    let after = s.stats().units_total;
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (4, 0),
        "b alone is foreground"
    );
}

#[derive(Default)]
struct Meter(Mutex<HashMap<String, u64>>);

impl EmbeddingMeter for Meter {
    fn embedded(&self, tenant: &TenantId, tokens: u64) {
        *self.0.lock().entry(tenant.to_string()).or_default() += tokens;
    }
}

fn bounded(max_queued_tokens: usize) -> Scheduling {
    Scheduling {
        max_queued_tokens,
        max_queued_tokens_total: 10 * max_queued_tokens,
        ..one_worker()
    }
}

#[tokio::test]
async fn a_full_tenant_queue_refuses_new_work_at_once_with_a_retry_time() {
    let rec = Arc::new(Recorder {
        gated: true,
        ..Arc::into_inner(recorder()).unwrap()
    });
    let s = Scheduler::new(rec.clone(), bounded(10));
    let (a, b) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap());
    // 30 tokens into an empty queue: admitted (a document larger than
    // the bound waits alone).
    let (s2, a2) = (s.clone(), a.clone());
    let first = tokio::spawn(async move {
        s2.embed(&a2, vec!["x".into(); 30], &[1; 30], Priority::Normal)
            .await
    });
    while s.stats().queued_units < 29 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // A's queue is over its bound: refused, nothing queued.
    let err = s
        .embed(&a, vec!["y".into()], &[1], Priority::Normal)
        .await
        .unwrap_err();
    let crate::Error::Busy {
        retry_after_secs, ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert!((1..=60).contains(&retry_after_secs));
    assert_eq!(s.stats().queued_units, 29);
    assert_eq!(s.stats().refused_total, 1);
    // Another tenant is not refused for A's backlog.
    let (s3, b3) = (s.clone(), b.clone());
    let other = tokio::spawn(async move {
        s3.embed(&b3, vec!["b".into()], &[1], Priority::Normal)
            .await
    });
    rec.gate.notify_one();
    assert_eq!(other.await.unwrap().unwrap().len(), 1);
    assert_eq!(first.await.unwrap().unwrap().len(), 30);
    // Background work waits for room rather than failing.
    let s4 = s.clone();
    let a4 = a.clone();
    let (x, y) = tokio::join!(
        s4.embed(&a4, vec!["x".into(); 9], &[1; 9], Priority::Background),
        s.embed(&a, vec!["y".into(); 9], &[1; 9], Priority::Background),
    );
    assert_eq!((x.unwrap().len(), y.unwrap().len()), (9, 9));
}

#[tokio::test]
async fn units_of_a_caller_that_went_away_are_dropped_and_computed_ones_are_metered() {
    let rec = Arc::new(Recorder {
        gated: true,
        ..Arc::into_inner(recorder()).unwrap()
    });
    let s = Scheduler::new(rec.clone(), one_worker());
    let meter = Arc::new(Meter::default());
    s.set_meter(meter.clone());
    let a = TenantId::parse("a").unwrap();
    let (s2, a2) = (s.clone(), a.clone());
    let call = tokio::spawn(async move {
        s2.embed(&a2, vec!["t".into(); 50], &[1; 50], Priority::Normal)
            .await
    });
    while s.stats().queued_units < 49 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The caller goes away (a timeout, a disconnect) while one unit
    // computes and 49 wait.
    call.abort();
    let _ = call.await;
    assert_eq!(s.stats().queued_units, 0, "waiting units removed");
    assert_eq!(s.stats().abandoned_tokens, 49);
    rec.gate.notify_one();
    while s.stats().running != [0, 0] {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Only the unit already computing ran, and it is metered.
    assert_eq!(rec.log.lock().len(), 1);
    assert_eq!(meter.0.lock().get("a"), Some(&1));
    // The tenant can queue again at once.
    s.embed(&a, vec!["u".into()], &[1], Priority::Normal)
        .await
        .unwrap();
    assert_eq!(meter.0.lock().get("a"), Some(&2));
}
