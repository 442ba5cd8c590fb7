//! Disk full on the embedded bus: `sluice serve` with `bus.path` on a small
//! tmpfs. Once the log cannot grow, the ingress answers 503 + Retry-After
//! (never 2xx for an event it could not store) and `/readyz` turns 503; after
//! space returns, publishing works again without a restart, every event that
//! was acknowledged is delivered, and the log reopens cleanly after a restart.
//!
//! Needs root for `mount -t tmpfs`: under `CI=true` a failed mount fails the
//! test, elsewhere it skips with a message.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::Sluice;

const TOKEN: &str = "phc_disk";

fn yaml(data: &std::path::Path) -> String {
    format!(
        r#"server:
  listen: "127.0.0.1:{{port}}"
  retry_after_secs: 2
bus:
  kind: embedded
  path: "{}"
connectors:
  posthog:
    project_tokens: [{TOKEN}]
brevo:
  linger_ms: 20
log:
  format: json
"#,
        data.display()
    )
}

struct Posted {
    id: String,
    status: u16,
    retry_after: Option<String>,
}

/// One event with ~2 KB of properties, so the log fills in a few thousand.
async fn post(client: &reqwest::Client, base: &str) -> Posted {
    let id = uuid::Uuid::new_v4().to_string();
    let mut ev = common::posthog_event(TOKEN, &id, "user-disk");
    ev["properties"]["padding"] = serde_json::Value::from("x".repeat(2048));
    let resp = client.post(format!("{base}/i/v0/e/")).json(&ev).send().await.expect("ingress answers");
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    Posted { id, status: resp.status().as_u16(), retry_after }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_with_503_and_recovers_when_space_returns() {
    let Some(fs) = common::Tmpfs::mount("8m") else { return };
    let data = fs.path.join("data");
    let s = Sluice::start("serve", &yaml(&data));
    let client = reqwest::Client::new();

    // Leave the log ~1.5 MB: most of the tmpfs goes to a file we can delete.
    let filler = fs.path.join("filler");
    let used: u64 =
        std::fs::read_dir(&data).expect("data dir").filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    let fill = (8u64 << 20).saturating_sub(used).saturating_sub(3 << 19);
    std::fs::write(&filler, vec![0u8; fill as usize]).expect("write the filler file");

    let mut before: Vec<Posted> = Vec::new();
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 20 {
        let p = post(&client, &s.base).await;
        if (200..300).contains(&p.status) {
            refused_in_a_row = 0;
        } else {
            refused_in_a_row += 1;
        }
        before.push(p);
        assert!(before.len() < 5000, "the log never filled the tmpfs: {} events stored", before.len());
    }
    let acked_before: Vec<&Posted> = before.iter().filter(|p| (200..300).contains(&p.status)).collect();
    let refused: Vec<&Posted> = before.iter().filter(|p| !(200..300).contains(&p.status)).collect();
    assert!(acked_before.len() > 50, "the log filled too early to prove anything: {} acked", acked_before.len());
    let mut refusal_statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for p in &refused {
        *refusal_statuses.entry(p.status).or_default() += 1;
        assert_eq!(p.status, 503, "a full disk must be a 503, got {}", p.status);
        assert_eq!(p.retry_after.as_deref(), Some("2"), "503 without Retry-After");
    }
    let ready = client.get(format!("{}/readyz", s.base)).send().await.expect("readyz");
    assert_eq!(ready.status(), 503, "/readyz must report the unwritable log");
    assert_eq!(common::raw_http::blocking_get(&format!("{}/healthz", s.base)).expect("healthz"), 200);

    // Space returns.
    std::fs::remove_file(&filler).expect("delete the filler");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after: Vec<Posted> = Vec::new();
    loop {
        let p = post(&client, &s.base).await;
        let ok = (200..300).contains(&p.status);
        after.push(p);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "publishing did not recover after space returned; log:\n{}", s.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..50 {
        let p = post(&client, &s.base).await;
        assert_eq!(p.status, 200, "publishing is flaky after recovery");
        after.push(p);
    }
    let ready = common::eventually(Duration::from_secs(10), || {
        (common::raw_http::blocking_get(&format!("{}/readyz", s.base)).ok() == Some(200)).then_some(())
    })
    .await;
    assert!(ready.is_some(), "/readyz did not recover");

    // Every acknowledged event is delivered; nothing refused is.
    let acked: HashSet<String> =
        before.iter().chain(after.iter()).filter(|p| (200..300).contains(&p.status)).map(|p| p.id.clone()).collect();
    let all: HashSet<String> = before.iter().chain(after.iter()).map(|p| p.id.clone()).collect();
    let delivered = common::eventually(Duration::from_secs(60), || {
        let d = common::dry_run_deliveries(&s.logs(), &all);
        let got: HashSet<&String> = d.iter().collect();
        acked.iter().all(|id| got.contains(id)).then_some(d)
    })
    .await
    .unwrap_or_else(|| {
        let d: HashSet<String> = common::dry_run_deliveries(&s.logs(), &all).into_iter().collect();
        panic!(
            "{} acknowledged events not delivered; log tail:\n{}",
            acked.difference(&d).count(),
            s.logs().lines().rev().take(20).collect::<Vec<_>>().join("\n")
        )
    });
    let refused_ids: HashSet<&String> =
        refused.iter().map(|p| &p.id).chain(after.iter().filter(|p| p.status != 200).map(|p| &p.id)).collect();
    let refused_delivered = delivered.iter().filter(|id| refused_ids.contains(id)).count();
    assert_eq!(refused_delivered, 0, "an event answered 503 was stored and delivered anyway");
    let (distinct, _, duplicates) = common::duplicate_stats(&delivered);

    // No corruption: a clean stop, and the log reopens and takes events.
    let mut s = s;
    let status = s.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}; log:\n{}", s.logs());
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().expect("tempdir"));
    drop(s);
    let s2 = Sluice::start_in("serve", &yaml(&data), dir);
    let p = post(&client, &s2.base).await;
    assert_eq!(p.status, 200, "the log does not take events after a restart");
    let redelivered = common::eventually(Duration::from_secs(20), || {
        let d =
            common::dry_run_deliveries(&s2.logs(), &[p.id.clone()].into_iter().chain(acked.iter().cloned()).collect());
        d.contains(&p.id).then(|| d.len() - 1)
    })
    .await
    .expect("the event after restart is delivered");
    assert_eq!(redelivered, 0, "events delivered before the restart were delivered again");

    eprintln!(
        "FIGURES disk full: sent={} acked_before_full={} refused={:?} acked_after_space_returned={} delivered_distinct={distinct} duplicates={duplicates} refused_but_delivered={refused_delivered}",
        before.len() + after.len(),
        acked_before.len(),
        refusal_statuses,
        after.iter().filter(|p| p.status == 200).count(),
    );
}
