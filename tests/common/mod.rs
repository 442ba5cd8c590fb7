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
        let port = free_port();
        let cfg = yaml.replace("{port}", &port.to_string()).replace("{dir}", &dir.path().display().to_string());
        let cfg_path = dir.path().join(format!("sluice-{port}.yaml"));
        std::fs::write(&cfg_path, cfg).expect("write config");
        let log = dir.path().join(format!("sluice-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg(role)
            .arg("--config")
            .arg(&cfg_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn sluice");
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
    use sluice::bus::{Bus, Topic};
    use sluice::config::{BusConfig, BusKind, KafkaConfig};
    let mut properties = std::collections::BTreeMap::new();
    for (k, v) in fast_group_properties() {
        properties.insert(k.to_string(), v.to_string());
    }
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
    while out.len() < want && tokio::time::Instant::now() < deadline {
        for m in sub.poll(want - out.len(), Duration::from_millis(500)).await.expect("poll") {
            out.push(sluice::event::Event::from_payload(&m.payload).expect("envelope decodes"));
        }
    }
    out
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
