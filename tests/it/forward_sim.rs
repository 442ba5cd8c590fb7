//! The forwarder end to end: envelopes on the embedded bus → `forward::run`
//! with the real HTTP client → the Brevo simulator, then assertions on what
//! the simulator accepted, its rate statistics, the dead-letter topic and the
//! bus position.
//!
//! Envelopes are published straight to the bus, shaped as the PostHog,
//! Amplitude and Stripe ingress produce them (the ingress is tested on its
//! own; this file tests everything after the bus).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sluice::bus::{Bus, Topic};
use sluice::config::Config;
use sluice::event::{DeadLetter, Event, Kind, Revenue, Source};
use sluice::forward::{self, HttpBrevo};
use sluice::sim::{self, Budget, EndpointClass, Fault, RateLimits, SimConfig, SimHandle};
use tokio::sync::watch;

const KEY: &str = "xkeysib-forwarder-test";

struct Harness {
    sim: SimHandle,
    bus: Bus,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// A forwarder on a fresh embedded bus pointed at `sim`; `brevo` and
/// `connectors` are YAML blocks merged into the config.
async fn start(sim: SimHandle, brevo: &str, connectors: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "bus:\n  kind: embedded\n  path: {dir}\nbrevo:\n  api_key: {KEY}\n  base_url: {base}\n{brevo}\nconnectors:\n{connectors}\n",
        dir = dir.path().display(),
        base = sim.base_url(),
    );
    let config = Arc::new(Config::from_yaml(&yaml, "test.yaml", &|_| None).unwrap());
    let bus = Bus::open(&config.bus).await.unwrap();
    let deliver = Arc::new(HttpBrevo::new(&config.brevo).unwrap());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(forward::run(config, bus.clone(), deliver, stop_rx));
    Harness { sim, bus, stop, task, _dir: dir }
}

impl Harness {
    async fn publish(&self, events: &[Event]) {
        for chunk in events.chunks(250) {
            self.bus.publisher.publish(Topic::Events, chunk.iter().map(Event::to_record).collect()).await.unwrap();
        }
    }

    /// One commit: the whole backlog becomes visible at once, as on a bus
    /// the forwarder lags behind.
    async fn publish_backlog(&self, events: &[Event]) {
        self.bus.publisher.publish(Topic::Events, events.iter().map(Event::to_record).collect()).await.unwrap();
    }

    /// Wait until the simulator holds `n` accepted events and `more` holds.
    async fn wait_for(&self, n: usize, within: Duration, more: impl Fn(&SimHandle) -> bool) {
        let ok = self.sim.wait_until(within, |s| s.accepted_events().len() >= n && more(s)).await;
        assert!(
            ok,
            "timed out: {} of {n} events accepted; stats {:?}",
            self.sim.accepted_events().len(),
            self.sim.stats()
        );
    }

    /// Stop the forwarder; return the dead letters and how many events are
    /// left unacknowledged on the bus.
    async fn finish(self) -> (SimHandle, Vec<DeadLetter>, usize) {
        // Letters and acks are written right after Brevo's answer; give the
        // loop a moment to get there.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
        let mut dlq = self.bus.subscribe(Topic::DeadLetters).await.unwrap();
        let letters = dlq
            .poll(10_000, Duration::from_millis(200))
            .await
            .unwrap()
            .iter()
            .map(|m| serde_json::from_slice::<DeadLetter>(&m.payload).unwrap())
            .collect();
        let mut events = self.bus.subscribe(Topic::Events).await.unwrap();
        let unacked = events.poll(10_000, Duration::from_millis(200)).await.unwrap().len();
        (self.sim, letters, unacked)
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// A PostHog capture event as the ingress normalizes it; `n` counts the
/// user's events so order can be checked on the other side.
fn posthog(user: usize, n: usize) -> Event {
    let names = ["$pageview", "signed_up", "clicked button", "$autocapture"];
    let mut e = Event::new(Source::Posthog, "posthog", "phc_test", Kind::Track, names[n % names.len()], now());
    e.id = format!("ph-{user}-{n}");
    e.distinct_id = Some(format!("user-{user}"));
    e.email = Some(format!("user{user}@example.com"));
    for (k, v) in [
        ("$current_url", json!(format!("https://app.example.com/page/{n}"))),
        ("$browser", json!("Firefox")),
        ("$lib", json!("web")),
        ("$screen_width", json!(1920)),
        ("price", json!(9.99)),
        ("n", json!(n)),
        ("$set", json!({"$name": "ignored here"})),
        ("token", json!("phc_test")),
    ] {
        e.properties.insert(k.into(), v);
    }
    if n == 0 {
        e.user_properties.set.insert("$name".into(), json!(format!("User {user}")));
        e.user_properties.set.insert("beta".into(), json!(true));
    }
    e
}

fn amplitude_identify() -> Event {
    let mut e = Event::new(Source::Amplitude, "amplitude", "amp_key", Kind::Identify, "$identify", now());
    e.id = "amp-identify-1".into();
    e.distinct_id = Some("amp-user-1".into());
    e.email = Some("ada@example.com".into());
    e.user_properties.set.insert("first_name".into(), json!("Ada"));
    e.user_properties.set.insert("last_name".into(), json!("Lovelace"));
    e.user_properties.set.insert("newsletter".into(), json!(true));
    e
}

fn stripe_invoice_paid() -> Event {
    let mut e = Event::new(Source::Webhook, "stripe", "stripe", Kind::Webhook, "invoice.paid", now());
    e.id = "evt_1QxYz".into();
    e.distinct_id = Some("cus_R2d2".into());
    e.email = Some("billing@example.com".into());
    e.properties.insert("invoice".into(), json!("in_1QxYz"));
    e.properties.insert("amount_paid".into(), json!(1200));
    e.properties.insert("lines".into(), json!({"data": [{"price.id": "price_1", "quantity": 1}]}));
    e.revenue = Some(Revenue { amount: Some(12.0), currency: Some("usd".into()), ..Revenue::default() });
    e
}

const CONNECTORS: &str = "  posthog:
    property_mapping: {$name: FIRSTNAME}
  amplitude:
    property_mapping: {first_name: FIRSTNAME, last_name: LASTNAME, newsletter: OPT_IN}
    lists:
      - {id: 2, name: newsletter, when_property: newsletter}
  webhooks:
    - name: stripe
      scheme: stripe
      secrets: [whsec_test]
      event_mapping: {invoice.paid: InvoicePaid}
";

/// (ext_id, n) of every accepted PostHog event, in the order Brevo got them.
fn accepted_posthog(sim: &SimHandle) -> Vec<(String, u64)> {
    let mut accepted = sim.accepted_events();
    accepted.sort_by_key(|a| (a.request, a.index));
    accepted
        .iter()
        .filter_map(|a| {
            let ext = a.event.pointer("/identifiers/ext_id")?.as_str()?;
            let n = a.event.pointer("/event_properties/n")?.as_u64()?;
            ext.starts_with("user-").then(|| (ext.to_string(), n))
        })
        .collect()
}

/// Nothing twice, and each user's events in the order they were published.
fn assert_once_and_in_order(seen: &[(String, u64)]) {
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event reached Brevo twice");
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for (user, n) in seen {
        if let Some(prev) = last.insert(user, *n) {
            assert!(*n > prev, "{user}: event {n} arrived after {prev}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthog_amplitude_and_stripe_reach_brevo_batched_within_budget() {
    let sim = sim::start(SimConfig::new(KEY)).await.unwrap();
    // Defaults otherwise: general plan (10 req/s per class), 4 lanes, 1 s linger.
    let h = start(sim, "", CONNECTORS).await;
    let mut events: Vec<Event> = Vec::new();
    for n in 0..15 {
        for user in 0..100 {
            events.push(posthog(user, n));
        }
    }
    events.insert(700, amplitude_identify());
    events.insert(1200, stripe_invoice_paid());
    h.publish(&events).await;

    h.wait_for(1501, Duration::from_secs(30), |s| {
        s.contact_by_email("ada@example.com").is_some_and(|c| c.list_ids.contains(&2))
    })
    .await;
    let (sim, letters, unacked) = h.finish().await;

    // Every event, once, in per-user order; all acknowledged; no dead letters.
    let seen = accepted_posthog(&sim);
    assert_eq!(seen.len(), 1500);
    assert_once_and_in_order(&seen);
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(unacked, 0);

    // Valid Brevo events as mapped.
    let accepted = sim.accepted_events();
    let first =
        &accepted.iter().find(|a| a.event.pointer("/identifiers/ext_id") == Some(&json!("user-7"))).unwrap().event;
    assert_eq!(first["event_name"], "_pageview");
    assert_eq!(first["identifiers"], json!({"email_id": "user7@example.com", "ext_id": "user-7"}));
    assert_eq!(first["contact_properties"], json!({"FIRSTNAME": "User 7"}));
    assert_eq!(first["event_properties"]["_current_url"], "https://app.example.com/page/0");
    assert!(first["event_properties"].get("token").is_none() && first["event_properties"].get("_set").is_none());
    let stripe = &accepted.iter().find(|a| a.event["event_name"] == "InvoicePaid").unwrap().event;
    assert_eq!(stripe["identifiers"], json!({"email_id": "billing@example.com", "ext_id": "cus_R2d2"}));
    assert_eq!(stripe["event_properties"]["revenue"], 12.0);
    assert_eq!(stripe["event_properties"]["lines"]["data"][0]["price_id"], "price_1");

    // The identify became a contact with mapped attributes, on its list.
    let ada = sim.contact_by_email("ada@example.com").unwrap();
    assert_eq!(ada.ext_id.as_deref(), Some("amp-user-1"));
    assert_eq!(ada.attributes.get("FIRSTNAME"), Some(&json!("Ada")));
    assert_eq!(ada.attributes.get("LASTNAME"), Some(&json!("Lovelace")));
    assert_eq!(ada.attributes.get("OPT_IN"), Some(&json!(true)), "booleans keep their type on the contact path");
    assert!(ada.list_ids.contains(&2));
    // The PostHog users exist as contacts, named from $set.
    let u7 = sim.contact_by_ext_id("user-7").unwrap();
    assert_eq!(u7.email.as_deref(), Some("user7@example.com"));
    assert_eq!(u7.attributes.get("FIRSTNAME"), Some(&json!("User 7")));

    // Batching, budget, and nothing refused.
    let stats = sim.stats();
    let total = sim.recorded().len();
    assert!(total * 20 <= 1502, "{total} requests for 1502 events");
    assert!(stats.class(EndpointClass::Events).max_in_any_second <= 10, "{stats:?}");
    assert!(stats.class(EndpointClass::Contacts).max_in_any_second <= 10, "{stats:?}");
    assert_eq!(stats.count(429), 0);
    assert!(sim.recorded().iter().all(|r| (200..300).contains(&r.status)), "{:?}", sim.recorded());
    assert!(stats.ignored_attributes.is_empty(), "{:?}", stats.ignored_attributes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_forwarder_stays_inside_a_budget_brevo_enforces() {
    // Brevo (the simulator) allows exactly 15 event requests per sliding
    // second; the forwarder is configured for the same 15 and must spend it
    // without a single 429, with full batches.
    let limits = RateLimits {
        events: Budget { per_second: Some(15), per_hour: Some(100_000) },
        ..RateLimits::for_plan(sim::Plan::General)
    };
    let sim = sim::start(SimConfig::new(KEY).limits(limits)).await.unwrap();
    let brevo =
        "  max_batch_events: 25\n  linger_ms: 200\n  rate_limits:\n    events: {per_second: 15, per_hour: 100000}";
    let h = start(sim, brevo, CONNECTORS).await;
    let events: Vec<Event> = (0..25).flat_map(|n| (0..60).map(move |u| posthog(u, n))).collect();
    h.publish_backlog(&events).await;
    h.wait_for(1500, Duration::from_secs(30), |_| true).await;
    let (sim, letters, unacked) = h.finish().await;
    assert_once_and_in_order(&accepted_posthog(&sim));
    assert!(letters.is_empty() && unacked == 0);
    let stats = sim.stats();
    assert_eq!(stats.count(429), 0, "{stats:?}");
    let events_class = stats.class(EndpointClass::Events);
    assert_eq!(events_class.max_in_any_second, 15, "the budget is used, and never exceeded: {stats:?}");
    let sizes: Vec<(u64, usize)> = sim
        .recorded()
        .iter()
        .map(|r| (r.at().as_millis() as u64, r.json()["events"].as_array().map_or(0, Vec::len)))
        .collect();
    assert_eq!(events_class.requests, 60, "1500 events in full batches of 25: {sizes:?}");
}

/// 300 events of 20 users, the events of each user in order.
fn workload() -> Vec<Event> {
    (0..15).flat_map(|n| (0..20).map(move |u| posthog(u, n))).collect()
}

const FAST: &str = "  linger_ms: 100\n  max_batch_events: 50\n  initial_backoff_ms: 50\n  max_backoff_ms: 400\n  request_timeout_ms: 700";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_pauses_and_loses_nothing() {
    let sim = sim::start(SimConfig::new(KEY)).await.unwrap();
    sim.inject(Fault::rate_limited(8, 1).on(EndpointClass::Events));
    let h = start(sim, FAST, CONNECTORS).await;
    h.publish(&workload()).await;
    h.wait_for(300, Duration::from_secs(30), |_| true).await;
    let (sim, letters, unacked) = h.finish().await;
    let seen = accepted_posthog(&sim);
    assert_eq!(seen.len(), 300);
    assert_once_and_in_order(&seen);
    assert!(letters.is_empty() && unacked == 0);
    let stats = sim.stats();
    assert_eq!(stats.count(429), 8, "only the injected 429s: the pause respected Retry-After");
    assert!(sim.pending_faults().is_empty());
    // After a 429 with Retry-After: 1, no new events request for a second
    // (requests already in flight when it was answered arrive within ms).
    let recorded = sim.recorded();
    for r in recorded.iter().filter(|r| r.status == 429) {
        let early = recorded
            .iter()
            .filter(|n| n.class == EndpointClass::Events)
            .find(|n| n.at() > r.at() + Duration::from_millis(50) && n.at() < r.at() + Duration::from_millis(950));
        assert!(early.is_none(), "a request {:?} after a 429", early.map(|n| n.at() - r.at()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_5xx_are_retried_without_duplicates() {
    let sim = sim::start(SimConfig::new(KEY)).await.unwrap();
    sim.inject(Fault::server_errors(503, 3));
    sim.inject(Fault::server_errors(500, 2));
    sim.inject(Fault::server_errors(502, 4));
    let h = start(sim, FAST, CONNECTORS).await;
    h.publish(&workload()).await;
    h.wait_for(300, Duration::from_secs(30), |_| true).await;
    let (sim, letters, unacked) = h.finish().await;
    let seen = accepted_posthog(&sim);
    assert_eq!(seen.len(), 300);
    assert_once_and_in_order(&seen);
    assert!(letters.is_empty() && unacked == 0);
    let stats = sim.stats();
    assert_eq!(stats.count(503) + stats.count(500) + stats.count(502), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_request_is_retried_and_lands_once() {
    let sim = sim::start(SimConfig::new(KEY)).await.unwrap();
    // The simulator sits on the request past the client's 700 ms timeout and
    // never processes it: the retry must deliver, exactly once.
    sim.inject(Fault::stall(2_000, 1).on(EndpointClass::Events));
    let h = start(sim, FAST, CONNECTORS).await;
    h.publish(&workload()).await;
    // The simulator records the stalled request when it finally answers 504.
    h.wait_for(300, Duration::from_secs(30), |s| s.recorded().iter().any(|r| r.fault.is_some())).await;
    let (sim, letters, unacked) = h.finish().await;
    let seen = accepted_posthog(&sim);
    assert_eq!(seen.len(), 300);
    assert_once_and_in_order(&seen);
    assert!(letters.is_empty() && unacked == 0);
    let stalled: Vec<_> = sim.recorded().into_iter().filter(|r| r.fault.is_some()).collect();
    assert_eq!(stalled.len(), 1);
    assert_eq!(stalled[0].status, 504, "answered after the client gave up, never processed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_207_partial_failure_dead_letters_only_the_bad_events() {
    let sim = sim::start(SimConfig::new(KEY)).await.unwrap();
    sim.inject(Fault::partial_failure(vec![1, 4]));
    let h = start(sim, FAST, CONNECTORS).await;
    let mut events = workload();
    // And one event Brevo's own validation refuses: a malformed email.
    let mut bad = posthog(3, 99);
    bad.id = "ph-bad-email".into();
    bad.email = Some("not-an-email".into());
    bad.distinct_id = Some("user-bad".into());
    events.insert(150, bad);
    h.publish(&events).await;
    h.wait_for(298, Duration::from_secs(30), |_| true).await;
    let (sim, letters, unacked) = h.finish().await;
    assert_eq!(unacked, 0);

    // Three letters: the two the simulator failed, the bad email.
    assert_eq!(letters.len(), 3, "{letters:#?}");
    assert!(letters.iter().all(|l| l.reason == "brevo_rejected"));
    let bad_email = letters.iter().find(|l| l.event.as_ref().unwrap().id == "ph-bad-email").unwrap();
    assert!(bad_email.detail.to_lowercase().contains("email"), "Brevo's reason: {}", bad_email.detail);
    let injected: Vec<&DeadLetter> = letters.iter().filter(|l| l.detail.contains("Simulated")).collect();
    assert_eq!(injected.len(), 2, "{letters:#?}");

    // Everything else exactly once and in order; nothing lost: accepted +
    // dead-lettered = published.
    let seen = accepted_posthog(&sim);
    assert_once_and_in_order(&seen);
    let lettered: HashSet<String> = letters.iter().map(|l| l.event.as_ref().unwrap().id.clone()).collect();
    let delivered: HashSet<String> = seen.iter().map(|(u, n)| format!("ph-{}-{n}", &u[5..])).collect();
    for e in &events {
        assert!(
            delivered.contains(&e.id) ^ lettered.contains(&e.id),
            "{} lost or both delivered and dead-lettered",
            e.id
        );
    }
    // One or two 207s (the bad email may share the injected batch), none retried.
    assert!((1..=2).contains(&sim.stats().count(207)), "{:?}", sim.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_holds_events_until_the_key_works_again() {
    let sim = sim::start(SimConfig::new(KEY)).await.unwrap();
    sim.inject(Fault::unauthorized(4));
    let h = start(sim, FAST, CONNECTORS).await;
    h.publish(&workload()).await;
    h.wait_for(300, Duration::from_secs(30), |_| true).await;
    let (sim, letters, unacked) = h.finish().await;
    let seen = accepted_posthog(&sim);
    assert_eq!(seen.len(), 300);
    assert_once_and_in_order(&seen);
    assert!(letters.is_empty(), "a key problem is not the events' fault: {letters:?}");
    assert_eq!(unacked, 0);
    assert_eq!(sim.stats().count(401), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_envelopes_are_not_sent_twice() {
    let sim = sim::start(SimConfig::new(KEY)).await.unwrap();
    let h = start(sim, FAST, CONNECTORS).await;
    let events = workload();
    h.publish(&events).await;
    h.wait_for(300, Duration::from_secs(30), |_| true).await;
    // The same envelopes again, as a Kafka redelivery or an ingress retry
    // would publish them.
    h.publish(&events[..100]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (sim, letters, unacked) = h.finish().await;
    assert_eq!(accepted_posthog(&sim).len(), 300);
    assert!(letters.is_empty() && unacked == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmappable_events_are_dead_lettered_and_replayable() {
    let sim = sim::start(SimConfig::new(KEY)).await.unwrap();
    let h = start(sim, FAST, CONNECTORS).await;
    let mut anonymous = stripe_invoice_paid();
    anonymous.id = "evt_no_customer".into();
    anonymous.email = None;
    anonymous.distinct_id = None;
    h.publish(&[anonymous, posthog(1, 0)]).await;
    h.wait_for(1, Duration::from_secs(10), |_| true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut out = Vec::new();
    let listed = forward::dlq::list(&h.bus, sluice::config::BusKind::Embedded, &mut out).await.unwrap();
    assert_eq!(listed, 1);
    let letter: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(letter["reason"], "no_identifier");
    assert_eq!(letter["event"]["id"], "evt_no_customer");
    // Replay republishes the envelope (it fails again: nothing was fixed)
    // and clears the pending list.
    let report = forward::dlq::replay(&h.bus, sluice::config::BusKind::Embedded, &mut Vec::new()).await.unwrap();
    assert_eq!(report.replayed, 1);
    let mut out = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = forward::dlq::list(&h.bus, sluice::config::BusKind::Embedded, &mut out).await.unwrap();
    assert_eq!(listed, 1, "the replayed envelope was dead-lettered again, once");
    let (_, _, unacked) = h.finish().await;
    assert_eq!(unacked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_brevo_processes_after_the_timeout_is_the_one_duplicate() {
    // Brevo has no idempotency key: when it processes a request after the
    // client gave up on it, the retry lands too. At-least-once means exactly
    // that batch twice, nothing lost, and nothing else twice.
    let sim = sim::start(SimConfig::new(KEY)).await.unwrap();
    sim.inject(Fault::delay(1_500, 1).on(EndpointClass::Events));
    let h = start(sim, FAST, CONNECTORS).await;
    h.publish(&workload()).await;
    h.wait_for(300, Duration::from_secs(30), |s| s.pending_faults().is_empty()).await;
    // The delayed request lands 1.5 s after it was sent.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    let (sim, letters, unacked) = h.finish().await;
    assert!(letters.is_empty() && unacked == 0);
    let delayed: Vec<_> = sim.recorded().into_iter().filter(|r| r.fault.is_some()).collect();
    assert_eq!(delayed.len(), 1);
    let delayed_events = delayed[0].json()["events"].as_array().map_or(0, Vec::len);
    assert!(delayed_events > 0);
    let seen = accepted_posthog(&sim);
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 300, "nothing lost");
    assert_eq!(seen.len(), 300 + delayed_events, "only the delayed batch twice");
}
