//! The real `sluice` binary on the embedded bus: quick start defaults, one
//! PostHog event from HTTP to the (dry-run) Brevo request, health, metrics,
//! graceful shutdown, and no re-forwarding after a restart.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Sluice;

const EMBEDDED: &str = r#"
server:
  listen: "127.0.0.1:{port}"
  shutdown_grace_secs: 10
bus:
  kind: embedded
  path: "{dir}/data"
brevo:
  linger_ms: 50
"#;

async fn post_event(base: &str, name: &str) -> reqwest::Response {
    let body = serde_json::json!({
        "api_key": "phc_test", "event": name, "distinct_id": "user-1",
        "properties": {"$set": {"email": "ada@example.com"}, "plan": "pro"}
    });
    reqwest::Client::new().post(format!("{base}/i/v0/e/")).json(&body).send().await.unwrap()
}

fn wait_for_log(s: &Sluice, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let logs = s.logs();
        if logs.contains(needle) {
            return logs;
        }
        assert!(Instant::now() < deadline, "{needle:?} not logged within {within:?}; log:\n{logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_from_http_to_the_dry_run_brevo_request() {
    let mut s = Sluice::start("serve", EMBEDDED);
    let resp = post_event(&s.base, "clicked_buy").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap(), serde_json::json!({"status": 1}));

    let logs = wait_for_log(&s, "clicked_buy", Duration::from_secs(10));
    let line = logs.lines().find(|l| l.contains("would send Brevo request") && l.contains("clicked_buy")).unwrap();
    let entry: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    let body: serde_json::Value = serde_json::from_str(entry["body"].as_str().unwrap()).unwrap();
    let ev = &body["events"][0];
    assert_eq!(entry["path"], "/events/batch");
    assert_eq!(ev["event_name"], "clicked_buy");
    assert_eq!(ev["identifiers"]["email_id"], "ada@example.com");
    assert_eq!(ev["identifiers"]["ext_id"], "user-1");

    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{}/readyz", s.base)).send().await.unwrap().status(), 200);
    let metrics = client.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"sluice_events_received_total{source="posthog"} 1"#), "{metrics}");

    let status = s.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}; log:\n{}", s.logs());
    assert!(s.logs().contains("stopped"));

    // Restart on the same data: the acknowledged event is not forwarded again.
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    let s2 = Sluice::start_in("serve", EMBEDDED, dir);
    let resp = post_event(&s2.base, "second_event").await;
    assert_eq!(resp.status(), 200);
    let logs = wait_for_log(&s2, "second_event", Duration::from_secs(10));
    let restart_log: String = logs.lines().filter(|l| l.contains("would send Brevo request")).collect();
    assert!(!restart_log.contains("clicked_buy"), "acknowledged event re-forwarded after restart:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_json_with_a_code() {
    let s = Sluice::start("serve", EMBEDDED);
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/i/v0/e/", s.base))
        .json(&serde_json::json!({"event": "x", "distinct_id": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no token");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "missing_token");
    let resp = client
        .post(format!("{}/i/v0/e/", s.base))
        .json(&serde_json::json!({"api_key": "phc_x", "event": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "no distinct_id");
}

/// The README's quick start: `sluice serve` with no config file at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_defaults_without_a_config_file() {
    let cwd = tempfile::tempdir().unwrap();
    let log = cwd.path().join("sluice.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("serve")
        .current_dir(cwd.path())
        .env_remove("SLUICE_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = "http://127.0.0.1:8080";
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::raw_http::blocking_get(&format!("{base}/healthz")).ok() != Some(200) {
        assert!(Instant::now() < deadline, "not healthy on 127.0.0.1:8080: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let resp = post_event(base, "quick_start").await;
    assert_eq!(resp.status(), 200);
    assert!(cwd.path().join("sluice-data").is_dir(), "embedded log created in ./sluice-data");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap().contains("quick_start") {
        assert!(Instant::now() < deadline, "dry run did not log the request");
        std::thread::sleep(Duration::from_millis(100));
    }
    common::signal(child.id(), "TERM");
    let status = child.wait().unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("OPEN MODE"), "open mode warning missing:\n{logs}");
    assert!(logs.contains("DRY RUN"), "dry run warning missing:\n{logs}");
}

#[test]
fn check_config_names_unknown_keys_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let bad = common::write_config(dir.path(), "server:\n  lisen: 1\n");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["check-config", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.lisen") && err.contains("unknown field"), "{err}");

    let good = common::write_config(
        dir.path(),
        "connectors:\n  posthog:\n    project_tokens: [\"${T}\"]\n  amplitude:\n    api_keys: [amp_secret_key]\nbrevo:\n  api_key: xkeysib-very-secret\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check-config", "--config"])
        .arg(&good)
        .env("T", "phc_from_env")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    for secret in ["phc_from_env", "amp_secret_key", "xkeysib-very-secret"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert!(printed.contains("<redacted>") && printed.contains("listen: 127.0.0.1:8080"), "{printed}");

    let missing = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check-config", "--config"])
        .arg(&good)
        .env_remove("T")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("environment variable T is not set"));
}

#[test]
fn help_documents_every_subcommand() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "ingress", "forward", "check-config"] {
        assert!(help.contains(sub), "{sub} missing from --help:\n{help}");
        let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args([sub, "--help"]).output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--config"));
    }
}
