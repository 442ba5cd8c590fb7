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
//! `/proc/PID/stat` (utime + stime) over exactly the measured window, minor
//! page faults per second over the same window (minflt), and peak RSS (`VmHWM`, reset through `/proc/PID/clear_refs` when the window
//! opens), so the figures describe the load and nothing else.
//!
//! Output: one JSON object on stdout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::io::Write as _;

use clap::{Parser, ValueEnum};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "../benches/support/bodies.rs"]
mod bodies;
use bodies::{amplitude_template, posthog_template, stripe_signature, stripe_template, PosthogUsers, Template};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// PostHog batch: `{api_key, batch: [10 events], sent_at}`, ~650 bytes per
    /// event, ten users per batch (a server-side SDK's).
    Posthog,
    /// The same batch as a browser's posthog-js sends it: one user per
    /// batch, another user per request.
    PosthogBrowser,
    /// Amplitude HTTP V2: `{api_key, events: [100 events]}`.
    Amplitude,
    /// One Stripe-signed webhook event per request.
    Stripe,
}

impl Scenario {
    /// The name `--scenario` takes (and the results report): `posthog-browser`.
    fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
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

/// One keep-alive HTTP/1.1 connection, spoken directly: the request is one
/// buffer written with one call, the answer is read into a reused buffer and
/// parsed just enough (status, `Content-Length` or chunked, `Connection:
/// close`, `Retry-After`). A general client (hyper's) hands every request to
/// a connection task and back through a channel: two tasks woken per request
/// on a machine whose two cores the server under test needs too. This is
/// the shape of `wrk`'s loop (BENCHMARKS.md, "Load generator").
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(16 * 1024) })
    }

    /// Send one request and read its whole answer.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<wire::Answer> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            if let Some(answer) = wire::parse(&self.buf)? {
                if answer.len < self.buf.len() {
                    return Err(std::io::Error::other("bytes after the answer"));
                }
                return Ok(answer);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// The request bytes for request number `n`: head and body in one buffer.
fn build_request(shared: &Shared, n: u64, out: &mut Vec<u8>) {
    let a = &shared.args;
    out.clear();
    let _ = write!(
        out,
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        a.path,
        a.addr,
        shared.template.bytes.len()
    );
    if a.scenario == Scenario::Stripe {
        // The signature covers the body: render it before the header.
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let body = shared.template.render(n);
        let _ = write!(out, "stripe-signature: {}\r\n\r\n", stripe_signature(&a.secret, t, &body));
        out.extend_from_slice(&body);
    } else {
        out.extend_from_slice(b"\r\n");
        shared.template.render_into(n, out);
    }
}

async fn connection(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    let a = &shared.args;
    let mut conn: Option<Conn> = None;
    let mut request = Vec::with_capacity(shared.template.bytes.len() + 512);
    loop {
        let now = Instant::now();
        if now >= shared.measure_to {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(a.addr).await {
                Ok(c) => conn.insert(c),
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
        build_request(&shared, n, &mut request);
        let sent = Instant::now();
        let outcome = c.exchange(&request).await;
        let done = Instant::now();
        let counted = sent >= shared.measure_from && done <= shared.measure_to;
        let sec = done.duration_since(shared.start).as_secs() as usize;
        let tl = &shared.timeline;
        match outcome {
            Ok(answer) => {
                let status = answer.status;
                if counted {
                    tally.latencies_us.push(done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
                    *tally.status.entry(status).or_default() += 1;
                    if status == 503 && answer.retry_after {
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
                if answer.close {
                    conn = None;
                }
            }
            Err(_) => {
                if counted {
                    tally.errors += 1;
                }
                if a.timeline && sec < tl.errors.len() {
                    tl.errors[sec].fetch_add(1, Ordering::Relaxed);
                }
                conn = None;
            }
        }
    }
    tally
}

/// Just enough of an HTTP/1.1 response reader for a load generator.
mod wire {
    /// A complete answer at the start of a buffer.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Answer {
        pub status: u16,
        pub retry_after: bool,
        /// The server will close the connection after it.
        pub close: bool,
        /// Bytes of the buffer the answer took, head and body.
        pub len: usize,
    }

    fn invalid(what: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
    }

    /// `Ok(None)` while the buffer holds only part of an answer.
    pub fn parse(buf: &[u8]) -> std::io::Result<Option<Answer>> {
        let Some(head_end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
            if buf.len() > 64 * 1024 {
                return Err(invalid("response head over 64 KiB"));
            }
            return Ok(None);
        };
        let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| invalid("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| invalid("bad status line"))?;
        let (mut length, mut chunked, mut close, mut retry_after) =
            (None, false, status_line.starts_with("HTTP/1.0"), false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { return Err(invalid("bad header line")) };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|_| invalid("bad content-length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("retry-after") {
                retry_after = true;
            }
        }
        let body_at = head_end + 4;
        let len = if chunked {
            match chunked_end(&buf[body_at..])? {
                Some(n) => body_at + n,
                None => return Ok(None),
            }
        } else {
            let n = body_at + length.unwrap_or(0);
            if buf.len() < n {
                return Ok(None);
            }
            n
        };
        Ok(Some(Answer { status, retry_after, close, len }))
    }

    /// Where a chunked body ends (after the last chunk and the trailers).
    fn chunked_end(body: &[u8]) -> std::io::Result<Option<usize>> {
        let mut at = 0;
        loop {
            let Some(eol) = memchr::memmem::find(&body[at..], b"\r\n") else { return Ok(None) };
            let size_text = std::str::from_utf8(&body[at..at + eol]).map_err(|_| invalid("bad chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
            at += eol + 2;
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let Some(eol) = memchr::memmem::find(&body[at..], b"\r\n") else { return Ok(None) };
                    at += eol + 2;
                    if eol == 0 {
                        return Ok(Some(at));
                    }
                }
            }
            if body.len() < at + size + 2 {
                return Ok(None);
            }
            if &body[at + size..at + size + 2] != b"\r\n" {
                return Err(invalid("chunk not followed by CRLF"));
            }
            at += size + 2;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn content_length_answers_complete_only_with_their_body() {
            let full = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 12\r\n\r\n{\"status\":1}";
            for cut in 0..full.len() {
                assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
            }
            let a = parse(full).unwrap().unwrap();
            assert_eq!(a, Answer { status: 200, retry_after: false, close: false, len: full.len() });
        }

        #[test]
        fn status_close_and_retry_after_are_read() {
            let text =
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
            let a = parse(text).unwrap().unwrap();
            assert_eq!(a, Answer { status: 503, retry_after: true, close: true, len: text.len() });
            let old = b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
            assert!(parse(old).unwrap().unwrap().close, "HTTP/1.0 closes by default");
        }

        #[test]
        fn chunked_bodies_end_after_the_last_chunk_and_trailers() {
            let text = b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=1\r\nabc\r\n0\r\nx-t: 1\r\n\r\n";
            for cut in 0..text.len() {
                assert_eq!(parse(&text[..cut]).unwrap(), None, "cut at {cut}");
            }
            assert_eq!(parse(text).unwrap().unwrap().len, text.len());
            assert_eq!(parse(text).unwrap().unwrap().status, 400);
        }

        #[test]
        fn garbage_is_an_error_not_a_hang() {
            assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
            assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
            assert!(parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err());
            assert!(parse(&vec![b'a'; 70_000]).is_err());
        }
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    Some(stat_field(pid, 14)? + stat_field(pid, 15)?)
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`: 10 is minflt,
/// 14 and 15 utime and stime.
fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Counted after the parenthesised command name (field 2), which may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
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
    let runtime = || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            std::process::exit(2);
        }
    };
    let threads = args.threads.max(1);
    let watched: Vec<(String, u32)> = args
        .pids
        .iter()
        .filter_map(|p| p.split_once('=').and_then(|(n, pid)| Some((n.to_string(), pid.parse().ok()?))))
        .collect();
    let run = (SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0) & 0xffff) as u16;
    let (template, path_events) = match args.scenario {
        Scenario::Posthog | Scenario::PosthogBrowser => {
            let n = args.events.unwrap_or(10);
            let users =
                if args.scenario == Scenario::Posthog { PosthogUsers::PerEvent } else { PosthogUsers::PerRequest };
            (posthog_template(&args.token, n, run, users), n)
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

    // One single-threaded runtime per generator thread, each driving its
    // share of the connections (like wrk's threads): no work stealing, no
    // cross-thread wake-ups.
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let shared = shared.clone();
            let rt = runtime();
            let mine = connections / threads + usize::from(t < connections % threads);
            std::thread::spawn(move || {
                rt.block_on(async {
                    let tasks: Vec<_> = (0..mine).map(|_| tokio::spawn(connection(shared.clone()))).collect();
                    let mut tallies = Vec::with_capacity(mine);
                    for t in tasks {
                        if let Ok(tally) = t.await {
                            tallies.push(tally);
                        }
                    }
                    tallies
                })
            })
        })
        .collect();
    let result = runtime().block_on(async {
        // Sample the watched processes: at the window's start (CPU baseline,
        // peak-RSS reset), every second for the timeline, and at its end.
        let sampler = {
            let watched = watched.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(measure_from.into()).await;
                let base: Vec<Option<u64>> = watched.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
                let faults_base: Vec<Option<u64>> = watched.iter().map(|(_, pid)| stat_field(*pid, 10)).collect();
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
                let faults_end: Vec<Option<u64>> = watched.iter().map(|(_, pid)| stat_field(*pid, 10)).collect();
                let self_end = cpu_ticks(std::process::id());
                (base, end, self_base, self_end, rss_timeline, faults_base, faults_end)
            })
        };
        let sampled = sampler.await.ok();
        let mut all = Tally::default();
        for tally in workers.into_iter().flat_map(|w| w.join().unwrap_or_default()) {
            all.latencies_us.extend(tally.latencies_us);
            for (k, v) in tally.status {
                *all.status.entry(k).or_default() += v;
            }
            all.errors += tally.errors;
            all.retry_after_503 += tally.retry_after_503;
        }
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
    if let Some((base, end, sb, se, rt_samples, fb, fe)) = sampled {
        for (i, (name, pid)) in watched.iter().enumerate() {
            let cpu = match (base[i], end[i]) {
                (Some(b), Some(e)) => json!((e - b) as f64 / tck / window * 100.0),
                _ => serde_json::Value::Null,
            };
            // Minor page faults a second: each zeroes a page, and returning
            // pages interrupts every thread for its TLB (BENCHMARKS.md).
            let faults = match (fb[i], fe[i]) {
                (Some(b), Some(e)) => json!((e.saturating_sub(b)) as f64 / window),
                _ => serde_json::Value::Null,
            };
            watched_out.insert(
                name.clone(),
                json!({"pid": pid, "cpu_pct": cpu, "minor_faults_per_s": faults, "peak_rss_kb": status_kb(*pid, "VmHWM:"), "rss_kb": status_kb(*pid, "VmRSS:")}),
            );
        }
        if let (Some(b), Some(e)) = (sb, se) {
            loadgen_cpu = json!((e - b) as f64 / tck / window * 100.0);
        }
        rss_timeline = rt_samples;
    }
    let mut out = json!({
        "scenario": shared.args.scenario.name(),
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

#[cfg(test)]
mod proc_tests {
    use super::*;

    #[test]
    fn stat_fields_count_this_process_s_faults_and_cpu() {
        let me = std::process::id();
        let before = stat_field(me, 10).expect("minflt");
        // Touch 16 MiB of fresh pages: at least a fault per 4 KiB page
        // (fewer only with huge pages, still well over a hundred).
        let mut pages = vec![0u8; 16 << 20];
        for p in pages.iter_mut().step_by(4096) {
            *p = 1;
        }
        std::hint::black_box(&pages);
        let after = stat_field(me, 10).expect("minflt");
        assert!(after >= before + 100, "minflt {before} -> {after}");
        assert!(cpu_ticks(me).is_some());
        assert_eq!(stat_field(me, 2), None, "the command name is not a number");
    }

    #[test]
    fn results_name_each_scenario_as_the_flag_does() {
        // bench-ingress pairs each run with the no-op run of the same name.
        for s in Scenario::value_variants() {
            let name = s.name();
            assert_eq!(Scenario::from_str(&name, false).ok(), Some(*s), "{name}");
        }
        assert_eq!(Scenario::PosthogBrowser.name(), "posthog-browser");
    }
}
