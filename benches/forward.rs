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
//! professional) the Brevo plan.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use serde_json::json;
use sluice::bus::{Bus, Topic};
use sluice::config::Config;
use sluice::event::{Event, Kind, Source};
use sluice::forward::batcher::{BatchLimits, Lane};
use sluice::forward::mapping::{map_event, Mapped};
use sluice::forward::{self, HttpBrevo};
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

/// Steady-state figures of one saturation run.
struct Saturation {
    requests: usize,
    span: Duration,
    events: usize,
    per_second: u32,
    max_batch: usize,
    max_in_any_second: usize,
    too_many: u64,
}

fn saturation() -> anyhow::Result<Saturation> {
    let seconds: u64 = std::env::var("SLUICE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let plan = std::env::var("SLUICE_BENCH_PLAN").unwrap_or_else(|_| "general".into());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let sim_plan: sim::Plan = plan.parse().map_err(|e| anyhow::anyhow!("SLUICE_BENCH_PLAN: {e:?}"))?;
        let sim = sim::start(SimConfig::new("xkeysib-bench").plan(sim_plan)).await?;
        let dir = tempfile::tempdir()?;
        let yaml = format!(
            "bus:\n  path: {}\nbrevo:\n  api_key: xkeysib-bench\n  base_url: {}\n  plan: {plan}\n",
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
        eprintln!("saturation: {backlog} events waiting; measuring {seconds} s at {per_second} req/s");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let deliver = Arc::new(HttpBrevo::new(&config.brevo)?);
        let task = tokio::spawn(forward::run(config, bus.clone(), deliver, stop_rx));
        let target = warm + measured + 1;
        let done = sim
            .wait_until(Duration::from_secs(seconds * 3 + 30), |s| {
                s.stats().class(EndpointClass::Events).requests as usize >= target
            })
            .await;
        let _ = stop.send(true);
        task.await??;
        anyhow::ensure!(done, "the forwarder did not reach {target} requests in time");
        let mut reqs: Vec<_> = sim.recorded().into_iter().filter(|r| r.class == EndpointClass::Events).collect();
        reqs.sort_by_key(|r| r.seq);
        let window = &reqs[warm..warm + measured + 1];
        let span = window[measured].at() - window[0].at();
        let events: usize = window[..measured].iter().map(|r| r.json()["events"].as_array().map_or(0, Vec::len)).sum();
        let stats = sim.stats();
        Ok(Saturation {
            requests: measured,
            span,
            events,
            per_second,
            max_batch,
            max_in_any_second: stats.class(EndpointClass::Events).max_in_any_second,
            too_many: stats.count(429),
        })
    })
}

fn main() {
    cpu();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` does not, and a
    // timed run has no place in a test.
    let mut args = std::env::args().skip(1);
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let filter = args.find(|a| !a.starts_with('-'));
    if !benchmarking || !filter.as_deref().map_or(true, |f| "saturation".contains(f)) {
        return;
    }
    match saturation() {
        Ok(s) => {
            let secs = s.span.as_secs_f64();
            let rps = s.requests as f64 / secs;
            let eps = s.events as f64 / secs;
            let budget = f64::from(s.per_second) * s.max_batch as f64;
            let mean = s.events as f64 / s.requests as f64;
            println!(
                "saturation: {} requests in {:.2} s = {:.2} req/s (budget {} req/s)",
                s.requests, secs, rps, s.per_second
            );
            println!(
                "saturation: {eps:.0} events/s delivered = {:.1}% of the {budget:.0} events/s budget",
                100.0 * eps / budget
            );
            println!("saturation: {mean:.1} events per request (max {})", s.max_batch);
            println!("saturation: most requests in any 1 s window: {}; 429s: {}", s.max_in_any_second, s.too_many);
            println!(
                "{}",
                json!({"bench": "forward_saturation", "requests_per_second": rps, "events_per_second": eps,
                       "budget_events_per_second": budget, "budget_ratio": eps / budget,
                       "mean_events_per_request": mean, "max_in_any_second": s.max_in_any_second,
                       "responses_429": s.too_many})
            );
        }
        Err(e) => {
            eprintln!("saturation run failed: {e:#}");
            std::process::exit(1);
        }
    }
}
