//! `kill -9` during sustained load, on each bus: every event that was
//! answered 2xx is delivered after the restart, and the forwarder resumes
//! from its committed position (nothing before it is redelivered, nothing
//! after it is skipped). Duplicates are counted and bounded by the documented
//! at-least-once window: what was delivered after the last committed position.
//!
//! "Delivered" is what reaches the forwarder's output: the dry-run forwarder
//! logs every Brevo request it would send, with its body, and every load
//! event carries its id in `properties.rid`.
//!
//! Figures are printed as `FIGURES ...` lines (run with `--nocapture`).

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{status_counts, tail, Load, Sluice};
use sluice::bus::{Position, Topic};

const TOKEN: &str = "phc_reliability";
/// One partition key for every load event: the bus keeps them in one totally
/// ordered partition, so "resumes from the committed position" is exact.
const USER: &str = "user-crash";
const MAX_BATCH: usize = 50;

fn embedded_yaml() -> String {
    common::embedded_yaml(TOKEN, "", &format!("brevo:\n  linger_ms: 20\n  max_batch_events: {MAX_BATCH}\n"))
}

/// Wait until the load has `acked` 2xx answers and the forwarder delivered at
/// least `delivered` of them.
async fn wait_for_progress(load: &Load, logs: impl Fn() -> String, acked: usize, delivered: usize) {
    let ok = common::eventually(Duration::from_secs(60), || {
        let a: HashSet<String> = load.acked().into_iter().collect();
        let d = common::dry_run_deliveries(&logs(), &a).len();
        (a.len() >= acked && d >= delivered).then_some(())
    })
    .await;
    let outcomes = load.outcomes();
    assert!(
        ok.is_some(),
        "no progress under load: {} acked of {} sent; log tail:\n{}",
        common::acked_ids(&outcomes).len(),
        outcomes.len(),
        tail(&logs(), 20)
    );
}

/// What a crash run proved, checked the same way for both buses.
struct Verdict {
    duplicates: usize,
}

/// `pre`: deliveries before the kill, in order; `pending`: ids at or after
/// the committed position when the process died, in bus order; `below`: ids
/// before the committed position still on the bus (Kafka keeps them;
/// empty for the embedded log, whose reader starts at the position);
/// `post`: deliveries after the restart.
fn verify(
    acked: &HashSet<String>,
    pre: &[String],
    pending: &[String],
    below: &HashSet<String>,
    post: &[String],
) -> Verdict {
    let pre_set: HashSet<&String> = pre.iter().collect();
    let pending_set: HashSet<&String> = pending.iter().collect();
    let post_set: HashSet<&String> = post.iter().collect();

    // Durable: every acknowledged event was delivered before the crash or is
    // still waiting on the bus after it.
    let lost: Vec<&String> = acked.iter().filter(|id| !pre_set.contains(id) && !pending_set.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events neither delivered nor on the bus: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );

    // No gap: everything after the committed position is delivered.
    let missing: Vec<&&String> = pending_set.iter().filter(|id| !post_set.contains(**id)).collect();
    assert!(missing.is_empty(), "{} events after the committed position not delivered after restart", missing.len());

    // No rewind: nothing before the committed position is delivered again.
    let rewound: Vec<&String> = post.iter().filter(|id| below.contains(*id)).collect();
    assert!(rewound.is_empty(), "{} events before the committed position redelivered", rewound.len());
    let stale: Vec<&String> = post.iter().filter(|id| pre_set.contains(id) && !pending_set.contains(id)).collect();
    assert!(stale.is_empty(), "{} events delivered and committed before the crash redelivered", stale.len());

    // The restarted forwarder delivers the pending events once each, in order.
    let post_pending: Vec<&String> = post.iter().filter(|id| pending_set.contains(id)).collect();
    let expected: Vec<&String> = pending.iter().collect();
    assert_eq!(post_pending.len(), expected.len(), "pending events delivered more than once after restart");
    assert!(post_pending == expected, "pending events delivered out of bus order after restart");

    // Duplicates: delivered before the crash but not yet committed.
    let duplicates = pending.iter().filter(|id| pre_set.contains(id)).count();
    Verdict { duplicates }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_on_the_embedded_bus_loses_nothing_acknowledged() {
    let yaml = embedded_yaml();
    let s = Sluice::start("serve", &yaml);
    let load = Load::start(&s.base, TOKEN, USER, 16);
    let log_path = s.log.clone();
    wait_for_progress(&load, || std::fs::read_to_string(&log_path).unwrap_or_default(), 2000, 800).await;

    // Crash in the middle of it: requests are in flight, the forwarder is busy.
    let (dir, pre_logs) = common::kill9(s);
    let outcomes = load.stop().await;
    let acked: HashSet<String> = common::acked_ids(&outcomes).into_iter().collect();
    let sent: HashSet<String> = outcomes.iter().map(|o| o.id.clone()).collect();
    let pre = common::dry_run_deliveries(&pre_logs, &sent);

    // The committed position as the dead process left it, read offline from
    // its log file: what a restarted forwarder must deliver, in order.
    let pending: Vec<String> = {
        let log = sluice::bus::embedded::EmbeddedLog::open(&dir.path().join("data"), Default::default())
            .expect("reopen the embedded log after kill -9");
        let bus = sluice::bus::Bus::new(log.clone(), log);
        let mut sub = bus.subscribe(Topic::Events).await.expect("subscribe");
        let mut out = Vec::new();
        loop {
            let batch = sub.poll(1000, Duration::from_millis(200)).await.expect("read the log");
            if batch.is_empty() {
                break;
            }
            for m in batch {
                out.push(sluice::event::Event::from_payload(&m.payload).expect("record decodes: no corruption").id);
            }
        }
        out
    };

    let s2 = Sluice::start_in("serve", &yaml, dir);
    let pending_set: HashSet<String> = pending.iter().cloned().collect();
    let done = common::eventually(Duration::from_secs(60), || {
        let post = common::dry_run_deliveries(&s2.logs(), &sent);
        let got: HashSet<&String> = post.iter().collect();
        pending_set.iter().all(|id| got.contains(id)).then_some(post)
    })
    .await;
    let post =
        done.unwrap_or_else(|| panic!("pending events not delivered after restart; log:\n{}", tail(&s2.logs(), 30)));
    let v = verify(&acked, &pre, &pending, &HashSet::new(), &post);

    let delivered: HashSet<&String> = pre.iter().chain(post.iter()).collect();
    eprintln!(
        "FIGURES embedded kill-9: sent={} acked={} statuses={:?} delivered_distinct={} delivered_acked={} pending_at_crash={} duplicates={} (window: one batch of {MAX_BATCH})",
        sent.len(),
        acked.len(),
        status_counts(&outcomes),
        delivered.len(),
        acked.iter().filter(|id| delivered.contains(id)).count(),
        pending.len(),
        v.duplicates,
    );
    assert!(v.duplicates <= MAX_BATCH, "{} duplicates: more than the one in-flight batch", v.duplicates);
}

/// The YAML value of `key` (first occurrence), for names `kafka_config` made.
fn yaml_value(yaml: &str, key: &str) -> String {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{key} not in config"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_ingress_and_forwarder_on_kafka_loses_nothing_acknowledged() {
    let Some(brokers) = common::kafka_brokers() else { return };
    let extra = format!(
        "connectors:\n  posthog:\n    project_tokens: [{TOKEN}]\nbrevo:\n  linger_ms: 20\n  max_batch_events: {MAX_BATCH}\n"
    );
    let (yaml, topic) = common::kafka_config(&brokers, &extra);
    let group = yaml_value(&yaml, "group_id");
    let partitions: i32 = yaml_value(&yaml, "partitions").parse().expect("partitions");
    let ingress = Sluice::start("ingress", &yaml);
    let fwd = Sluice::start("forward", &yaml);
    let load = Load::start(&ingress.base, TOKEN, USER, 16);
    let fwd_log = fwd.log.clone();
    wait_for_progress(&load, || std::fs::read_to_string(&fwd_log).unwrap_or_default(), 2000, 800).await;
    // The forwarder must have committed a position, or "resumes from it"
    // would be trivially true.
    let committed_once = common::eventually(Duration::from_secs(30), || {
        let c = common::committed_offsets(&brokers, &group, &topic, partitions);
        c.values().any(|o| *o > 0).then_some(())
    })
    .await;
    assert!(committed_once.is_some(), "the forwarder never committed an offset");

    let (_ingress_dir, _) = common::kill9(ingress);
    let (fwd_dir, pre_logs) = common::kill9(fwd);
    let outcomes = load.stop().await;
    let acked: HashSet<String> = common::acked_ids(&outcomes).into_iter().collect();
    let sent: HashSet<String> = outcomes.iter().map(|o| o.id.clone()).collect();
    let pre = common::dry_run_deliveries(&pre_logs, &sent);

    // Where the group stands now is where a restarted forwarder resumes.
    let committed = common::committed_offsets(&brokers, &group, &topic, partitions);
    let on_topic = common::read_topic(&brokers, &topic, Duration::from_secs(60), |got| {
        let ids: HashSet<&str> = got.iter().map(|(_, e)| e.id.as_str()).collect();
        acked.iter().all(|id| ids.contains(id.as_str()))
    })
    .await;
    let mut offsets: HashMap<String, Vec<Position>> = HashMap::new();
    for (pos, ev) in &on_topic {
        offsets.entry(ev.id.clone()).or_default().push(*pos);
    }
    let missing: Vec<&String> = acked.iter().filter(|id| !offsets.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{} acknowledged events are not on the topic", missing.len());
    let topic_dups = offsets.values().filter(|p| p.len() > 1).count();
    assert_eq!(topic_dups, 0, "an event was written to the topic twice (idempotent producer, no client retry)");

    let mut records: Vec<(Position, String)> = on_topic.iter().map(|(p, e)| (*p, e.id.clone())).collect();
    records.sort();
    let resume = |p: &Position| committed.get(&p.partition).copied().unwrap_or(0);
    let pending: Vec<String> =
        records.iter().filter(|(p, _)| p.offset >= resume(p)).map(|(_, id)| id.clone()).collect();
    let below: HashSet<String> =
        records.iter().filter(|(p, _)| p.offset < resume(p)).map(|(_, id)| id.clone()).collect();

    let fwd2 = Sluice::start_in("forward", &yaml, fwd_dir);
    let ingress2 = Sluice::start("ingress", &yaml);
    // The restarted ingress takes events again.
    let resp = reqwest::Client::new()
        .post(format!("{}/i/v0/e/", ingress2.base))
        .json(&common::posthog_event(TOKEN, &uuid::Uuid::new_v4().to_string(), "user-after"))
        .send()
        .await
        .expect("post after restart");
    assert_eq!(resp.status(), 200);

    let pending_set: HashSet<String> = pending.iter().cloned().collect();
    let done = common::eventually(Duration::from_secs(60), || {
        let post = common::dry_run_deliveries(&fwd2.logs(), &sent);
        let got: HashSet<&String> = post.iter().collect();
        pending_set.iter().all(|id| got.contains(id)).then_some(post)
    })
    .await;
    let post =
        done.unwrap_or_else(|| panic!("pending events not delivered after restart; log:\n{}", tail(&fwd2.logs(), 30)));
    let v = verify(&acked, &pre, &pending, &below, &post);

    let delivered: HashSet<&String> = pre.iter().chain(post.iter()).collect();
    eprintln!(
        "FIGURES kafka kill-9: sent={} acked={} statuses={:?} on_topic={} committed_at_crash={:?} delivered_distinct={} delivered_acked={} pending_at_crash={} duplicates={} (window: delivered since the last auto-commit, interval 1 s)",
        sent.len(),
        acked.len(),
        status_counts(&outcomes),
        records.len(),
        committed,
        delivered.len(),
        acked.iter().filter(|id| delivered.contains(id)).count(),
        pending.len(),
        v.duplicates,
    );
}
