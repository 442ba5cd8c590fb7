//! Sending one lane's ready requests, in order, until each is settled:
//! accepted, or its bad items isolated and reported for the dead-letter
//! topic. Retryable failures block the lane (that is what keeps one user's
//! calls in order) with capped exponential backoff and jitter; a 429 pauses
//! the endpoint class for every lane instead.
//!
//! Permanent refusals are narrowed down: Brevo's `errors[].eventIndex` names
//! the bad events of a batch (the rest are sent again, or were accepted on a
//! 207); a refusal that names nothing is bisected until the bad item stands
//! alone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use tokio::sync::watch;

use super::batcher::{Batch, EnvelopeId, Shape};
use super::brevo::{classify, list_failures, BrevoReply, Deliver, ItemError, Verdict};
use super::limiter::RateLimiter;
use crate::config::BrevoConfig;
use crate::metrics as m;

/// What happened to one item slot of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotResult {
    /// Brevo accepted it.
    Done,
    /// Brevo refused it for good; `detail` is Brevo's reason.
    Failed { reason: &'static str, detail: String },
    /// Shutdown came first; the envelope stays unacknowledged and is
    /// delivered again after a restart.
    Abandoned,
}

/// Capped exponential backoff with jitter: attempt `n` waits between half
/// and all of `min(initial * 2^n, max)`, so retries of many lanes spread out
/// yet never collapse to zero.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn from_config(cfg: &BrevoConfig) -> Backoff {
        Backoff {
            initial: Duration::from_millis(cfg.initial_backoff_ms.max(1)),
            max: Duration::from_millis(cfg.max_backoff_ms.max(cfg.initial_backoff_ms.max(1))),
        }
    }

    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        let half = cap / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }
}

/// Sends ready batches; shared by every lane.
pub struct Sender {
    deliver: Arc<dyn Deliver>,
    limiter: Arc<RateLimiter>,
    backoff: Backoff,
    stop: watch::Receiver<bool>,
}

/// Shutdown was requested while a batch was still unsent.
struct Stopping;

impl Sender {
    pub fn new(
        deliver: Arc<dyn Deliver>,
        limiter: Arc<RateLimiter>,
        backoff: Backoff,
        stop: watch::Receiver<bool>,
    ) -> Sender {
        Sender { deliver, limiter, backoff, stop }
    }

    /// Send `batches` in order; one result per (item, owner) slot.
    pub async fn send_all(&self, batches: Vec<Batch>) -> Vec<(EnvelopeId, SlotResult)> {
        let mut out = Vec::new();
        let mut queue: VecDeque<Batch> = batches.into();
        while let Some(batch) = queue.pop_front() {
            if let Err(Stopping) = self.settle(batch, &mut out, &mut queue).await {
                for b in queue.drain(..) {
                    settle_all(&b, SlotResult::Abandoned, &mut out);
                }
            }
        }
        out
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn wait_or_stop(&self, d: Duration) -> Result<(), Stopping> {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = stop.wait_for(|s| *s) => Err(Stopping),
        }
    }

    /// Send one batch until it is settled. Follow-up batches (the rest of a
    /// partly refused batch, bisection halves) go to the front of `queue`
    /// so they still precede later requests.
    async fn settle(
        &self,
        batch: Batch,
        out: &mut Vec<(EnvelopeId, SlotResult)>,
        queue: &mut VecDeque<Batch>,
    ) -> Result<(), Stopping> {
        let req = batch.request();
        let class = req.class;
        let mut attempt = 0u32;
        loop {
            if self.stopping() {
                settle_all(&batch, SlotResult::Abandoned, out);
                return Err(Stopping);
            }
            let permit = {
                let mut stop = self.stop.clone();
                tokio::select! {
                    p = self.limiter.acquire(class) => p,
                    _ = stop.wait_for(|s| *s) => {
                        settle_all(&batch, SlotResult::Abandoned, out);
                        return Err(Stopping);
                    }
                }
            };
            let sent = self.deliver.send(&req).await;
            // The token's period starts now that the answer is in.
            drop(permit);
            let (verdict, reply) = match sent {
                Ok(reply) => {
                    self.limiter.observe(class, &reply.rate);
                    (classify(&req, &reply), Some(reply))
                }
                Err(e) => (Verdict::Retry(e.to_string()), None),
            };
            match verdict {
                Verdict::Accepted => {
                    accepted(&batch, reply.as_ref(), out);
                    return Ok(());
                }
                Verdict::Partial(failed) => {
                    let bad = mark_failed(&batch, &failed, out);
                    for (i, owners) in batch.owners.iter().enumerate() {
                        if !bad.contains(&i) {
                            owners.iter().for_each(|&o| out.push((o, SlotResult::Done)));
                        }
                    }
                    tracing::warn!(path = %req.path, failed = bad.len(), of = batch.len(), "Brevo accepted part of a batch; the rest is dead-lettered");
                    return Ok(());
                }
                Verdict::Rejected { items, message, request_wide } => {
                    if !items.is_empty() {
                        let bad = mark_failed(&batch, &items, out);
                        let rest: Vec<usize> = (0..batch.len()).filter(|i| !bad.contains(i)).collect();
                        tracing::warn!(path = %req.path, failed = bad.len(), resend = rest.len(), "Brevo refused events of a batch; sending the rest again");
                        if !rest.is_empty() {
                            queue.push_front(batch.subset(&rest));
                        }
                    } else if batch.len() == 1 || request_wide {
                        tracing::warn!(path = %req.path, items = batch.len(), error = %message, "Brevo refused a request: dead-lettering its items");
                        settle_all(&batch, SlotResult::Failed { reason: "brevo_rejected", detail: message }, out);
                    } else {
                        tracing::warn!(path = %req.path, items = batch.len(), error = %message, "Brevo refused a batch without naming items: splitting it to isolate them");
                        let (first, second) = batch.halves();
                        queue.push_front(second);
                        queue.push_front(first);
                    }
                    return Ok(());
                }
                Verdict::RateLimited { wait } => {
                    m::brevo_retry(class.as_str());
                    tracing::warn!(
                        class = class.as_str(),
                        wait_ms = wait.map(|w| w.as_millis() as u64),
                        "Brevo answered 429: pausing the endpoint class"
                    );
                    self.limiter.pause(class, wait);
                }
                Verdict::Unauthorized(message) => {
                    m::brevo_retry(class.as_str());
                    let d = self.backoff.delay(attempt);
                    tracing::error!(class = class.as_str(), error = %message, retry_in_ms = d.as_millis() as u64, "Brevo refused the API key (or this IP): holding events until access is fixed");
                    attempt = attempt.saturating_add(1);
                    if let Err(s) = self.wait_or_stop(d).await {
                        settle_all(&batch, SlotResult::Abandoned, out);
                        return Err(s);
                    }
                }
                Verdict::Retry(message) => {
                    m::brevo_retry(class.as_str());
                    let d = self.backoff.delay(attempt);
                    tracing::warn!(class = class.as_str(), error = %message, attempt, retry_in_ms = d.as_millis() as u64, "Brevo request failed; retrying");
                    attempt = attempt.saturating_add(1);
                    if let Err(s) = self.wait_or_stop(d).await {
                        settle_all(&batch, SlotResult::Abandoned, out);
                        return Err(s);
                    }
                }
            }
        }
    }
}

fn settle_all(batch: &Batch, result: SlotResult, out: &mut Vec<(EnvelopeId, SlotResult)>) {
    for owners in &batch.owners {
        owners.iter().for_each(|&o| out.push((o, result.clone())));
    }
}

/// Record the named items as failed; returns their indexes.
fn mark_failed(batch: &Batch, failed: &[ItemError], out: &mut Vec<(EnvelopeId, SlotResult)>) -> Vec<usize> {
    let mut bad = Vec::new();
    for e in failed {
        if let Some(owners) = batch.owners.get(e.index) {
            for &o in owners {
                out.push((o, SlotResult::Failed { reason: "brevo_rejected", detail: e.message.clone() }));
            }
            bad.push(e.index);
        }
    }
    bad
}

/// A 2xx. List additions still report contacts Brevo did not know.
fn accepted(batch: &Batch, reply: Option<&BrevoReply>, out: &mut Vec<(EnvelopeId, SlotResult)>) {
    let failures: Vec<Value> = match (&batch.shape, reply) {
        (Shape::List { add: true, .. }, Some(r)) => list_failures(&r.body),
        (Shape::List { add: false, .. }, Some(r)) => {
            let f = list_failures(&r.body);
            if !f.is_empty() {
                // Not on the list is the state a removal wants.
                tracing::debug!(failures = ?f, "list removal: contacts were not on the list");
            }
            Vec::new()
        }
        _ => Vec::new(),
    };
    for (item, owners) in batch.items.iter().zip(&batch.owners) {
        let result = if failures.contains(item) {
            SlotResult::Failed {
                reason: "brevo_rejected",
                detail: format!("Brevo could not add contact {item} to the list (unknown contact)"),
            }
        } else {
            SlotResult::Done
        };
        owners.iter().for_each(|&o| out.push((o, result.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::brevo::{BrevoRequest, DeliverError, RateHeaders};
    use serde_json::json;
    use std::sync::Mutex;

    /// Answers from a script, then 202s; records every request.
    struct Scripted {
        answers: Mutex<VecDeque<Result<BrevoReply, DeliverError>>>,
        seen: Mutex<Vec<BrevoRequest>>,
    }

    impl Scripted {
        fn new(answers: Vec<Result<BrevoReply, DeliverError>>) -> Arc<Scripted> {
            Arc::new(Scripted { answers: Mutex::new(answers.into()), seen: Mutex::new(Vec::new()) })
        }
        fn seen(&self) -> Vec<BrevoRequest> {
            self.seen.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl Deliver for Scripted {
        async fn send(&self, req: &BrevoRequest) -> Result<BrevoReply, DeliverError> {
            self.seen.lock().unwrap().push(req.clone());
            self.answers.lock().unwrap().pop_front().unwrap_or_else(|| Ok(reply(202, "{}")))
        }
    }

    fn reply(status: u16, body: &str) -> BrevoReply {
        BrevoReply { status, body: body.into(), rate: RateHeaders::default() }
    }

    fn events(n: u64) -> Batch {
        Batch {
            shape: Shape::Events,
            items: (0..n).map(|i| json!({"event_name": "e", "identifiers": {"ext_id": format!("u{i}")}})).collect(),
            owners: (0..n).map(|i| vec![i]).collect(),
        }
    }

    fn sender(d: Arc<Scripted>) -> (Sender, watch::Sender<bool>) {
        let cfg = BrevoConfig::default();
        let (tx, rx) = watch::channel(false);
        (Sender::new(d, Arc::new(RateLimiter::new(&cfg)), Backoff::from_config(&cfg), rx), tx)
    }

    fn done(ids: impl IntoIterator<Item = u64>) -> Vec<(u64, SlotResult)> {
        ids.into_iter().map(|i| (i, SlotResult::Done)).collect()
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_half() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(2) };
        for _ in 0..50 {
            let d0 = b.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100), "{d0:?}");
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800), "{d3:?}");
            let d30 = b.delay(30);
            assert!(d30 >= Duration::from_secs(1) && d30 <= Duration::from_secs(2), "{d30:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_5xx_and_timeouts_then_succeeds_once() {
        let d = Scripted::new(vec![
            Ok(reply(500, "")),
            Err(DeliverError::Timeout("slow".into())),
            Ok(reply(503, "")),
            Ok(reply(202, r#"{"count":3}"#)),
        ]);
        let (s, _stop) = sender(d.clone());
        let out = s.send_all(vec![events(3)]).await;
        assert_eq!(out, done(0..3));
        assert_eq!(d.seen().len(), 4, "three failures then one success");
    }

    #[tokio::test(start_paused = true)]
    async fn a_400_with_indexes_dead_letters_those_and_resends_the_rest() {
        let body = r#"{"status":"failed","total_events":4,"successful_events":0,"failed_events":4,
            "errors":[{"eventIndex":[1,2],"message":"invalid email_id"}]}"#;
        let d = Scripted::new(vec![Ok(reply(400, body))]);
        let (s, _stop) = sender(d.clone());
        let out = s.send_all(vec![events(4), events(1)]).await;
        let failed = SlotResult::Failed { reason: "brevo_rejected", detail: "invalid email_id".into() };
        assert_eq!(
            out,
            vec![(1, failed.clone()), (2, failed), (0, SlotResult::Done), (3, SlotResult::Done), (0, SlotResult::Done)]
        );
        let seen = d.seen();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1].body["events"].as_array().unwrap().len(), 2, "the good two, resent before the next batch");
        assert_eq!(seen[1].body["events"][1]["identifiers"]["ext_id"], "u3");
    }

    #[tokio::test(start_paused = true)]
    async fn a_207_dead_letters_the_named_events_and_sends_nothing_again() {
        let body = r#"{"status":"partial","errors":[{"eventIndex":[0],"message":"bad date"}]}"#;
        let d = Scripted::new(vec![Ok(reply(207, body))]);
        let (s, _stop) = sender(d.clone());
        let out = s.send_all(vec![events(3)]).await;
        assert_eq!(out[0], (0, SlotResult::Failed { reason: "brevo_rejected", detail: "bad date".into() }));
        assert_eq!(&out[1..], &done(1..3)[..]);
        assert_eq!(d.seen().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_anonymous_refusal_is_bisected_down_to_the_bad_item() {
        // Item 2 of 4 is bad; Brevo says only "invalid_parameter".
        let bad = || Ok(reply(400, r#"{"code":"invalid_parameter","message":"nope"}"#));
        let d = Scripted::new(vec![bad(), Ok(reply(202, "{}")), bad(), bad()]);
        let (s, _stop) = sender(d.clone());
        let out = s.send_all(vec![events(4)]).await;
        // [0..4] refused → [0,1] ok, [2,3] refused → [2] refused, [3] ok.
        assert_eq!(
            out,
            vec![
                (0, SlotResult::Done),
                (1, SlotResult::Done),
                (2, SlotResult::Failed { reason: "brevo_rejected", detail: "400: invalid_parameter: nope".into() }),
                (3, SlotResult::Done),
            ]
        );
        assert_eq!(d.seen().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_for_the_announced_reset() {
        let mut limited = reply(429, "");
        limited.rate.reset = Some(Duration::from_secs(7));
        let d = Scripted::new(vec![Ok(limited)]);
        let (s, _stop) = sender(d.clone());
        let start = tokio::time::Instant::now();
        let out = s.send_all(vec![events(2)]).await;
        assert_eq!(out, done(0..2));
        assert_eq!(tokio::time::Instant::now() - start, Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_401_holds_the_events_until_access_returns() {
        let unauthorized = || Ok(reply(401, r#"{"code":"unauthorized","message":"Key not found"}"#));
        let d = Scripted::new(vec![unauthorized(), unauthorized(), unauthorized()]);
        let (s, _stop) = sender(d.clone());
        let out = s.send_all(vec![events(2)]).await;
        assert_eq!(out, done(0..2), "nothing dead-lettered for a key problem");
        assert_eq!(d.seen().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_what_is_not_yet_accepted() {
        let d = Scripted::new((0..100).map(|_| Ok(reply(503, ""))).collect());
        let (s, stop) = sender(d.clone());
        let task = tokio::spawn(async move { s.send_all(vec![events(2), events(1)]).await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.send(true).unwrap();
        let out = task.await.unwrap();
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|(_, r)| *r == SlotResult::Abandoned), "{out:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn list_additions_report_unknown_contacts() {
        let d = Scripted::new(vec![Ok(reply(201, r#"{"contacts":{"success":["a"],"failure":["b"]}}"#))]);
        let (s, _stop) = sender(d.clone());
        let batch = Batch {
            shape: Shape::List { list_id: 3, add: true, by_ext_id: true },
            items: vec![json!("a"), json!("b")],
            owners: vec![vec![10], vec![11]],
        };
        let out = s.send_all(vec![batch]).await;
        assert_eq!(out[0], (10, SlotResult::Done));
        assert!(matches!(&out[1], (11, SlotResult::Failed { .. })));
        assert_eq!(d.seen()[0].body, json!({"extIds": ["a", "b"]}));
    }
}
