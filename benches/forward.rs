//! Forwarder benchmarks.
//!
//! * `mapping/*`, `batching/*` (criterion): CPU cost of turning envelopes into
//!   Brevo operations and of building request bodies from them.
//! * `saturation` (a timed run, only under `cargo bench`): a backlog on the
//!   embedded bus drained through the real forwarder and HTTP client into the
//!   in-process Brevo simulator, which enforces the same budget. Reports
//!   delivered events/s against the configured budget (requests/s × events
//!   per batch) and mean events per request, in steady state.
//!
//! `scripts/bench-forward` runs the saturation part; `SLUICE_BENCH_SECONDS`
//! (default 20) sets the measured span, `SLUICE_BENCH_PLAN` (general,
//! professional) the Brevo plan, `SLUICE_BENCH_SLACK_MS` and
//! `SLUICE_BENCH_CONCURRENCY` the forwarder's `brevo.rate_limit_slack_ms`
//! and `brevo.concurrency` (unset: the defaults).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use serde_json::json;
use sluice::bus::{Bus, Topic};
use sluice::config::Config;
use sluice::event::{Event, Kind, Source};
use sluice::forward::batcher::{BatchLimits, Lane};
use sluice::forward::brevo::RateHeaders;
use sluice::forward::mapping::{map_event, Mapped};
use sluice::forward::{self, BrevoReply, BrevoRequest, Deliver, DeliverError, HttpBrevo};
use sluice::sim::{self, EndpointClass, SimConfig};

/// A PostHog web event the size posthog-js sends (~20 properties).
fn pageview(user: usize, n: usize) -> Event {
    let mut e = Event::new(Source::Posthog, "posthog", "phc_bench", Kind::Track, "$pageview", chrono::Utc::now());
    e.id = format!("bench-{user}-{n}");
    e.distinct_id = Some(format!("user-{user}"));
    e.email = Some(format!("user{user}@example.com"));
    for (k, v) in [
        ("$current_url", json!(format!("https://app.example.com/projects/{n}/settings?tab=billing"))),
        ("$host", json!("app.example.com")),
        ("$pathname", json!(format!("/projects/{n}/settings"))),
        ("$browser", json!("Chrome")),
        ("$browser_version", json!(124)),
        ("$os", json!("Mac OS X")),
        ("$device_type", json!("Desktop")),
        ("$screen_height", json!(1117)),
        ("$screen_width", json!(1728)),
        ("$referrer", json!("https://www.google.com/")),
        ("$referring_domain", json!("www.google.com")),
        ("$lib", json!("web")),
        ("$lib_version", json!("1.130.0")),
        ("$session_id", json!("018f2a7b-5c3d-7e4f-8a9b-0c1d2e3f4a5b")),
        ("$window_id", json!("018f2a7b-5c3d-7e4f-8a9b-0c1d2e3f4a5c")),
        ("utm_source", json!("newsletter")),
        ("plan", json!("pro")),
        ("token", json!("phc_bench")),
    ] {
        e.properties.insert(k.into(), v);
    }
    e.user_properties.set.insert("first_name".into(), json!(format!("User{user}")));
    e
}

fn workload(n: usize) -> Vec<Event> {
    (0..n).map(|i| pageview(i % 500, i / 500)).collect()
}

fn bench_mapping(c: &mut Criterion) {
    let cfg = Config::default();
    let events = workload(1000);
    let mut g = c.benchmark_group("mapping");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("posthog_pageview_x1000", |b| {
        b.iter(|| {
            for e in &events {
                black_box(map_event(&cfg, e));
            }
        })
    });
    g.finish();
}

fn bench_batching(c: &mut Criterion) {
    let cfg = Config::default();
    let mapped: Vec<(String, Vec<_>)> = workload(2000)
        .iter()
        .filter_map(|e| match map_event(&cfg, e) {
            Mapped::Ops { user, ops } => Some((user, ops)),
            _ => None,
        })
        .collect();
    let limits = BatchLimits::from_config(&cfg.brevo);
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _guard = rt.enter();
    let mut g = c.benchmark_group("batching");
    g.throughput(Throughput::Elements(mapped.len() as u64));
    g.bench_function("lane_push_take_and_serialize_x2000", |b| {
        b.iter(|| {
            let mut lane = Lane::new(limits);
            let now = tokio::time::Instant::now();
            for (i, (user, ops)) in mapped.iter().enumerate() {
                lane.push(i as u64, user, ops.clone(), now);
            }
            for batch in lane.take_ready(now, Duration::ZERO, true) {
                black_box(serde_json::to_vec(&batch.request().body).expect("serializable"));
            }
        })
    });
    g.finish();
}

criterion_group!(cpu, bench_mapping, bench_batching);

/// The HTTP client, timing each round trip: with tokens returning at the
/// answer, the budget ceiling is 1 / (1 + mean round trip in seconds).
struct Timed {
    inner: HttpBrevo,
    micros: AtomicU64,
    count: AtomicU64,
}

#[async_trait::async_trait]
impl Deliver for Timed {
    async fn send(&self, req: &BrevoRequest) -> Result<BrevoReply, DeliverError> {
        let started = std::time::Instant::now();
        let r = self.inner.send(req).await;
        self.micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        r
    }
}

/// A Brevo that answers 202 at once, in process: what the forwarder alone
/// makes of the budget when the round trip costs nothing.
struct Instantly {
    start: std::time::Instant,
    arrivals: Mutex<Vec<(Duration, usize)>>,
}

#[async_trait::async_trait]
impl Deliver for Instantly {
    async fn send(&self, req: &BrevoRequest) -> Result<BrevoReply, DeliverError> {
        self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).push((self.start.elapsed(), req.events));
        Ok(BrevoReply { status: 202, body: format!(r#"{{"count":{}}}"#, req.events), rate: RateHeaders::default() })
    }
}

/// Where the saturation run delivers.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// The Brevo simulator over HTTP, on its own runtime.
    Simulator,
    /// [`Instantly`].
    Instant,
}

/// Steady-state figures of one saturation run.
struct Saturation {
    requests: usize,
    span: Duration,
    events: usize,
    per_second: u32,
    max_batch: usize,
    max_in_any_second: usize,
    too_many: u64,
    mean_round_trip: Duration,
}

fn saturation(target: Target) -> anyhow::Result<Saturation> {
    let seconds: u64 = std::env::var("SLUICE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let plan = std::env::var("SLUICE_BENCH_PLAN").unwrap_or_else(|_| "general".into());
    let mut extra = String::new();
    if let Ok(ms) = std::env::var("SLUICE_BENCH_SLACK_MS") {
        extra.push_str(&format!("  rate_limit_slack_ms: {ms}\n"));
    }
    if let Ok(n) = std::env::var("SLUICE_BENCH_CONCURRENCY") {
        extra.push_str(&format!("  concurrency: {n}\n"));
    }
    // Brevo is another machine: the simulator gets its own runtime so its
    // request handling does not queue behind the forwarder's tasks.
    let sim_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let sim_plan: sim::Plan = plan.parse().map_err(|e| anyhow::anyhow!("SLUICE_BENCH_PLAN: {e:?}"))?;
    let sim = sim_rt.block_on(sim::start(SimConfig::new("xkeysib-bench").plan(sim_plan)))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let yaml = format!(
            "bus:\n  path: {}\nbrevo:\n  api_key: xkeysib-bench\n  base_url: {}\n  plan: {plan}\n{extra}",
            dir.path().display(),
            sim.base_url()
        );
        let config = Arc::new(Config::from_yaml(&yaml, "bench.yaml", &|_| None)?);
        let per_second =
            forward::limiter::budget(&config.brevo, forward::brevo::EndpointClass::Events).per_second as u32;
        let max_batch = config.brevo.max_batch_events;
        // Warm-up (2 s) + measured span + slack, all waiting on the bus.
        let warm = 2 * per_second as usize;
        let measured = per_second as usize * seconds as usize;
        let backlog = (warm + measured + 3 * per_second as usize) * max_batch;
        let bus = Bus::open(&config.bus).await?;
        let events = workload(backlog);
        for chunk in events.chunks(20_000) {
            bus.publisher.publish(Topic::Events, chunk.iter().map(Event::to_record).collect()).await?;
        }
        drop(events);
        eprintln!("saturation: {backlog} events waiting; measuring {seconds} s at {per_second} req/s {}", extra.trim());
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let timed = Arc::new(Timed {
            inner: HttpBrevo::new(&config.brevo)?,
            micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        });
        let instantly = Arc::new(Instantly { start: std::time::Instant::now(), arrivals: Mutex::new(Vec::new()) });
        let deliver: Arc<dyn Deliver> = match target {
            Target::Simulator => timed.clone(),
            Target::Instant => instantly.clone(),
        };
        let task = tokio::spawn(forward::run(config, bus.clone(), deliver, stop_rx));
        let target_requests = warm + measured + 1;
        let arrivals = |target: Target| -> Vec<(Duration, usize)> {
            match target {
                Target::Simulator => {
                    let mut reqs: Vec<_> =
                        sim.recorded().into_iter().filter(|r| r.class == EndpointClass::Events).collect();
                    reqs.sort_by_key(|r| r.seq);
                    reqs.iter().map(|r| (r.at(), r.json()["events"].as_array().map_or(0, Vec::len))).collect()
                }
                Target::Instant => instantly.arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds * 3 + 30);
        // Polling must stay cheap: copying and parsing every recorded body
        // here would steal the CPU the forwarder and the simulator share.
        let seen = |target: Target| match target {
            Target::Simulator => sim.request_count(EndpointClass::Events),
            Target::Instant => instantly.arrivals.lock().unwrap_or_else(|p| p.into_inner()).len(),
        };
        while seen(target) < target_requests && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop.send(true);
        task.await??;
        let all = arrivals(target);
        anyhow::ensure!(all.len() >= target_requests, "the forwarder did not reach {target_requests} requests in time");
        let window = &all[warm..warm + measured + 1];
        let span = window[measured].0 - window[0].0;
        let events: usize = window[..measured].iter().map(|(_, n)| n).sum();
        let times: Vec<Duration> = all.iter().map(|(t, _)| *t).collect();
        Ok(Saturation {
            requests: measured,
            span,
            events,
            per_second,
            max_batch,
            max_in_any_second: sim::limits::max_in_any_window(&times, Duration::from_secs(1)),
            too_many: sim.stats().count(429),
            mean_round_trip: Duration::from_micros(
                timed.micros.load(Ordering::Relaxed) / timed.count.load(Ordering::Relaxed).max(1),
            ),
        })
    })
}

fn report(name: &str, s: &Saturation) {
    let secs = s.span.as_secs_f64();
    let rps = s.requests as f64 / secs;
    let eps = s.events as f64 / secs;
    let budget = f64::from(s.per_second) * s.max_batch as f64;
    let mean = s.events as f64 / s.requests as f64;
    println!("{name}: {} requests in {secs:.2} s = {rps:.2} req/s (budget {} req/s)", s.requests, s.per_second);
    println!("{name}: {eps:.0} events/s delivered = {:.1}% of the {budget:.0} events/s budget", 100.0 * eps / budget);
    println!("{name}: {mean:.1} events per request (max {})", s.max_batch);
    println!("{name}: most requests in any 1 s window: {}; 429s: {}", s.max_in_any_second, s.too_many);
    let rtt = s.mean_round_trip.as_secs_f64();
    if rtt > 0.0 {
        println!(
            "{name}: mean round trip {:.1} ms: tokens returning at the answer cap the rate at {:.1}% of the budget",
            rtt * 1000.0,
            100.0 / (1.0 + rtt)
        );
    }
    println!(
        "{}",
        json!({"bench": name, "requests_per_second": rps, "events_per_second": eps,
               "budget_events_per_second": budget, "budget_ratio": eps / budget,
               "mean_events_per_request": mean, "max_in_any_second": s.max_in_any_second,
               "mean_round_trip_ms": rtt * 1000.0, "responses_429": s.too_many})
    );
}

fn main() {
    cpu();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` does not, and a
    // timed run has no place in a test.
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |name: &str| benchmarking && filter.as_deref().map_or(true, |f| name.contains(f));
    for (name, target) in [("saturation_simulator", Target::Simulator), ("saturation_instant", Target::Instant)] {
        if !wants(name) {
            continue;
        }
        match saturation(target) {
            Ok(s) => report(name, &s),
            Err(e) => {
                eprintln!("{name} failed: {e:#}");
                std::process::exit(1);
            }
        }
    }
}
