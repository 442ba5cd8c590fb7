//! What an operator sees of a running Sluice: the real `sluice serve`
//! binary scraped by a real Prometheus server (Debian's `prometheus`), and
//! its JSON log lines for a refused request.
//!
//! Under `CI=true` a missing `prometheus` binary fails the test; elsewhere
//! the test says SKIP.

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Sluice;
use serde_json::{json, Value};

/// Embedded bus, loopback, open mode, Brevo dry run: nothing external.
const CONFIG: &str = r#"server:
  listen: "127.0.0.1:{port}"
bus:
  kind: embedded
  path: "{dir}/data"
log:
  format: json
"#;

fn prometheus_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("prometheus is not installed under CI=true: scripts/test installs the Debian package");
        }
        eprintln!("SKIP: prometheus is not installed (run scripts/test)");
    }
    found
}

/// A Prometheus server on a free port; killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &PathBuf, scrape_target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: sluice\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"{scrape_target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = common::free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn prometheus");
        Prometheus { child, base: format!("http://127.0.0.1:{port}"), log, _dir: dir }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Poll an instant query until it returns at least one series.
    async fn query_until_present(&self, client: &reqwest::Client, query: &str, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let resp = client.get(format!("{}/api/v1/query", self.base)).query(&[("query", query)]).send().await;
            if let Ok(r) = resp {
                if let Ok(body) = r.json::<Value>().await {
                    assert_ne!(body["status"], "error", "Prometheus rejected {query}: {body}");
                    if let Some(result) = body["data"]["result"].as_array().filter(|r| !r.is_empty()) {
                        return result.clone();
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("no result for {query} within {within:?}; prometheus log:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_sluice_and_serves_its_counters() {
    let Some(binary) = prometheus_binary() else { return };
    let sluice = Sluice::start("serve", CONFIG);
    let client = reqwest::Client::new();

    let resp = client
        .post(format!("{}/i/v0/e/", sluice.base))
        .json(&json!({"api_key": "phc_x", "event": "e", "distinct_id": "u1"}))
        .send()
        .await
        .expect("capture request");
    assert_eq!(resp.status(), 200, "log:\n{}", sluice.logs());

    let prometheus = Prometheus::start(&binary, &format!("127.0.0.1:{}", sluice.port));
    let within = Duration::from_secs(60);

    let up = prometheus.query_until_present(&client, r#"up{job="sluice"}"#, within).await;
    assert_eq!(up[0]["value"][1], "1", "Prometheus cannot scrape Sluice: {up:?}\n{}", prometheus.logs());

    let series = prometheus.query_until_present(&client, r#"sluice_events_received_total{job="sluice"}"#, within).await;
    assert_eq!(series.len(), 1, "one source sent events: {series:?}");
    assert_eq!(series[0]["metric"]["source"], "posthog", "{series:?}");
    assert_eq!(series[0]["value"][1], "1", "one event was accepted: {series:?}");

    // A histogram arrives as its _bucket series, which the alerts and the
    // dashboard query with histogram_quantile.
    let buckets = prometheus
        .query_until_present(
            &client,
            r#"sluice_http_request_duration_seconds_bucket{route="/i/v0/e",le="+Inf"}"#,
            within,
        )
        .await;
    assert_eq!(buckets[0]["value"][1], "1", "{buckets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_logged_with_its_request_id_and_without_its_payload() {
    let sluice = Sluice::start("serve", CONFIG);
    let client = reqwest::Client::new();
    let marker = "payload-marker-7d1c";
    // No distinct_id: refused with 400.
    let resp = client
        .post(format!("{}/i/v0/e/", sluice.base))
        .header("x-request-id", "it-req-42")
        .json(&json!({"api_key": "phc_x", "event": "e", "properties": {"note": marker}}))
        .send()
        .await
        .expect("capture request");
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("it-req-42"));

    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let logs = sluice.logs();
        let found = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["message"] == "request refused" || l["message"] == "request refused");
        if let Some(l) = found {
            break l;
        }
        assert!(Instant::now() < deadline, "no \"request refused\" line; log:\n{logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = line.to_string();
    assert!(text.contains(r#""request_id":"it-req-42""#), "request id missing from {text}");
    assert!(text.contains("missing_distinct_id"), "reason missing from {text}");
    assert!(!sluice.logs().contains(marker), "the payload reached the log:\n{}", sluice.logs());
}

/// The exporter keeps histogram samples until something folds them into
/// buckets; without the upkeep thread a Sluice nobody scrapes grew ~1.2 MB/s
/// under load (BENCHMARKS.md). The binary must start it with the recorder.
#[test]
fn the_binary_folds_histograms_without_a_scrape() {
    let sluice = Sluice::start("serve", CONFIG);
    sluice.wait_healthy(Duration::from_secs(30));
    let tasks = format!("/proc/{}/task", sluice.child.id());
    let names: Vec<String> = std::fs::read_dir(&tasks)
        .unwrap_or_else(|e| panic!("{tasks}: {e}"))
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    // Thread names are cut to 15 bytes in /proc.
    assert!(names.iter().any(|n| n == "sluice-metrics-"), "no metrics upkeep thread among {names:?}");
}
