//! Bounded "seen recently" sets for idempotency keys (webhook event ids,
//! Amplitude `insert_id`s, envelope ids in the forwarder).
//!
//! * Lookups are in memory only; memory holds at most `max_entries` ids, and
//!   the oldest are forgotten first (every id has the same window, so oldest
//!   inserted is also soonest to expire).
//! * An id is remembered with [`DedupStore::remember`] only after the work it
//!   guards succeeded (the publish), so a refused request can be retried.
//! * With a directory (the embedded bus), ids are also written to
//!   `dedup.redb` there and reloaded on start, so a restart keeps the window.
//!   A request only queues its ids in memory; a background thread appends
//!   everything queued to the file once a second, in one fsync'd commit, so
//!   a crash can forget up to a second of ids (the forwarder's envelope-id
//!   dedup is the second line). Writing on the request path serialized every
//!   request on redb's write lock: Amplitude on the embedded bus ran at a
//!   quarter of its Kafka rate.
//! * Across replicas each process has its own set: a redelivery that lands on
//!   another ingress replica is published again and then suppressed by the
//!   forwarder's envelope-id dedup (same id), within its window.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hashbrown::HashTable;
use redb::{Database, Durability, ReadableTable, TableDefinition, TableHandle};

/// The layout before batches: id → expiry (ms since epoch), one table per
/// store name. Read on load, then dropped.
type LegacyTable<'a> = TableDefinition<'a, &'static str, u64>;

/// One table per store name (`<name>/batches`): batch number → the ids one
/// flush appended, each as expiry ms (u64 LE), length (u32 LE), id bytes.
/// Appending in order keeps writes sequential; whole batches are deleted
/// once their last id expired.
type BatchTable<'a> = TableDefinition<'a, u64, &'static [u8]>;

/// Ids queued by one store, waiting for the next flush, already in the
/// stored layout (no allocation per id).
#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    /// Ids not queued because the queue was full (flushes fell behind).
    skipped: u64,
}

/// The dedup file of one directory, shared by the stores opened on it
/// (redb wants one handle per file per process).
struct Persist {
    db: Database,
    pending: Arc<Pending>,
    /// Serializes flushes (the background one and a dropping store's).
    flushing: Mutex<()>,
}

/// What waits to be written, shared with the flush thread (which must not
/// keep the file open by holding the `Persist`).
#[derive(Default)]
struct Pending {
    queues: Mutex<HashMap<String, Queue>>,
    /// Woken when a queue reaches [`FLUSH_BYTES`].
    full: Condvar,
}

/// A flush runs once a second, or as soon as a store queued this much.
const FLUSH_BYTES: usize = 1 << 20;
/// At most this much waits per store; beyond it ids stay in memory only
/// (counted in a warning): memory stays bounded when the disk is slower
/// than the traffic.
const MAX_QUEUED_BYTES: usize = 16 << 20;
/// Largest stored batch value: a flush of more is split, so redb never
/// allocates a page of many megabytes for one value.
const BATCH_BYTES: usize = 256 << 10;

fn shared_persist(dir: &Path) -> anyhow::Result<Arc<Persist>> {
    static OPEN: Mutex<Vec<(std::path::PathBuf, std::sync::Weak<Persist>)>> = Mutex::new(Vec::new());
    std::fs::create_dir_all(dir)?;
    let path = dir.join("dedup.redb");
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|(_, w)| w.strong_count() > 0);
    if let Some(p) = open.iter().find(|(p, _)| *p == path).and_then(|(_, w)| w.upgrade()) {
        return Ok(p);
    }
    // A small page cache: the window is bounded and mostly in memory already.
    let db = redb::Builder::new().set_cache_size(8 << 20).create(&path)?;
    let pending = Arc::new(Pending::default());
    let persist = Arc::new(Persist { db, pending: pending.clone(), flushing: Mutex::new(()) });
    open.push((path, Arc::downgrade(&persist)));
    let weak = Arc::downgrade(&persist);
    std::thread::Builder::new().name("sluice-dedup-flush".into()).spawn(move || flush_loop(weak, pending))?;
    Ok(persist)
}

/// Write what was queued once a second (sooner when a queue is large), and
/// stop with the last store.
fn flush_loop(persist: std::sync::Weak<Persist>, pending: Arc<Pending>) {
    loop {
        {
            let queues = pending.queues.lock().unwrap_or_else(|p| p.into_inner());
            let idle = |q: &mut HashMap<String, Queue>| q.values().all(|q| q.buf.len() < FLUSH_BYTES);
            let _ = pending.full.wait_timeout_while(queues, Duration::from_secs(1), idle);
        }
        let Some(p) = persist.upgrade() else { return };
        if let Err(e) = p.flush(now_ms()) {
            tracing::warn!(error = %e, "cannot persist dedup ids; they stay in memory");
        }
    }
}

impl Persist {
    fn queue<'a>(&self, store: &str, exp: u64, ids: impl Iterator<Item = &'a str>) {
        let mut queues = self.pending.queues.lock().unwrap_or_else(|p| p.into_inner());
        let q = match queues.get_mut(store) {
            Some(q) => q,
            None => queues.entry(store.to_string()).or_default(),
        };
        for id in ids {
            if q.buf.len() < MAX_QUEUED_BYTES {
                encode_id(&mut q.buf, exp, id);
            } else {
                q.skipped += 1;
            }
        }
        if q.buf.len() >= FLUSH_BYTES {
            self.pending.full.notify_one();
        }
    }

    /// Append every queued id in one durable commit and delete batches
    /// that expired entirely. On failure the ids are lost from disk only
    /// (memory still has them).
    fn flush(&self, now: u64) -> anyhow::Result<()> {
        let _one = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let queues = std::mem::take(&mut *self.pending.queues.lock().unwrap_or_else(|p| p.into_inner()));
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let mut wrote = false;
        for (name, q) in queues {
            if q.skipped > 0 {
                tracing::warn!(store = %name, ids = q.skipped, "dedup ids arrived faster than they could be persisted; kept in memory only");
            }
            let table_name = batch_table(&name);
            let mut t = txn.open_table(BatchTable::new(&table_name))?;
            wrote |= append_batches(&mut t, &q.buf)?;
            // Batches are in append order and each id's window is the same,
            // so the first batch is the soonest to expire.
            loop {
                let first = t.first()?.map(|(k, v)| (k.value(), batch_ids(v.value()).all(|(exp, _)| exp <= now)));
                let Some((k, true)) = first else { break };
                t.remove(k)?;
                wrote = true;
            }
        }
        if wrote {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(())
    }
}

/// Append encoded ids to a store's table as batches after its last one;
/// whether anything was written.
fn append_batches(t: &mut redb::Table<'_, u64, &'static [u8]>, buf: &[u8]) -> anyhow::Result<bool> {
    let next = t.last()?.map_or(0, |(k, _)| k.value() + 1);
    let mut wrote = false;
    for (key, value) in (next..).zip(split_batches(buf)) {
        t.insert(key, value)?;
        wrote = true;
    }
    Ok(wrote)
}

/// Append one id in the stored layout. Ids come from request bodies, far
/// below 4 GiB.
fn encode_id(buf: &mut Vec<u8>, exp: u64, id: &str) {
    buf.extend_from_slice(&exp.to_le_bytes());
    buf.extend_from_slice(&(id.len() as u32).to_le_bytes());
    buf.extend_from_slice(id.as_bytes());
}

/// Cut encoded ids into values of at most [`BATCH_BYTES`] (or one id, if
/// larger), at id boundaries.
fn split_batches(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let mut end = 0;
        while end < buf.len() {
            let len = buf.get(end + 8..end + 12).map_or(0, |l| u32::from_le_bytes(l.try_into().unwrap()) as usize);
            let next = (end + 12 + len).min(buf.len());
            if end > 0 && next > BATCH_BYTES {
                break;
            }
            end = next;
        }
        let (value, rest) = buf.split_at(end);
        buf = rest;
        Some(value)
    })
}

fn batch_table(store: &str) -> String {
    format!("{store}/batches")
}

/// The (expiry ms, id) pairs of one stored batch; stops at a truncated entry.
fn batch_ids(mut raw: &[u8]) -> impl Iterator<Item = (u64, &str)> {
    std::iter::from_fn(move || {
        let exp = u64::from_le_bytes(raw.get(0..8)?.try_into().ok()?);
        let len = u32::from_le_bytes(raw.get(8..12)?.try_into().ok()?) as usize;
        let id = raw.get(12..12 + len)?;
        raw = &raw[12 + len..];
        // Ids were &str when written; a damaged one is skipped, not trusted.
        Some((exp, std::str::from_utf8(id).unwrap_or("")))
    })
    .filter(|(_, id)| !id.is_empty())
}

/// Ids are held in memory as 128-bit keyed digests, not strings, and the
/// per-process random keys leave nobody able to aim a collision.
///
/// Every id has the same window, so insertion order is also expiry order:
/// the ids live in one queue, oldest first (digest + expiry second, 20
/// bytes), and the lookup tables hold only each id's position in it (4
/// bytes and a control byte per bucket). About 30 bytes per id in all,
/// against ~60 for a map of digest → expiry beside a queue of digests (the
/// Amplitude window holds up to a million). The tables are split in
/// [`SHARDS`] so that growing them never holds two full-size tables at once.
struct Memory {
    /// Oldest first; evicted from the front beyond `max_entries`.
    queue: VecDeque<Slot>,
    /// Sequence number of `queue[0]`; `queue[i]` has `head + i`. Wrapping:
    /// the queue is far shorter than 2³¹, so differences stay exact.
    head: u32,
    /// Per shard: sequence numbers of the queued ids, found by digest.
    index: Vec<HashTable<u32>>,
    keys: (RandomState, RandomState),
}

#[derive(Clone, Copy)]
struct Slot {
    digest: Digest,
    /// Whole seconds since the epoch, rounded up (an id may be remembered
    /// up to a second longer).
    expiry: u32,
}

type Digest = [u32; 4];

const SHARDS: usize = 16;

impl Memory {
    fn new() -> Memory {
        Memory::starting_at(0)
    }

    fn starting_at(head: u32) -> Memory {
        Memory {
            queue: VecDeque::new(),
            head,
            index: (0..SHARDS).map(|_| HashTable::new()).collect(),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    fn digest(&self, id: &str) -> Digest {
        let (a, b) = (self.keys.0.hash_one(id), self.keys.1.hash_one(id));
        [a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32]
    }

    /// The queue position of `d`, if held.
    fn position(&self, d: &Digest) -> Option<usize> {
        let (queue, head) = (&self.queue, self.head);
        self.index[shard_of(d)]
            .find(table_hash(d), |&seq| queue.get(seq.wrapping_sub(head) as usize).is_some_and(|s| s.digest == *d))
            .map(|&seq| seq.wrapping_sub(head) as usize)
    }

    fn expiry_of(&self, d: &Digest) -> Option<u32> {
        self.position(d).map(|i| self.queue[i].expiry)
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    /// Insert or refresh (a refreshed id keeps its place in the queue);
    /// evict the oldest beyond `max`.
    fn insert(&mut self, d: Digest, exp_ms: u64, max: usize) {
        let expiry = seconds_up(exp_ms);
        if let Some(i) = self.position(&d) {
            self.queue[i].expiry = expiry;
            return;
        }
        while self.queue.len() >= max.max(1) {
            self.evict_oldest();
        }
        let seq = self.head.wrapping_add(self.queue.len() as u32);
        self.queue.push_back(Slot { digest: d, expiry });
        let (queue, head) = (&self.queue, self.head);
        self.index[shard_of(&d)].insert_unique(table_hash(&d), seq, |&s| {
            queue.get(s.wrapping_sub(head) as usize).map_or(0, |s| table_hash(&s.digest))
        });
    }

    fn evict_oldest(&mut self) {
        let Some(old) = self.queue.front().map(|s| s.digest) else { return };
        let head = self.head;
        if let Ok(entry) = self.index[shard_of(&old)].find_entry(table_hash(&old), |&seq| seq == head) {
            entry.remove();
        }
        self.queue.pop_front();
        self.head = self.head.wrapping_add(1);
    }
}

/// Digests are uniformly random already (keyed): the tables use two of
/// their words as the hash, and a third picks the shard.
fn table_hash(d: &Digest) -> u64 {
    u64::from(d[0]) | u64::from(d[1]) << 32
}

fn shard_of(d: &Digest) -> usize {
    d[3] as usize % SHARDS
}

/// `ms` as whole seconds, rounded up.
fn seconds_up(ms: u64) -> u32 {
    u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
}

/// A bounded, windowed set of ids; cheap to share behind an `Arc`.
pub struct DedupStore {
    name: String,
    window_ms: u64,
    max_entries: usize,
    mem: Mutex<Memory>,
    persist: Option<Arc<Persist>>,
}

impl DedupStore {
    /// `name` labels the metric and names the on-disk table; `dir` enables
    /// persistence.
    pub fn open(
        name: impl Into<String>,
        window: Duration,
        max_entries: usize,
        dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let store = DedupStore {
            name: name.into(),
            window_ms: window.as_millis() as u64,
            max_entries: max_entries.max(1),
            mem: Mutex::new(Memory::new()),
            persist: dir.map(shared_persist).transpose()?,
        };
        store.load(now_ms())?;
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reload unexpired ids from disk (the newest `max_entries` of them);
    /// ids in the layout before batches are moved into a batch.
    fn load(&self, now: u64) -> anyhow::Result<()> {
        let Some(p) = &self.persist else { return Ok(()) };
        let mut live: Vec<(u64, String)> = Vec::new();
        let mut legacy = Vec::new();
        {
            let txn = p.db.begin_read()?;
            let table_name = batch_table(&self.name);
            match txn.open_table(BatchTable::new(&table_name)) {
                Ok(t) => {
                    for item in t.iter()? {
                        let (_, v) = item?;
                        live.extend(
                            batch_ids(v.value()).filter(|(exp, _)| *exp > now).map(|(e, id)| (e, id.to_string())),
                        );
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
            match txn.open_table(LegacyTable::new(&self.name)) {
                Ok(t) => {
                    for item in t.iter()? {
                        let (k, v) = item?;
                        if v.value() > now {
                            legacy.push((v.value(), k.value().to_string()));
                        }
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !legacy.is_empty() || p.db.begin_read()?.list_tables()?.any(|t| t.name() == self.name) {
            let txn = p.db.begin_write()?;
            {
                let table_name = batch_table(&self.name);
                let mut t = txn.open_table(BatchTable::new(&table_name))?;
                let mut buf = Vec::new();
                for (exp, id) in &legacy {
                    encode_id(&mut buf, *exp, id);
                }
                append_batches(&mut t, &buf)?;
            }
            txn.delete_table(LegacyTable::new(&self.name))?;
            txn.commit()?;
            live.extend(legacy);
        }
        live.sort_unstable();
        let mut mem = self.lock();
        for (exp, id) in live.into_iter().rev().take(self.max_entries).rev() {
            let d = mem.digest(&id);
            mem.insert(d, exp, self.max_entries);
        }
        Ok(())
    }

    /// Whether `id` was remembered within the window. Counts a hit.
    pub fn seen(&self, id: &str) -> bool {
        self.seen_at(id, now_ms())
    }

    pub fn seen_at(&self, id: &str, now: u64) -> bool {
        let mem = self.lock();
        let hit = mem.expiry_of(&mem.digest(id)).is_some_and(|exp| u64::from(exp) * 1000 > now);
        drop(mem);
        if hit {
            crate::metrics::dedup_hit(&self.name, 1);
        }
        hit
    }

    /// Remember ids whose work succeeded.
    pub fn remember<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        self.remember_at(ids, now_ms())
    }

    pub fn remember_at<'a>(&self, ids: impl IntoIterator<Item = &'a str>, now: u64) {
        let exp = now + self.window_ms;
        let mut mem = self.lock();
        let ids = ids.into_iter().inspect(|id| {
            let d = mem.digest(id);
            mem.insert(d, exp, self.max_entries);
        });
        // Into memory as they go by; queued for the file too on the embedded
        // bus (the flush thread only ever takes the queue's lock).
        match &self.persist {
            Some(p) => p.queue(&self.name, exp, ids),
            None => ids.for_each(|_| {}),
        }
    }

    /// Ids currently held in memory.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for DedupStore {
    /// A clean stop makes every remembered id durable.
    fn drop(&mut self) {
        if let Some(p) = &self.persist {
            if let Err(e) = p.flush(now_ms()) {
                tracing::warn!(store = %self.name, error = %e, "cannot persist dedup ids on shutdown");
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_bound() {
        let s = DedupStore::open("t_window", Duration::from_secs(10), 3, None).unwrap();
        s.remember_at(["a"], 1_000);
        assert!(s.seen_at("a", 5_000));
        assert!(!s.seen_at("a", 11_001), "expired after the window");
        s.remember_at(["b", "c", "d"], 2_000);
        assert_eq!(s.len(), 3);
        assert!(!s.seen_at("a", 2_001), "oldest evicted beyond max_entries");
        assert!(s.seen_at("d", 2_001));
    }

    #[test]
    fn many_ids_stay_exact_up_to_the_bound() {
        let s = DedupStore::open("t_many", Duration::from_secs(60), 50_000, None).unwrap();
        let ids: Vec<String> = (0..60_000).map(|i| format!("insert-{i}")).collect();
        s.remember_at(ids.iter().map(String::as_str), 1_000);
        assert_eq!(s.len(), 50_000);
        assert!(ids[..10_000].iter().all(|id| !s.seen_at(id, 2_000)), "the oldest 10,000 evicted");
        assert!(ids[10_000..].iter().all(|id| s.seen_at(id, 2_000)));
        assert!(!s.seen_at("insert-60000", 2_000));
        // Expiry is kept to the second, rounded up.
        assert!(s.seen_at("insert-59999", 61_000 - 1));
        assert!(!s.seen_at("insert-59999", 61_000));
        s.remember_at(["late"], 1_500);
        assert!(s.seen_at("late", 61_999), "61.5 s is held as 62 s");
        assert!(!s.seen_at("late", 62_000));
    }

    /// Positions are wrapping sequence numbers: lookups, refreshes and
    /// evictions stay exact across the wrap.
    #[test]
    fn queue_positions_wrap() {
        let mut m = Memory::starting_at(u32::MAX - 3);
        let ds: Vec<Digest> = (0..10).map(|i| m.digest(&format!("id-{i}"))).collect();
        for (i, d) in ds.iter().enumerate() {
            m.insert(*d, 1_000 * (i as u64 + 1), 6);
        }
        // 10 inserted, 6 kept: the head passed u32::MAX on the way.
        assert_eq!(m.len(), 6);
        assert_eq!(m.head, (u32::MAX - 3).wrapping_add(4));
        assert!(ds[..4].iter().all(|d| m.expiry_of(d).is_none()));
        assert_eq!(ds[4..].iter().map(|d| m.expiry_of(d).unwrap()).collect::<Vec<_>>(), vec![5, 6, 7, 8, 9, 10]);
        // A refresh changes the expiry in place: the id is still the oldest.
        m.insert(ds[4], 60_000, 6);
        assert_eq!(m.expiry_of(&ds[4]), Some(60));
        m.insert(m.digest("new"), 11_000, 6);
        assert!(m.expiry_of(&ds[4]).is_none(), "evicted in insertion order, refresh or not");
        assert_eq!(m.expiry_of(&ds[5]), Some(6));
        assert_eq!(m.index.iter().map(HashTable::len).sum::<usize>(), 6, "one table entry per queued id");
    }

    /// What a million ids cost: the queue and the tables' allocations.
    #[test]
    fn a_million_ids_take_about_thirty_bytes_each() {
        let mut m = Memory::new();
        for i in 0..1_200_000u32 {
            let d = m.digest(&format!("insert-{i}"));
            m.insert(d, 60_000, 1_000_000);
        }
        assert_eq!(m.len(), 1_000_000);
        let bytes = m.queue.capacity() * std::mem::size_of::<Slot>()
            + m.index.iter().map(HashTable::allocation_size).sum::<usize>();
        let per_id = bytes / m.len();
        // The map of digest → expiry beside a queue of digests took ~60.
        assert!((24..=36).contains(&per_id), "{per_id} bytes per id");
        assert!(m.expiry_of(&m.digest("insert-199999")).is_none());
        assert_eq!(m.expiry_of(&m.digest("insert-200000")), Some(60));
    }

    #[test]
    fn survives_reopen_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = DedupStore::open("t_disk", Duration::from_secs(3600), 100, Some(dir.path())).unwrap();
            s.remember(["evt_1", "evt_2"]);
        }
        let s = DedupStore::open("t_disk", Duration::from_secs(3600), 100, Some(dir.path())).unwrap();
        assert!(s.seen("evt_1") && s.seen("evt_2"));
        assert!(!s.seen("evt_3"));
    }

    fn stored_batches(p: &Persist, store: &str) -> Vec<Vec<(u64, String)>> {
        let txn = p.db.begin_read().unwrap();
        let name = batch_table(store);
        let Ok(t) = txn.open_table(BatchTable::new(&name)) else { return Vec::new() };
        t.iter()
            .unwrap()
            .map(|item| batch_ids(item.unwrap().1.value()).map(|(e, id)| (e, id.to_string())).collect())
            .collect()
    }

    /// `remember` only queues; a flush appends one batch per store, and
    /// drops batches whose ids all expired.
    #[test]
    fn ids_reach_the_file_in_batches_and_leave_when_expired() {
        let dir = tempfile::tempdir().unwrap();
        let s = DedupStore::open("t_batches", Duration::from_secs(10), 100, Some(dir.path())).unwrap();
        let p = s.persist.clone().unwrap();
        // Times on the real clock: the background flush (every second) may
        // run in between, and must find the same ids alive.
        let t0 = now_ms();
        {
            // Holding the flush lock keeps the background flush out: what
            // `remember` did is all there is to see.
            let _no_flush = p.flushing.lock().unwrap();
            s.remember_at(["a", "b"], t0 + 1_000);
            assert!(stored_batches(&p, "t_batches").is_empty(), "remember wrote to the file");
            let queued = p.pending.queues.lock().unwrap()["t_batches"].buf.clone();
            let queued: Vec<(u64, &str)> = batch_ids(&queued).collect();
            assert_eq!(queued, vec![(t0 + 11_000, "a"), (t0 + 11_000, "b")]);
        }
        s.remember_at(["c"], t0 + 2_000);
        p.flush(t0 + 5_000).unwrap();
        let batches = stored_batches(&p, "t_batches");
        assert!(batches.iter().flatten().count() == 3, "{batches:?}");
        assert!(batches.iter().flatten().any(|(e, id)| id == "c" && *e == t0 + 12_000));
        s.remember_at(["d"], t0 + 20_000);
        p.flush(t0 + 20_000).unwrap();
        // a, b and c expired (11 s, 12 s): their batch is gone, d's is stored.
        assert_eq!(stored_batches(&p, "t_batches"), vec![vec![(t0 + 30_000, "d".to_string())]]);
    }

    #[test]
    fn queued_ids_split_into_bounded_values_at_id_boundaries() {
        let mut buf = Vec::new();
        let ids: Vec<String> = (0..20_000).map(|i| format!("insert-id-{i:08}")).collect();
        for (i, id) in ids.iter().enumerate() {
            encode_id(&mut buf, i as u64, id);
        }
        let huge = "x".repeat(BATCH_BYTES + 1);
        encode_id(&mut buf, 7, &huge);
        encode_id(&mut buf, 8, "after");
        let values: Vec<&[u8]> = split_batches(&buf).collect();
        assert!(values.len() > 2);
        for v in &values {
            assert!(v.len() <= BATCH_BYTES || batch_ids(v).count() == 1, "only a lone id may exceed the bound");
        }
        let got: Vec<(u64, String)> =
            values.iter().flat_map(|v| batch_ids(v).map(|(e, id)| (e, id.to_string()))).collect();
        let mut want: Vec<(u64, String)> = ids.into_iter().enumerate().map(|(i, id)| (i as u64, id)).collect();
        want.push((7, huge));
        want.push((8, "after".into()));
        assert_eq!(got, want);
    }

    /// A file written before batches (one entry per id) is read, its live
    /// ids moved into a batch and the old table dropped.
    #[test]
    fn ids_stored_one_per_entry_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let far = now_ms() + 3_600_000;
        {
            let db = redb::Database::create(dir.path().join("dedup.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(LegacyTable::new("t_legacy")).unwrap();
                t.insert("evt_live", far).unwrap();
                t.insert("evt_expired", 1).unwrap();
            }
            txn.commit().unwrap();
        }
        let s = DedupStore::open("t_legacy", Duration::from_secs(3600), 100, Some(dir.path())).unwrap();
        assert!(s.seen("evt_live"));
        assert!(!s.seen("evt_expired"));
        let p = s.persist.clone().unwrap();
        assert_eq!(stored_batches(&p, "t_legacy"), vec![vec![(far, "evt_live".to_string())]]);
        let tables: Vec<String> =
            p.db.begin_read().unwrap().list_tables().unwrap().map(|t| t.name().to_string()).collect();
        assert!(!tables.contains(&"t_legacy".to_string()), "{tables:?}");
        drop(p);
        drop(s);
        let s = DedupStore::open("t_legacy", Duration::from_secs(3600), 100, Some(dir.path())).unwrap();
        assert!(s.seen("evt_live"), "still there after the migration");
    }
}
