//! The load generator behind `scripts/bench-ingress`: closed-loop HTTP/1.1
//! keep-alive connections (each sends its next request as soon as the
//! previous answer arrived, like `wrk`), for a fixed time, with exact latency
//! percentiles (every latency is kept and sorted; a 10 s run is a few hundred
//! thousand numbers).
//!
//! It exists beside `wrk` because two of the scenarios need work per request
//! that `wrk`'s Lua cannot do cheaply: Stripe webhooks must be signed
//! (HMAC-SHA256 over "{t}.{body}" keyed by the whole `whsec_` secret) and
//! every webhook / Amplitude event needs a fresh id, because Sluice
//! deduplicates repeated ids. Bodies are built once as templates; per request
//! only the id digits are patched in.
//!
//! It also watches the server under test (`--pid name=PID`): CPU from
//! `/proc/PID/stat` (utime + stime) over exactly the measured window, and
//! peak RSS (`VmHWM`, reset through `/proc/PID/clear_refs` when the window
//! opens), so the figures describe the load and nothing else.
//!
//! Output: one JSON object on stdout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

#[path = "../benches/support/bodies.rs"]
mod bodies;
use bodies::{amplitude_template, posthog_template, stripe_signature, stripe_template, Template};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// PostHog batch: `{api_key, batch: [10 events], sent_at}`, ~650 bytes per event.
    Posthog,
    /// Amplitude HTTP V2: `{api_key, events: [100 events]}`.
    Amplitude,
    /// One Stripe-signed webhook event per request.
    Stripe,
}

#[derive(Parser, Debug)]
#[command(about = "Closed-loop HTTP load for scripts/bench-ingress")]
struct Args {
    /// Server address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    addr: SocketAddr,
    /// Request path, e.g. /batch/ or /2/httpapi or /webhooks/stripe.
    #[arg(long)]
    path: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    #[arg(long, default_value_t = 128)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measured window (not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Events per request (PostHog default 10, Amplitude 100, Stripe always 1).
    #[arg(long)]
    events: Option<usize>,
    /// PostHog project token / Amplitude API key written into the bodies.
    #[arg(long, default_value = "phc_sluicebench")]
    token: String,
    /// Stripe endpoint secret (`whsec_...`).
    #[arg(long, default_value = "whsec_sluicebench")]
    secret: String,
    /// Processes to watch, as name=PID (repeatable).
    #[arg(long = "pid")]
    pids: Vec<String>,
    /// Print one line per second (status counts, RSS of watched pids) in the output.
    #[arg(long)]
    timeline: bool,
    /// Tokio worker threads for the generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// What one connection saw in the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    status: BTreeMap<u16, u64>,
    errors: u64,
    retry_after_503: u64,
}

/// Per-second counters for `--timeline`.
struct Timeline {
    ok: Vec<AtomicU64>,
    unavailable: Vec<AtomicU64>,
    other: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
}

impl Timeline {
    fn new(secs: usize) -> Timeline {
        let v = || (0..secs).map(|_| AtomicU64::new(0)).collect();
        Timeline { ok: v(), unavailable: v(), other: v(), errors: v() }
    }
}

struct Shared {
    args: Args,
    template: Template,
    counter: AtomicU64,
    start: Instant,
    measure_from: Instant,
    measure_to: Instant,
    timeline: Timeline,
}

async fn connect(addr: SocketAddr) -> std::io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn connection(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    let a = &shared.args;
    let host = HeaderValue::from_str(&a.addr.to_string()).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
    let mut sender = None;
    loop {
        let now = Instant::now();
        if now >= shared.measure_to {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(a.addr).await {
                Ok(s) => sender.insert(s),
                Err(_) => {
                    if now >= shared.measure_from {
                        tally.errors += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let n = shared.counter.fetch_add(1, Ordering::Relaxed);
        let body = shared.template.render(n);
        let mut req = Request::post(a.path.as_str()).header(HOST, host.clone());
        req = req.header(CONTENT_TYPE, "application/json");
        if a.scenario == Scenario::Stripe {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            req = req.header("stripe-signature", stripe_signature(&a.secret, t, &body));
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body))) else { unreachable!("static request parts") };
        let sent = Instant::now();
        let outcome = async {
            s.ready().await?;
            let resp = s.send_request(req).await?;
            let status = resp.status().as_u16();
            let retry_after = resp.headers().contains_key("retry-after");
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, retry_after))
        }
        .await;
        let done = Instant::now();
        let counted = sent >= shared.measure_from && done <= shared.measure_to;
        let sec = done.duration_since(shared.start).as_secs() as usize;
        let tl = &shared.timeline;
        match outcome {
            Ok((status, retry_after)) => {
                if counted {
                    tally.latencies_us.push(done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
                    *tally.status.entry(status).or_default() += 1;
                    if status == 503 && retry_after {
                        tally.retry_after_503 += 1;
                    }
                }
                if a.timeline && sec < tl.ok.len() {
                    let slot = match status {
                        200..=299 => &tl.ok[sec],
                        503 => &tl.unavailable[sec],
                        _ => &tl.other[sec],
                    };
                    slot.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                if counted {
                    tally.errors += 1;
                }
                if a.timeline && sec < tl.errors.len() {
                    tl.errors[sec].fetch_add(1, Ordering::Relaxed);
                }
                sender = None;
            }
        }
    }
    tally
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            std::process::exit(2);
        }
    };
    let watched: Vec<(String, u32)> = args
        .pids
        .iter()
        .filter_map(|p| p.split_once('=').and_then(|(n, pid)| Some((n.to_string(), pid.parse().ok()?))))
        .collect();
    let run = (SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0) & 0xffff) as u16;
    let (template, path_events) = match args.scenario {
        Scenario::Posthog => {
            let n = args.events.unwrap_or(10);
            (posthog_template(&args.token, n, run), n)
        }
        Scenario::Amplitude => {
            let n = args.events.unwrap_or(100);
            (amplitude_template(&args.token, n, run), n)
        }
        Scenario::Stripe => (stripe_template(run), 1),
    };
    let body_bytes = template.bytes.len();
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let measure_to = measure_from + Duration::from_secs_f64(args.duration);
    let secs = (args.warmup + args.duration).ceil() as usize + 2;
    let connections = args.connections;
    let timeline_on = args.timeline;
    let shared = Arc::new(Shared {
        args,
        template,
        counter: AtomicU64::new(0),
        start,
        measure_from,
        measure_to,
        timeline: Timeline::new(secs),
    });
    let tck = clk_tck();

    let result = rt.block_on(async {
        let tasks: Vec<_> = (0..connections).map(|_| tokio::spawn(connection(shared.clone()))).collect();
        // Sample the watched processes: at the window's start (CPU baseline,
        // peak-RSS reset), every second for the timeline, and at its end.
        let sampler = {
            let watched = watched.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(measure_from.into()).await;
                let base: Vec<Option<u64>> = watched.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
                let self_base = cpu_ticks(std::process::id());
                for (_, pid) in &watched {
                    // "5" resets VmHWM to the current RSS (Linux >= 4.0).
                    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
                }
                let mut rss_timeline = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    if Instant::now() >= measure_to {
                        break;
                    }
                    let t = measure_from.elapsed().as_secs_f64();
                    let rss: Vec<_> = watched.iter().map(|(n, pid)| (n.clone(), status_kb(*pid, "VmRSS:"))).collect();
                    rss_timeline.push((t, rss));
                }
                let end: Vec<Option<u64>> = watched.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
                let self_end = cpu_ticks(std::process::id());
                (base, end, self_base, self_end, rss_timeline)
            })
        };
        let mut all = Tally::default();
        for t in tasks {
            if let Ok(tally) = t.await {
                all.latencies_us.extend(tally.latencies_us);
                for (k, v) in tally.status {
                    *all.status.entry(k).or_default() += v;
                }
                all.errors += tally.errors;
                all.retry_after_503 += tally.retry_after_503;
            }
        }
        let sampled = sampler.await.ok();
        (all, sampled)
    });
    let (mut all, sampled) = result;
    let window = shared.args.duration;
    all.latencies_us.sort_unstable();
    let ok: u64 = all.status.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
    let total: u64 = all.status.values().sum();
    let mut watched_out = serde_json::Map::new();
    let mut loadgen_cpu = serde_json::Value::Null;
    let mut rss_timeline = Vec::new();
    if let Some((base, end, sb, se, rt_samples)) = sampled {
        for (i, (name, pid)) in watched.iter().enumerate() {
            let cpu = match (base[i], end[i]) {
                (Some(b), Some(e)) => json!((e - b) as f64 / tck / window * 100.0),
                _ => serde_json::Value::Null,
            };
            watched_out.insert(
                name.clone(),
                json!({"pid": pid, "cpu_pct": cpu, "peak_rss_kb": status_kb(*pid, "VmHWM:"), "rss_kb": status_kb(*pid, "VmRSS:")}),
            );
        }
        if let (Some(b), Some(e)) = (sb, se) {
            loadgen_cpu = json!((e - b) as f64 / tck / window * 100.0);
        }
        rss_timeline = rt_samples;
    }
    let mut out = json!({
        "scenario": format!("{:?}", shared.args.scenario).to_lowercase(),
        "addr": shared.args.addr.to_string(),
        "path": shared.args.path,
        "connections": connections,
        "duration_s": window,
        "events_per_request": path_events,
        "body_bytes": body_bytes,
        "requests": total,
        "ok_requests": ok,
        "rps": ok as f64 / window,
        "eps": (ok as f64 * path_events as f64) / window,
        "non2xx": total - ok,
        "errors": all.errors,
        "retry_after_503": all.retry_after_503,
        "status": all.status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "p50_ms": percentile(&all.latencies_us, 50.0),
        "p99_ms": percentile(&all.latencies_us, 99.0),
        "p999_ms": percentile(&all.latencies_us, 99.9),
        "max_ms": all.latencies_us.last().map(|v| *v as f64 / 1000.0).unwrap_or(0.0),
        "watched": watched_out,
        "loadgen_cpu_pct": loadgen_cpu,
    });
    if timeline_on {
        let tl = &shared.timeline;
        let rows: Vec<_> = (0..secs)
            .map(|s| {
                let t = s as f64 - shared.args.warmup;
                let rss = rss_timeline
                    .iter()
                    .find(|(at, _)| (*at - t).abs() < 0.6)
                    .map(|(_, r)| r.iter().map(|(n, kb)| (n.clone(), json!(kb))).collect::<serde_json::Map<_, _>>());
                json!({
                    "t": t,
                    "ok": tl.ok[s].load(Ordering::Relaxed),
                    "503": tl.unavailable[s].load(Ordering::Relaxed),
                    "other": tl.other[s].load(Ordering::Relaxed),
                    "errors": tl.errors[s].load(Ordering::Relaxed),
                    "rss_kb": rss,
                })
            })
            .collect();
        out["timeline"] = json!(rows);
    }
    println!("{out}");
}
