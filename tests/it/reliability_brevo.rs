//! Brevo in trouble for a sustained stretch, through the real binary:
//! `sluice serve` on the embedded bus under a steady PostHog load, with the
//! Brevo simulator (in this process) as Brevo. Three phases follow a healthy
//! start: an outage (every request 503), a 429 storm (every request refused
//! with `Retry-After: 1`), and slow answers (every request held 1.5 s, under
//! the client timeout). Ingress keeps answering 200 throughout (the bus
//! absorbs the backlog), the forwarder's memory stays bounded, and after
//! Brevo recovers every acknowledged event is accepted exactly once.
//!
//! Each phase lasts `SLUICE_TEST_BREVO_FAULT_SECS` seconds (default 60: three
//! minutes of trouble in a row; set it lower for a quick local run).
//! Figures are printed as a `FIGURES ...` line (run with `--nocapture`).

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::RssSampler;
use serde_json::{json, Value};
use sluice::sim::{self, Fault, SimConfig, SimHandle};

const KEY: &str = "xkeysib-reliability";
const TOKEN: &str = "phc_brevo_trouble";
/// Events per request and requests per second of the load: 200 events/s.
const BATCH: usize = 20;
const INTERVAL: Duration = Duration::from_millis(100);
/// Effectively "until cleared": faults are counted per request.
const ALWAYS: u32 = 1_000_000;

fn phase() -> Duration {
    let secs = std::env::var("SLUICE_TEST_BREVO_FAULT_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    Duration::from_secs(secs)
}

fn config(brevo_url: &str) -> String {
    let brevo = format!(
        "brevo:\n  api_key: {KEY}\n  base_url: {brevo_url}\n  initial_backoff_ms: 200\n  max_backoff_ms: 2000\n"
    );
    common::embedded_yaml(TOKEN, "", &brevo)
}

/// The load ids (`properties.rid`) of the events Brevo accepted, with how
/// often each was accepted.
fn accepted(sim: &SimHandle) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for a in sim.accepted_events() {
        if let Some(rid) = a.event.pointer("/event_properties/rid").and_then(Value::as_str) {
            *out.entry(rid.to_string()).or_default() += 1;
        }
    }
    out
}

/// Posts a batch of `BATCH` events every `INTERVAL` until stopped; records
/// each event id with its request's status.
struct SteadyLoad {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<(String, u16)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SteadyLoad {
    fn start(base: &str) -> SteadyLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (s, out, url) = (stop.clone(), sent.clone(), format!("{base}/batch/"));
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
            let mut tick = tokio::time::interval(INTERVAL);
            let mut n = 0usize;
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let ids: Vec<String> = (0..BATCH).map(|_| uuid::Uuid::new_v4().to_string()).collect();
                let batch: Vec<Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| common::posthog_event(TOKEN, id, &format!("user-{}", (n + i) % 50)))
                    .collect();
                n += BATCH;
                let status = match client.post(&url).json(&json!({"api_key": TOKEN, "batch": batch})).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                out.lock().expect("sent").extend(ids.into_iter().map(|id| (id, status)));
            }
        });
        SteadyLoad { stop, sent, task }
    }

    async fn stop(self) -> Vec<(String, u16)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let out = self.sent.lock().expect("sent").clone();
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brevo_outage_429_storm_and_slow_answers_lose_nothing_and_stay_bounded() {
    let sim = sim::start(SimConfig::new(KEY)).await.expect("simulator");
    let sluice = common::Sluice::start("serve", &config(&sim.base_url()));
    let rss = RssSampler::start(sluice.child.id());
    let load = SteadyLoad::start(&sluice.base);
    let healthy = sim.wait_until(Duration::from_secs(30), |s| !accepted(s).is_empty()).await;
    assert!(healthy, "nothing delivered while Brevo is healthy; log:\n{}", sluice.logs());

    let mut phases = Vec::new();
    for (name, fault) in [
        ("outage (503)", Fault::server_errors(503, ALWAYS)),
        ("429 storm", Fault::rate_limited(ALWAYS, 1)),
        ("slow answers (1.5 s)", Fault::delay(1500, ALWAYS)),
    ] {
        let before = sim.stats();
        let delivered_before: usize = accepted(&sim).len();
        sim.inject(fault);
        let started = Instant::now();
        tokio::time::sleep(phase()).await;
        sim.clear_faults();
        let after = sim.stats();
        let by_status: BTreeMap<u16, u64> = after
            .by_status
            .iter()
            .map(|(s, n)| (*s, n - before.by_status.get(s).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        phases.push(format!(
            "{name}: {:?}, Brevo answers {by_status:?}, newly delivered {}",
            started.elapsed(),
            accepted(&sim).len() - delivered_before
        ));
        // Delivery resumes after each phase.
        let resumed = sim.wait_until(Duration::from_secs(60), |s| accepted(s).len() > delivered_before + BATCH).await;
        assert!(resumed, "delivery did not resume after the {name}; log tail:\n{}", common::tail(&sluice.logs(), 20));
    }
    let sent = load.stop().await;

    // Ingress never refused: the bus took the backlog.
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, s) in &sent {
        *statuses.entry(*s).or_default() += 1;
    }
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), vec![200], "ingress answers during Brevo trouble");
    let acked: HashSet<&String> = sent.iter().map(|(id, _)| id).collect();

    // Everything acknowledged reaches Brevo, once.
    let all_in = sim
        .wait_until(Duration::from_secs(120), |s| {
            let got = accepted(s);
            acked.iter().all(|id| got.contains_key(*id))
        })
        .await;
    let got = accepted(&sim);
    let missing = acked.iter().filter(|id| !got.contains_key(**id)).count();
    assert!(
        all_in,
        "{missing} acknowledged events never reached Brevo; log tail:\n{}",
        common::tail(&sluice.logs(), 20)
    );
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "no request was processed after a timeout here, so nothing may arrive twice");

    let peak = rss.peak_kib();
    assert!(peak < 200 * 1024, "peak RSS {peak} KiB over 200 MB");
    eprintln!(
        "FIGURES brevo trouble: phase={:?} sent={} acked={} delivered_distinct={} duplicates={duplicates} peak_rss_kib={peak}\n  {}",
        phase(),
        sent.len(),
        acked.len(),
        got.len(),
        phases.join("\n  ")
    );
}
