//! The forwarder loop: bus → mapping → lanes → Brevo → acknowledgement.
//!
//! * Each polled envelope is decoded, checked against recently delivered ids
//!   (duplicates are acknowledged and counted, not sent), mapped, and its
//!   operations are added to the lane its user hashes to.
//! * A lane with ready requests and nothing in flight hands them to the
//!   [`Sender`] as one task; a lane has at most one task, which is what keeps
//!   each user's calls in order while the other lanes keep the rate budget busy.
//! * An envelope is finished when every operation it produced is settled. Only
//!   then is it acknowledged: after Brevo accepted all of it, or after its
//!   dead letter was durably published. Its id is remembered only when
//!   delivered, so a replayed dead letter is not taken for a duplicate.
//! * Memory is bounded: past `max_buffered` unfinished envelopes the loop
//!   stops polling until work completes.
//! * Linger is for quiet times. While the bus has a backlog (the last poll
//!   came back full, or the buffer is full) more events are certain to come,
//!   so partly filled requests wait up to [`BACKLOG_LINGER_FACTOR`] times
//!   longer to fill: at saturation batches go out full. When the buffer is
//!   full and nothing is in flight, waiting cannot bring more events, so the
//!   normal linger applies again.
//! * On shutdown polling stops, in-flight requests finish their current
//!   attempt, nothing is retried, and whatever is not settled stays
//!   unacknowledged for the next start (at-least-once).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::batcher::{BatchLimits, EnvelopeId, Lane};
use super::brevo::Deliver;
use super::delivery::{Backoff, Sender, SlotResult};
use super::dlq;
use super::limiter::RateLimiter;
use super::mapping::{map_event, Mapped};
use crate::bus::{Bus, Message, Position, Publisher, Subscriber, Topic};
use crate::config::Config;
use crate::dedup::DedupStore;
use crate::event::{DeadLetter, Event, Source, SCHEMA_VERSION};
use crate::metrics as m;
use chrono::{DateTime, Utc};

/// Messages asked of the bus per poll.
const POLL_MAX: usize = 1000;
/// Envelopes decoded and mapped between two yields to the runtime.
const ACCEPT_YIELD_EVERY: usize = 64;
/// Longest wait inside one poll; other work interrupts it anyway.
const POLL_WAIT: Duration = Duration::from_secs(1);

/// How much longer a partly filled request may wait while there is a backlog
/// (bounded, so a lane whose users went quiet still flushes).
const BACKLOG_LINGER_FACTOR: u32 = 30;

/// An envelope between poll and acknowledgement.
struct Unfinished {
    position: Position,
    /// The envelope as it came off the bus, decoded again only for a dead
    /// letter: holding the decoded event instead (its properties as
    /// `serde_json::Value`s) added 15–25 MB to `sluice serve`'s peak RSS
    /// under Amplitude load (BENCHMARKS.md).
    payload: Vec<u8>,
    id: String,
    source: Source,
    received_at: DateTime<Utc>,
    /// Item slots still waiting for a result.
    slots: usize,
    /// The first permanent failure of any of its operations.
    failure: Option<(&'static str, String)>,
    /// Some operation was given up at shutdown: leave it unacknowledged.
    abandoned: bool,
}

struct Forwarder {
    config: Arc<Config>,
    linger: Duration,
    lanes: Vec<Lane>,
    /// Whether each lane has a send task running.
    busy: Vec<bool>,
    unfinished: HashMap<EnvelopeId, Unfinished>,
    /// Ids of unfinished envelopes: a duplicate polled while the first copy
    /// is still on its way is suppressed too.
    ids_in_flight: HashSet<String>,
    next_handle: EnvelopeId,
    dedup: Arc<DedupStore>,
    sender: Arc<Sender>,
    tasks: JoinSet<(usize, Vec<(EnvelopeId, SlotResult)>)>,
    max_buffered: usize,
    /// Whether more events are waiting on the bus than were polled.
    backlogged: bool,
    stopping: watch::Sender<bool>,
}

/// Run the forwarder until `shutdown` flips to true (or its sender is
/// dropped), with the given delivery hop and duplicate window.
pub async fn run_with(
    config: Arc<Config>,
    bus: Bus,
    deliver: Arc<dyn Deliver>,
    dedup: Arc<DedupStore>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut sub = bus.subscribe(Topic::Events).await?;
    let publisher = bus.publisher.clone();
    let brevo = &config.brevo;
    let (stopping, stop_rx) = watch::channel(false);
    let limiter = Arc::new(RateLimiter::new(brevo));
    let sender = Arc::new(Sender::new(deliver, limiter, Backoff::from_config(brevo), stop_rx));
    let limits = BatchLimits::from_config(brevo);
    let events_per_second = super::limiter::budget(brevo, super::brevo::EndpointClass::Events).per_second;
    let lanes = brevo.concurrency.unwrap_or(events_per_second.ceil().clamp(1.0, 64.0) as usize).max(1);
    let mut fw = Forwarder {
        linger: Duration::from_millis(brevo.linger_ms),
        lanes: (0..lanes).map(|_| Lane::new(limits)).collect(),
        busy: vec![false; lanes],
        unfinished: HashMap::new(),
        ids_in_flight: HashSet::new(),
        next_handle: 0,
        dedup,
        sender,
        tasks: JoinSet::new(),
        // Two full batches per lane keep every request full at saturation;
        // each unfinished envelope is held decoded (for its dead letter).
        max_buffered: (lanes * limits.max_events * 2).max(1000),
        backlogged: false,
        stopping,
        config: config.clone(),
    };
    tracing::info!(
        dry_run = !brevo.api_key.as_ref().is_some_and(|k| !k.is_empty()),
        lanes,
        events_budget = ?super::limiter::budget(brevo, super::brevo::EndpointClass::Events),
        contacts_budget = ?super::limiter::budget(brevo, super::brevo::EndpointClass::Contacts),
        "forwarder started"
    );
    let mut stopping = *shutdown.borrow();
    loop {
        if !stopping {
            fw.start_ready(Instant::now());
        }
        if stopping && fw.tasks.is_empty() {
            break;
        }
        let deadline = if stopping { None } else { fw.next_deadline() };
        let room = fw.max_buffered.saturating_sub(fw.unfinished.len());
        let asked = room.min(POLL_MAX);
        if room == 0 {
            fw.backlogged = true;
        }
        tokio::select! {
            biased;
            changed = shutdown.changed(), if !stopping => {
                if changed.is_err() || *shutdown.borrow() {
                    stopping = true;
                    let _ = fw.stopping.send(true);
                    tracing::info!(unfinished = fw.unfinished.len(), "forwarder stopping: finishing in-flight requests");
                }
            }
            Some(joined) = fw.tasks.join_next(), if !fw.tasks.is_empty() => {
                let (lane, results) = joined.map_err(|e| anyhow::anyhow!("a Brevo send task failed: {e}"))?;
                fw.busy[lane] = false;
                fw.complete(results, sub.as_mut(), publisher.as_ref()).await;
            }
            polled = sub.poll(asked, POLL_WAIT), if !stopping && room > 0 => match polled {
                Ok(msgs) => {
                    fw.backlogged = msgs.len() >= asked;
                    fw.accept(msgs, sub.as_mut(), publisher.as_ref()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bus poll failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
        }
    }
    if let Err(e) = sub.commit().await {
        tracing::warn!(error = %e, "final commit failed; unacknowledged events will be delivered again");
    }
    tracing::info!(unacknowledged = fw.unfinished.len(), "forwarder stopped");
    Ok(())
}

impl Forwarder {
    fn lane_of(&self, user: &str) -> usize {
        let mut h = DefaultHasher::new();
        user.hash(&mut h);
        (h.finish() % self.lanes.len() as u64) as usize
    }

    fn linger(&self) -> Duration {
        if self.backlogged {
            self.linger * BACKLOG_LINGER_FACTOR
        } else {
            self.linger
        }
    }

    /// Hand every idle lane's ready requests to a send task. If that starts
    /// nothing while the buffer is full and nothing is in flight, no event
    /// can arrive to fill the waiting requests: fall back to the plain linger.
    fn start_ready(&mut self, now: Instant) {
        self.start_ready_with(now, self.linger());
        if self.tasks.is_empty() && self.unfinished.len() >= self.max_buffered {
            self.start_ready_with(now, self.linger);
        }
    }

    fn start_ready_with(&mut self, now: Instant, linger: Duration) {
        for i in 0..self.lanes.len() {
            if self.busy[i] {
                continue;
            }
            let batches = self.lanes[i].take_ready_at_most(now, linger, false, 1);
            if batches.is_empty() {
                continue;
            }
            self.busy[i] = true;
            let sender = self.sender.clone();
            self.tasks.spawn(async move { (i, sender.send_all(batches).await) });
        }
    }

    /// When an idle lane next has something ready.
    fn next_deadline(&self) -> Option<Instant> {
        let starved = self.tasks.is_empty() && self.unfinished.len() >= self.max_buffered;
        let linger = if starved { self.linger } else { self.linger() };
        self.lanes
            .iter()
            .zip(&self.busy)
            .filter(|(_, busy)| !**busy)
            .filter_map(|(lane, _)| lane.next_deadline(linger))
            .min()
    }

    /// Decode, deduplicate and map polled messages; settle at once what
    /// needs no Brevo call.
    async fn accept(&mut self, msgs: Vec<Message>, sub: &mut dyn Subscriber, publisher: &dyn Publisher) {
        let mut acks = Vec::new();
        let mut letters = Vec::new();
        for (i, msg) in msgs.into_iter().enumerate() {
            if i % ACCEPT_YIELD_EVERY == ACCEPT_YIELD_EVERY - 1 {
                // Decoding and mapping a full poll is CPU work; let the HTTP
                // tasks in flight read their answers meanwhile, or their
                // round trips (and so the rate-limit tokens) stretch.
                tokio::task::yield_now().await;
            }
            let ev = match Event::from_payload(&msg.payload) {
                Ok(ev) => ev,
                Err(e) => {
                    letters.push((msg.position, letter("undecodable", e.to_string(), None, Some(&msg.payload))));
                    continue;
                }
            };
            if ev.schema != SCHEMA_VERSION {
                let detail = format!("envelope schema {:?}, this forwarder reads {SCHEMA_VERSION:?}", ev.schema);
                letters.push((msg.position, letter("unsupported_schema", detail, Some(ev), None)));
                continue;
            }
            if self.ids_in_flight.contains(&ev.id) {
                m::dedup_hit("forwarder", 1);
                acks.push(msg.position);
                continue;
            }
            if self.dedup.seen(&ev.id) {
                acks.push(msg.position);
                continue;
            }
            match map_event(&self.config, &ev) {
                Mapped::Skip(reason) => {
                    m::forward_skipped(ev.source.as_str(), reason, 1);
                    acks.push(msg.position);
                }
                Mapped::Dead { reason, detail } => {
                    letters.push((msg.position, letter(reason, detail, Some(ev), None)));
                }
                Mapped::Ops { user, ops } => {
                    let lane = self.lane_of(&user);
                    if let Err(e) = self.lanes[lane].check(&ops) {
                        letters.push((msg.position, letter("too_large", e.to_string(), Some(ev), None)));
                        continue;
                    }
                    let handle = self.next_handle;
                    self.next_handle += 1;
                    let slots = self.lanes[lane].push(handle, &user, ops, Instant::now());
                    self.ids_in_flight.insert(ev.id.clone());
                    self.unfinished.insert(
                        handle,
                        Unfinished {
                            position: msg.position,
                            payload: msg.payload,
                            id: ev.id,
                            source: ev.source,
                            received_at: ev.received_at,
                            slots,
                            failure: None,
                            abandoned: false,
                        },
                    );
                }
            }
        }
        self.settle(letters, acks, sub, publisher).await;
    }

    /// Results of one send task.
    async fn complete(
        &mut self,
        results: Vec<(EnvelopeId, SlotResult)>,
        sub: &mut dyn Subscriber,
        publisher: &dyn Publisher,
    ) {
        let mut finished = Vec::new();
        for (handle, result) in results {
            let Some(u) = self.unfinished.get_mut(&handle) else { continue };
            u.slots = u.slots.saturating_sub(1);
            match result {
                SlotResult::Done => {}
                SlotResult::Failed { reason, detail } => {
                    u.failure.get_or_insert((reason, detail));
                }
                SlotResult::Abandoned => u.abandoned = true,
            }
            if u.slots == 0 {
                finished.push(handle);
            }
        }
        let mut acks = Vec::new();
        let mut letters = Vec::new();
        let mut delivered: HashMap<&'static str, Vec<Duration>> = HashMap::new();
        let mut delivered_ids = Vec::new();
        let now = chrono::Utc::now();
        for handle in finished {
            let Some(u) = self.unfinished.remove(&handle) else { continue };
            self.ids_in_flight.remove(&u.id);
            if u.abandoned {
                continue;
            }
            match u.failure {
                Some((reason, detail)) => {
                    // It decoded when it was polled; the raw bytes go along
                    // only if that somehow no longer holds.
                    let dead = match Event::from_payload(&u.payload) {
                        Ok(ev) => letter(reason, detail, Some(ev), None),
                        Err(_) => letter(reason, detail, None, Some(&u.payload)),
                    };
                    letters.push((u.position, dead));
                }
                None => {
                    let latency = (now - u.received_at).to_std().unwrap_or_default();
                    delivered.entry(u.source.as_str()).or_default().push(latency);
                    acks.push(u.position);
                    delivered_ids.push(u.id);
                }
            }
        }
        // Remembered before the ack: a crash between the two redelivers
        // envelopes Brevo already has, and the dedup window suppresses them.
        self.dedup.remember(delivered_ids.iter().map(String::as_str));
        self.settle(letters, acks, sub, publisher).await;
        for (source, latencies) in delivered {
            m::delivered(source, latencies);
        }
    }

    /// Publish dead letters durably, then acknowledge them with `acks`.
    async fn settle(
        &self,
        letters: Vec<(Position, DeadLetter)>,
        mut acks: Vec<Position>,
        sub: &mut dyn Subscriber,
        publisher: &dyn Publisher,
    ) {
        if !letters.is_empty() {
            let (positions, letters): (Vec<Position>, Vec<DeadLetter>) = letters.into_iter().unzip();
            let mut attempt = 0u32;
            loop {
                match dlq::publish(publisher, &letters).await {
                    Ok(()) => {
                        for l in &letters {
                            tracing::warn!(reason = %l.reason, detail = %l.detail, event_id = l.event.as_ref().map(|e| e.id.as_str()), "dead-lettered");
                        }
                        acks.extend(positions);
                        break;
                    }
                    Err(e) if *self.stopping.borrow() => {
                        tracing::warn!(error = %e, "cannot publish dead letters while stopping; their events stay unacknowledged");
                        break;
                    }
                    Err(e) => {
                        attempt += 1;
                        let d = Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5)));
                        tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cannot publish dead letters; retrying");
                        tokio::time::sleep(d).await;
                    }
                }
            }
        }
        if !acks.is_empty() {
            if let Err(e) = sub.ack(&acks).await {
                tracing::warn!(error = %e, "acknowledging failed; these events will be delivered again and deduplicated");
            }
        }
    }
}

fn letter(reason: &str, detail: String, event: Option<Event>, raw: Option<&[u8]>) -> DeadLetter {
    DeadLetter {
        reason: reason.to_string(),
        detail,
        failed_at: chrono::Utc::now(),
        event,
        raw: raw.map(|r| String::from_utf8_lossy(r).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryBus;
    use crate::bus::Record;
    use crate::event::{Kind, Source};
    use crate::forward::brevo::{BrevoReply, BrevoRequest, DeliverError, DryRun, RateHeaders};
    use std::sync::Mutex;
    use tokio::sync::Semaphore;

    /// Answers every request with `status` once a permit is available, and
    /// records what it answered.
    struct Gated {
        gate: Semaphore,
        status: u16,
        sent: Mutex<Vec<BrevoRequest>>,
    }

    #[async_trait::async_trait]
    impl Deliver for Gated {
        async fn send(&self, req: &BrevoRequest) -> Result<BrevoReply, DeliverError> {
            self.gate.acquire().await.map_err(|e| DeliverError::Connection(e.to_string()))?.forget();
            self.sent.lock().unwrap().push(req.clone());
            Ok(BrevoReply { status: self.status, body: "{}".into(), rate: RateHeaders::default() })
        }
    }

    fn config() -> Arc<Config> {
        let yaml = "brevo:\n  linger_ms: 10\n  initial_backoff_ms: 5\n  max_backoff_ms: 20\n";
        Arc::new(Config::from_yaml(yaml, "t.yaml", &|_| None).unwrap())
    }

    fn event(i: usize) -> Record {
        let mut e = Event::new(Source::Posthog, "posthog", "phc", Kind::Track, "clicked", chrono::Utc::now());
        e.id = format!("e{i}");
        e.distinct_id = Some(format!("u{}", i % 3));
        e.to_record()
    }

    struct Running {
        bus: MemoryBus,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    fn spawn(deliver: Arc<dyn Deliver>) -> Running {
        let bus = MemoryBus::new();
        let dedup = Arc::new(DedupStore::open("forwarder_test", Duration::from_secs(60), 1000, None).unwrap());
        let (stop, rx) = watch::channel(false);
        let b = Bus::new(Arc::new(bus.clone()), Arc::new(bus.clone()));
        let task = tokio::spawn(run_with(config(), b, deliver, dedup, rx));
        Running { bus, stop, task }
    }

    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn letters(bus: &MemoryBus) -> Vec<DeadLetter> {
        bus.records(Topic::DeadLetters).iter().map(|r| serde_json::from_slice(&r.payload).unwrap()).collect()
    }

    #[tokio::test]
    async fn the_position_moves_only_after_brevo_accepted() {
        let d = Arc::new(Gated { gate: Semaphore::new(0), status: 202, sent: Mutex::new(Vec::new()) });
        let r = spawn(d.clone());
        r.bus.publish(Topic::Events, (0..6).map(event).collect()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(r.bus.committed(Topic::Events), 0, "nothing acknowledged while Brevo has not answered");
        d.gate.add_permits(100);
        eventually("all six acknowledged", || r.bus.committed(Topic::Events) == 6).await;
        let sent: usize = d.sent.lock().unwrap().iter().map(|q| q.events).sum();
        assert_eq!(sent, 6);
        r.stop.send(true).unwrap();
        r.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn undecodable_and_foreign_envelopes_are_dead_lettered_then_acknowledged() {
        let r = spawn(Arc::new(DryRun));
        let mut future = Event::new(Source::Posthog, "posthog", "phc", Kind::Track, "x", chrono::Utc::now());
        future.schema = "2".into();
        future.distinct_id = Some("u".into());
        let garbage = Record { key: b"k".to_vec(), payload: b"{not json".to_vec() };
        r.bus.publish(Topic::Events, vec![garbage, future.to_record(), event(1)]).await.unwrap();
        eventually("three acknowledged", || r.bus.committed(Topic::Events) == 3).await;
        let l = letters(&r.bus);
        assert_eq!(l.iter().map(|l| l.reason.as_str()).collect::<Vec<_>>(), vec!["undecodable", "unsupported_schema"]);
        assert_eq!(l[0].raw.as_deref(), Some("{not json"));
        assert_eq!(l[1].event.as_ref().map(|e| e.schema.as_str()), Some("2"));
        r.stop.send(true).unwrap();
        r.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn duplicates_are_acknowledged_without_a_second_send() {
        let d = Arc::new(Gated { gate: Semaphore::new(1000), status: 202, sent: Mutex::new(Vec::new()) });
        let r = spawn(d.clone());
        r.bus.publish(Topic::Events, vec![event(1), event(2), event(1)]).await.unwrap();
        eventually("first round", || r.bus.committed(Topic::Events) == 3).await;
        r.bus.publish(Topic::Events, vec![event(2)]).await.unwrap();
        eventually("redelivery acknowledged", || r.bus.committed(Topic::Events) == 4).await;
        let sent: usize = d.sent.lock().unwrap().iter().map(|q| q.events).sum();
        assert_eq!(sent, 2, "e1 and e2 once each");
        r.stop.send(true).unwrap();
        r.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_while_brevo_fails_leaves_events_for_the_next_start() {
        let d = Arc::new(Gated { gate: Semaphore::new(1000), status: 503, sent: Mutex::new(Vec::new()) });
        let r = spawn(d.clone());
        r.bus.publish(Topic::Events, (0..4).map(event).collect()).await.unwrap();
        eventually("a few retries", || d.sent.lock().unwrap().len() >= 3).await;
        r.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), r.task).await.unwrap().unwrap().unwrap();
        assert_eq!(r.bus.committed(Topic::Events), 0);
        assert!(letters(&r.bus).is_empty(), "a retryable failure is not a dead letter");
    }

    #[tokio::test]
    async fn skipped_kinds_and_mapping_failures_settle_without_brevo() {
        let d = Arc::new(Gated { gate: Semaphore::new(0), status: 202, sent: Mutex::new(Vec::new()) });
        let r = spawn(d.clone());
        let mut alias = Event::new(Source::Posthog, "posthog", "phc", Kind::Alias, "$create_alias", chrono::Utc::now());
        alias.distinct_id = Some("u".into());
        let anonymous =
            Event::new(Source::Webhook, "stripe", "stripe", Kind::Webhook, "charge.failed", chrono::Utc::now());
        r.bus.publish(Topic::Events, vec![alias.to_record(), anonymous.to_record()]).await.unwrap();
        eventually("both acknowledged", || r.bus.committed(Topic::Events) == 2).await;
        assert_eq!(letters(&r.bus).len(), 1);
        assert_eq!(letters(&r.bus)[0].reason, "no_identifier");
        assert!(d.sent.lock().unwrap().is_empty());
        r.stop.send(true).unwrap();
        r.task.await.unwrap().unwrap();
    }
}
