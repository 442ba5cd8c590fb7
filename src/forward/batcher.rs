//! Grouping mapped operations into Brevo requests, per delivery lane.
//!
//! A [`Lane`] keeps its open requests in the order they were opened and
//! sends them in that order. An operation joins the newest open request of
//! its shape unless that request was opened before the request holding the
//! same user's previous operation: then a new request is opened behind it.
//! So a user's operations reach Brevo in the order they happened, even across
//! endpoints (an identify's import, then that user's events), while everyone
//! else's events keep filling the same batch.
//!
//! A request is ready when full (200 events / 512 KB, 150 list items, ...)
//! or when it has waited `linger`. A lane hands out the prefix of its open
//! requests up to the last ready one: whatever sits in front of a ready
//! request goes with it (order), the partly filled batch behind it keeps
//! filling. At saturation that is what keeps batches at 200 events.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::brevo::{BrevoRequest, EndpointClass};
use super::mapping::{import_body, ContactRef, Op};
use crate::config::BrevoConfig;

/// Handle of one envelope in the forwarder's table.
pub type EnvelopeId = u64;

/// Brevo's list calls take 1–150 contacts.
pub const LIST_MAX_ITEMS: usize = 150;
/// `/v3/contacts/import` documents ~8 MB as the safe body size; staying
/// far below keeps one bad import cheap to bisect.
pub const IMPORT_MAX_BYTES: usize = 2_000_000;
pub const IMPORT_MAX_CONTACTS: usize = 1_000;

/// Size limits per request shape.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_event_bytes: usize,
}

impl BatchLimits {
    pub fn from_config(cfg: &BrevoConfig) -> BatchLimits {
        BatchLimits { max_events: cfg.max_batch_events.clamp(1, 200), max_event_bytes: cfg.max_batch_bytes }
    }

    fn caps(&self, shape: &Shape) -> (usize, usize) {
        match shape {
            Shape::Events => (self.max_events, self.max_event_bytes),
            Shape::Import(_) => (IMPORT_MAX_CONTACTS, IMPORT_MAX_BYTES),
            Shape::Upsert => (1, usize::MAX),
            Shape::List { .. } => (LIST_MAX_ITEMS, usize::MAX),
        }
    }
}

/// Which endpoint a request goes to, and what must match to share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Shape {
    Events,
    /// Imports into the same lists share a request.
    Import(Vec<i64>),
    Upsert,
    List {
        list_id: i64,
        add: bool,
        by_ext_id: bool,
    },
}

impl Shape {
    /// JSON overhead of an empty request body of this shape.
    fn base_bytes(&self) -> usize {
        match self {
            Shape::Events => r#"{"events":[]}"#.len(),
            Shape::Import(ids) => 140 + ids.len() * 12,
            _ => 16,
        }
    }
}

/// One request ready to send: items plus which envelopes each item serves
/// (an import entry merged from two identifies of one person serves both).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub shape: Shape,
    pub items: Vec<Value>,
    pub owners: Vec<Vec<EnvelopeId>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The HTTP request for this batch.
    pub fn request(&self) -> BrevoRequest {
        let (class, path, body) = match &self.shape {
            Shape::Events => (EndpointClass::Events, "/events/batch".to_string(), json!({ "events": self.items })),
            Shape::Import(ids) => {
                (EndpointClass::Contacts, "/contacts/import".to_string(), import_body(ids, self.items.clone()))
            }
            Shape::Upsert => (
                EndpointClass::Contacts,
                "/contacts".to_string(),
                self.items.first().cloned().unwrap_or(Value::Object(Map::new())),
            ),
            Shape::List { list_id, add, by_ext_id } => {
                let verb = if *add { "add" } else { "remove" };
                let key = if *by_ext_id { "extIds" } else { "emails" };
                (
                    EndpointClass::Contacts,
                    format!("/contacts/lists/{list_id}/contacts/{verb}"),
                    json!({ key: self.items }),
                )
            }
        };
        let events = self.owners.iter().map(Vec::len).sum();
        BrevoRequest::new(class, path, body, events)
    }

    /// The items at `indexes` (ascending), as their own batch.
    pub fn subset(&self, indexes: &[usize]) -> Batch {
        Batch {
            shape: self.shape.clone(),
            items: indexes.iter().filter_map(|&i| self.items.get(i).cloned()).collect(),
            owners: indexes.iter().filter_map(|&i| self.owners.get(i).cloned()).collect(),
        }
    }

    /// Two halves, in order (for isolating a bad item Brevo did not name).
    pub fn halves(&self) -> (Batch, Batch) {
        let mid = self.items.len() / 2;
        let first: Vec<usize> = (0..mid).collect();
        let second: Vec<usize> = (mid..self.items.len()).collect();
        (self.subset(&first), self.subset(&second))
    }
}

#[derive(Debug)]
struct OpenRequest {
    serial: u64,
    shape: Shape,
    opened_at: Instant,
    items: Vec<Value>,
    owners: Vec<Vec<EnvelopeId>>,
    /// Import entries by email, to merge repeated upserts of one contact.
    by_email: HashMap<String, usize>,
    bytes: usize,
    full: bool,
}

/// An operation that can never fit a request (e.g. one event over 512 KB).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {what} of {bytes} bytes exceeds Brevo's request limit of {limit} bytes")]
pub struct TooLarge {
    pub what: &'static str,
    pub bytes: usize,
    pub limit: usize,
}

/// The open requests of one delivery lane.
#[derive(Debug)]
pub struct Lane {
    limits: BatchLimits,
    open: VecDeque<OpenRequest>,
    next_serial: u64,
    /// Serial of the request holding each user's latest operation.
    last_of_user: HashMap<String, u64>,
}

impl Lane {
    pub fn new(limits: BatchLimits) -> Lane {
        Lane { limits, open: VecDeque::new(), next_serial: 0, last_of_user: HashMap::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Operations waiting in this lane.
    pub fn pending_items(&self) -> usize {
        self.open.iter().map(|r| r.items.len()).sum()
    }

    /// Check that every operation fits an empty request (nothing is added).
    pub fn check(&self, ops: &[Op]) -> Result<(), TooLarge> {
        for op in ops {
            let shape = shape_of(op);
            let (_, max_bytes) = self.limits.caps(&shape);
            let bytes = shape.base_bytes() + op.bytes();
            if bytes > max_bytes {
                let what = if matches!(op, Op::Event { .. }) { "Brevo event" } else { "contact import entry" };
                return Err(TooLarge { what, bytes, limit: max_bytes });
            }
        }
        Ok(())
    }

    /// Add one envelope's operations; returns how many item slots it owns
    /// (each will get exactly one result when its request is done).
    /// Call [`Lane::check`] first: an operation too large for any request
    /// would otherwise sit in a request of its own and be refused by Brevo.
    pub fn push(&mut self, env: EnvelopeId, user: &str, ops: Vec<Op>, now: Instant) -> usize {
        let mut slots = 0;
        for op in ops {
            let floor = self.last_of_user.get(user).copied().unwrap_or(0);
            let shape = shape_of(&op);
            let (max_items, max_bytes) = self.limits.caps(&shape);
            let op_bytes = op.bytes();
            // The newest open request of this shape, if it is not before the
            // user's latest operation.
            let candidate = self.open.iter().rposition(|r| r.shape == shape).filter(|&i| {
                let r = &self.open[i];
                r.serial >= floor && !r.full
            });
            let idx = match candidate {
                Some(i) if self.open[i].fits(op_bytes, max_items, max_bytes, &op) => i,
                other => {
                    if let Some(i) = other {
                        self.open[i].full = true;
                    }
                    self.open_request(shape, now)
                }
            };
            let req = &mut self.open[idx];
            req.add(env, op, op_bytes);
            if req.items.len() >= max_items {
                req.full = true;
            }
            slots += 1;
            let serial = req.serial;
            self.last_of_user.insert(user.to_string(), serial);
        }
        slots
    }

    fn open_request(&mut self, shape: Shape, now: Instant) -> usize {
        let serial = self.next_serial;
        self.next_serial += 1;
        let bytes = shape.base_bytes();
        self.open.push_back(OpenRequest {
            serial,
            shape,
            opened_at: now,
            items: Vec::new(),
            owners: Vec::new(),
            by_email: HashMap::new(),
            bytes,
            full: false,
        });
        self.open.len() - 1
    }

    /// When the next request becomes ready on its own.
    pub fn next_deadline(&self, linger: Duration) -> Option<Instant> {
        let mut at = self.open.front().map(|r| r.opened_at + linger)?;
        if let Some(full) = self.open.iter().find(|r| r.full) {
            at = at.min(full.opened_at);
        }
        Some(at)
    }

    /// The open requests up to the last ready one (all of them when
    /// `force`), in the order they must be sent.
    pub fn take_ready(&mut self, now: Instant, linger: Duration, force: bool) -> Vec<Batch> {
        self.take_ready_at_most(now, linger, force, usize::MAX)
    }

    /// Like [`Lane::take_ready`], but at most `max` non-empty requests, the
    /// oldest. The forwarder sends one request per task so that an envelope
    /// is acknowledged as soon as its request is answered: what a crash can
    /// redeliver is then one request per lane, not a lane's whole backlog.
    pub fn take_ready_at_most(&mut self, now: Instant, linger: Duration, force: bool, max: usize) -> Vec<Batch> {
        let last_ready = if force {
            self.open.len().checked_sub(1)
        } else {
            self.open.iter().rposition(|r| r.full || r.opened_at + linger <= now)
        };
        let Some(last) = last_ready else { return Vec::new() };
        let mut taken = Vec::new();
        for _ in 0..=last {
            if taken.len() >= max {
                break;
            }
            let Some(r) = self.open.pop_front() else { break };
            let b = Batch { shape: r.shape, items: r.items, owners: r.owners };
            if !b.is_empty() {
                taken.push(b);
            }
        }
        let first_open = self.open.front().map_or(self.next_serial, |r| r.serial);
        self.last_of_user.retain(|_, serial| *serial >= first_open);
        taken
    }
}

impl OpenRequest {
    fn fits(&self, op_bytes: usize, max_items: usize, max_bytes: usize, op: &Op) -> bool {
        if let Op::Import { email, .. } = op {
            if self.by_email.contains_key(email) {
                return self.bytes + op_bytes <= max_bytes;
            }
        }
        let separator = usize::from(!self.items.is_empty());
        self.items.len() < max_items && self.bytes + op_bytes + separator <= max_bytes
    }

    fn add(&mut self, env: EnvelopeId, op: Op, op_bytes: usize) {
        match op {
            Op::Event { item, .. } => self.push_item(env, item, op_bytes),
            Op::Import { email, attributes, .. } => {
                if let Some(&i) = self.by_email.get(&email) {
                    // The same contact twice in one import: one entry with
                    // the later values winning, serving both envelopes.
                    if let Some(Value::Object(entry)) = self.items.get_mut(i) {
                        let attrs = entry.entry("attributes").or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(a) = attrs {
                            a.extend(attributes);
                        }
                    }
                    self.owners[i].push(env);
                    self.bytes += op_bytes;
                    return;
                }
                let mut entry = Map::new();
                entry.insert("email".into(), Value::from(email.clone()));
                if !attributes.is_empty() {
                    entry.insert("attributes".into(), Value::Object(attributes));
                }
                self.by_email.insert(email, self.items.len());
                self.push_item(env, Value::Object(entry), op_bytes);
            }
            Op::Upsert { body } => self.push_item(env, body, op_bytes),
            Op::List { contact: ContactRef::Email(s) | ContactRef::ExtId(s), .. } => {
                self.push_item(env, Value::from(s), op_bytes)
            }
        }
    }

    fn push_item(&mut self, env: EnvelopeId, item: Value, op_bytes: usize) {
        self.items.push(item);
        self.owners.push(vec![env]);
        self.bytes += op_bytes + usize::from(self.items.len() > 1);
    }
}

fn shape_of(op: &Op) -> Shape {
    match op {
        Op::Event { .. } => Shape::Events,
        Op::Import { list_ids, .. } => Shape::Import(list_ids.clone()),
        Op::Upsert { .. } => Shape::Upsert,
        Op::List { list_id, add, contact } => {
            Shape::List { list_id: *list_id, add: *add, by_ext_id: matches!(contact, ContactRef::ExtId(_)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BatchLimits {
        BatchLimits { max_events: 3, max_event_bytes: 512_000 }
    }

    fn ev(n: u32) -> Op {
        let item = json!({"event_name": "e", "identifiers": {"ext_id": format!("u{n}")}});
        let bytes = serde_json::to_vec(&item).unwrap().len();
        Op::Event { item, bytes }
    }

    fn import(email: &str, attrs: Value) -> Op {
        Op::Import { email: email.into(), attributes: attrs.as_object().unwrap().clone(), list_ids: vec![2] }
    }

    const LINGER: Duration = Duration::from_millis(1000);

    /// A lane holding seven one-event envelopes from seven users, pushed at `now`.
    fn lane_of_seven(now: Instant) -> Lane {
        let mut lane = Lane::new(limits());
        for i in 0..7 {
            lane.push(i, &format!("u{i}"), vec![ev(i as u32)], now);
        }
        lane
    }

    #[tokio::test(start_paused = true)]
    async fn fills_to_the_event_limit_then_opens_the_next() {
        let now = Instant::now();
        let mut lane = lane_of_seven(now);
        let ready = lane.take_ready(now, LINGER, false);
        assert_eq!(ready.iter().map(Batch::len).collect::<Vec<_>>(), vec![3, 3], "the partial third waits");
        assert_eq!(ready[0].owners, vec![vec![0], vec![1], vec![2]]);
        assert_eq!(lane.next_deadline(LINGER), Some(now + LINGER));
        assert!(lane.take_ready(now + LINGER - Duration::from_millis(1), LINGER, false).is_empty());
        let rest = lane.take_ready(now + LINGER, LINGER, false);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].owners, vec![vec![6]]);
        assert!(lane.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_takes_the_oldest_ready_requests_and_leaves_the_rest() {
        let now = Instant::now();
        let mut lane = lane_of_seven(now);
        let first = lane.take_ready_at_most(now, LINGER, false, 1);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].owners, vec![vec![0], vec![1], vec![2]], "the oldest request first");
        let second = lane.take_ready_at_most(now, LINGER, false, 1);
        assert_eq!(second[0].owners, vec![vec![3], vec![4], vec![5]]);
        assert!(lane.take_ready_at_most(now, LINGER, false, 1).is_empty(), "the partial third waits");
        assert_eq!(lane.take_ready_at_most(now + LINGER, LINGER, false, 1)[0].owners, vec![vec![6]]);
        assert!(lane.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn byte_limit_closes_a_batch() {
        let one = match ev(1) {
            Op::Event { bytes, .. } => bytes,
            _ => unreachable!(),
        };
        let mut lane =
            Lane::new(BatchLimits { max_events: 200, max_event_bytes: Shape::Events.base_bytes() + 2 * one + 1 });
        let now = Instant::now();
        for i in 0..5 {
            lane.push(i, "u", vec![ev(1)], now);
        }
        let all = lane.take_ready(now, LINGER, true);
        assert_eq!(all.iter().map(Batch::len).collect::<Vec<_>>(), vec![2, 2, 1]);
        for b in &all {
            assert!(serde_json::to_vec(&b.request().body).unwrap().len() <= Shape::Events.base_bytes() + 2 * one + 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_users_later_event_never_overtakes_their_earlier_contact_update() {
        let mut lane = Lane::new(BatchLimits { max_events: 200, max_event_bytes: 512_000 });
        let now = Instant::now();
        lane.push(0, "ann", vec![ev(0)], now); // events #0
        lane.push(1, "ann", vec![import("ann@x.io", json!({"PLAN": "pro"}))], now); // import #1
        lane.push(2, "bob", vec![ev(2)], now); // bob has nothing pending: joins events #0
        lane.push(3, "ann", vec![ev(3)], now); // must come after ann's import: new events #2
        let batches = lane.take_ready(now, LINGER, true);
        let shapes: Vec<_> = batches.iter().map(|b| (b.shape.clone(), b.owners.clone())).collect();
        assert_eq!(
            shapes,
            vec![
                (Shape::Events, vec![vec![0], vec![2]]),
                (Shape::Import(vec![2]), vec![vec![1]]),
                (Shape::Events, vec![vec![3]]),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_imports_of_one_contact_merge_into_one_entry() {
        let mut lane = Lane::new(limits());
        let now = Instant::now();
        lane.push(0, "ann", vec![import("ann@x.io", json!({"A": 1, "B": 1}))], now);
        lane.push(1, "ann", vec![import("ann@x.io", json!({"B": 2}))], now);
        lane.push(2, "bo", vec![import("bo@x.io", json!({}))], now);
        let b = lane.take_ready(now, LINGER, true).remove(0);
        assert_eq!(b.owners, vec![vec![0, 1], vec![2]]);
        let req = b.request();
        assert_eq!(req.path, "/contacts/import");
        assert_eq!(req.class, EndpointClass::Contacts);
        assert_eq!(req.events, 3);
        assert_eq!(
            req.body,
            json!({
                "jsonBody": [{"email": "ann@x.io", "attributes": {"A": 1, "B": 2}}, {"email": "bo@x.io"}],
                "listIds": [2], "updateExistingContacts": true, "emptyContactsAttributes": false,
                "disableNotification": true,
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn list_calls_hold_at_most_150_and_group_by_list_and_identifier() {
        let mut lane = Lane::new(limits());
        let now = Instant::now();
        for i in 0..160u64 {
            let contact = ContactRef::Email(format!("c{i}@x.io"));
            lane.push(i, &format!("c{i}"), vec![Op::List { list_id: 5, add: false, contact }], now);
        }
        lane.push(500, "z", vec![Op::List { list_id: 5, add: false, contact: ContactRef::ExtId("z".into()) }], now);
        let batches = lane.take_ready(now, LINGER, true);
        assert_eq!(batches.iter().map(Batch::len).collect::<Vec<_>>(), vec![150, 10, 1]);
        assert_eq!(batches[0].request().path, "/contacts/lists/5/contacts/remove");
        assert_eq!(batches[0].request().body["emails"].as_array().unwrap().len(), 150);
        assert_eq!(batches[2].request().body, json!({"extIds": ["z"]}));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_request_behind_a_partial_one_sends_both_in_order() {
        let mut lane = Lane::new(limits());
        let now = Instant::now();
        lane.push(0, "a", vec![ev(0)], now);
        lane.push(1, "b", vec![Op::Upsert { body: json!({"ext_id": "b", "updateEnabled": true}) }], now);
        // The upsert is full at once (one per call): it is ready, and so is
        // everything before it.
        assert_eq!(lane.next_deadline(LINGER), Some(now));
        let b = lane.take_ready(now, LINGER, false);
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].request().path, "/contacts");
    }

    #[tokio::test(start_paused = true)]
    async fn oversize_operations_are_refused_up_front() {
        let lane = Lane::new(BatchLimits { max_events: 200, max_event_bytes: 100 });
        let item = json!({"event_name": "x".repeat(200)});
        let err = lane.check(&[Op::Event { bytes: 215, item }]).unwrap_err();
        assert_eq!(err.limit, 100);
    }

    #[test]
    fn subsets_and_halves_keep_owners_aligned() {
        let b = Batch {
            shape: Shape::Events,
            items: (0..5).map(|i| json!(i)).collect(),
            owners: (0..5).map(|i| vec![i]).collect(),
        };
        let s = b.subset(&[1, 3]);
        assert_eq!((s.items.clone(), s.owners.clone()), (vec![json!(1), json!(3)], vec![vec![1], vec![3]]));
        let (l, r) = b.halves();
        assert_eq!((l.len(), r.len()), (2, 3));
        assert_eq!(r.owners[0], vec![2]);
    }
}
