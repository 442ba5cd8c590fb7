//! `sluice map` and `sluice dlq list|replay` through the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use sluice::bus::{embedded::EmbeddedLog, Publisher};
use sluice::bus::{SubscriberOpener, Topic};
use sluice::config::EmbeddedConfig;
use sluice::event::{DeadLetter, Event, Kind, Source};

fn sluice(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("sluice output")
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

fn envelope(name: &str, user: &str) -> Event {
    let mut e = Event::new(Source::Posthog, "posthog", "phc_cli", Kind::Track, name, chrono::Utc::now());
    e.distinct_id = Some(user.into());
    e.email = Some(format!("{user}@example.com"));
    e
}

#[test]
fn map_prints_the_requests_a_config_produces() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.yaml");
    std::fs::write(
        &cfg,
        "connectors:\n  posthog:\n    event_mapping: {signed_up: SignUp}\n    event_filters: [signed_up]\n",
    )
    .unwrap();
    let mut input = String::new();
    for (name, user) in [("signed_up", "ann"), ("$pageview", "bob"), ("signed_up", "cy")] {
        input.push_str(&String::from_utf8(envelope(name, user).to_record().payload).unwrap());
        input.push('\n');
    }
    let out = sluice(&["map", "--config", cfg.to_str().unwrap()], &input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = lines(&out);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0]["skipped"]["reason"], "filtered");
    let req = &lines[1]["request"];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["url"], "https://api.brevo.com/v3/events/batch");
    let events = req["body"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e["event_name"] == "SignUp"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 envelopes: 1 requests, 1 skipped"));
}

#[test]
fn map_refuses_a_broken_config_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.yaml");
    std::fs::write(&cfg, "connectors:\n  posthog:\n    event_mapping: {signed_up: \"Sign Up!\"}\n").unwrap();
    let out = sluice(&["map", "--config", cfg.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connectors.posthog.event_mapping.signed_up"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_then_replay_republishes_the_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.yaml");
    std::fs::write(&cfg, format!("bus:\n  kind: embedded\n  path: {}\n", dir.path().join("data").display())).unwrap();
    let stuck = envelope("signed_up", "dee");
    {
        let log = EmbeddedLog::open(&dir.path().join("data"), EmbeddedConfig::default()).unwrap();
        let letter = DeadLetter {
            reason: "brevo_rejected".into(),
            detail: "400: invalid_parameter: attribute PLAN".into(),
            failed_at: chrono::Utc::now(),
            event: Some(stuck.clone()),
            raw: None,
        };
        log.publish(Topic::DeadLetters, vec![letter.to_record()]).await.unwrap();
    }
    let cfg = cfg.to_str().unwrap().to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sluice(&args, "")
        })
    };
    let out = run(vec!["dlq".into(), "list".into(), "--config".into(), cfg.clone()]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = lines(&out);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["reason"], "brevo_rejected");
    assert_eq!(listed[0]["event"]["id"], stuck.id.as_str());

    let out = run(vec!["dlq".into(), "replay".into(), "--config".into(), cfg.clone()]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines(&out)[0]["replayed"], stuck.id.as_str());

    let out = run(vec!["dlq".into(), "list".into(), "--config".into(), cfg]).await.unwrap();
    assert!(lines(&out).is_empty(), "replayed letters are no longer pending");

    let log = EmbeddedLog::open(&dir.path().join("data"), EmbeddedConfig::default()).unwrap();
    let mut events = log.open(Topic::Events).await.unwrap();
    let got = events.poll(10, Duration::from_millis(300)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(Event::from_payload(&got[0].payload).unwrap(), stuck);
}
