//! The embedded bus: a durable single-node log in one redb file.
//!
//! * Publishes go to one writer thread that drains every waiting request into
//!   a single write transaction and commits it with fsync
//!   (`Durability::Immediate`): group commit. A publish resolves only after
//!   its transaction committed, so an acknowledged event survives `kill -9`.
//! * Each topic is one table keyed by a gap-free sequence number, which is the
//!   message offset (partition 0: one log, totally ordered).
//! * The consumer position is stored in the same file on every ack that moves
//!   it, so a restarted forwarder resumes after the last acknowledged message.
//! * Retention deletes the oldest records past a size or age bound; records
//!   dropped before the forwarder acknowledged them are counted.
//!
//! * An I/O error (disk full) makes redb refuse every later operation until
//!   the file is closed and reopened; `Store` does that, at most once a
//!   second, so publishing resumes by itself once space returns. Until then
//!   publishes fail (ingress answers 503) and `/readyz` reports the log.
//!
//! One process owns the file (redb locks it): the embedded bus serves
//! `sluice serve`; split roles need Kafka.

// redb's error type is large (160 bytes); it only travels on the failure path
// from one redb call to `Store::check`.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

use super::{AckTracker, BusError, Message, Position, Publisher, Record, Subscriber, SubscriberOpener, Topic};
use crate::config::EmbeddedConfig;
use crate::metrics as m;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Consumer positions and byte counters.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn table(topic: Topic) -> TableDefinition<'static, u64, &'static [u8]> {
    match topic {
        Topic::Events => EVENTS,
        Topic::DeadLetters => DEAD_LETTERS,
    }
}

fn position_key(topic: Topic) -> &'static str {
    match topic {
        Topic::Events => "position/events",
        Topic::DeadLetters => "position/dead_letters",
    }
}

fn bytes_key(topic: Topic) -> &'static str {
    match topic {
        Topic::Events => "bytes/events",
        Topic::DeadLetters => "bytes/dead_letters",
    }
}

/// Stored record layout: appended-at millis (u64 LE), key length (u32 LE),
/// key, payload.
#[cfg(test)]
fn encode(appended_ms: u64, r: &Record) -> Vec<u8> {
    let mut v = vec![0; encoded_len(r)];
    encode_into(appended_ms, r, &mut v);
    v
}

fn encoded_len(r: &Record) -> usize {
    12 + r.key.len() + r.payload.len()
}

/// Write the stored form into `out` (exactly [`encoded_len`] bytes; the
/// writer hands redb's reserved slot, so a record is copied once).
fn encode_into(appended_ms: u64, r: &Record, out: &mut [u8]) {
    let (ts, rest) = out.split_at_mut(8);
    let (klen, rest) = rest.split_at_mut(4);
    let (key, payload) = rest.split_at_mut(r.key.len());
    ts.copy_from_slice(&appended_ms.to_le_bytes());
    klen.copy_from_slice(&(r.key.len() as u32).to_le_bytes());
    key.copy_from_slice(&r.key);
    payload.copy_from_slice(&r.payload);
}

fn decode(raw: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let ts = u64::from_le_bytes(raw.get(0..8)?.try_into().ok()?);
    let klen = u32::from_le_bytes(raw.get(8..12)?.try_into().ok()?) as usize;
    let key = raw.get(12..12 + klen)?;
    let payload = raw.get(12 + klen..)?;
    Some((ts, key, payload))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn storage_err(e: impl std::fmt::Display) -> BusError {
    // Disk full, I/O errors: the client should retry later.
    BusError::Unavailable(format!("embedded log: {e}"))
}

/// The open redb file, reopened after an I/O error.
///
/// redb answers `PreviousIo` to every operation after one failed write (disk
/// full, EIO) until the database is closed and opened again. Every user takes
/// the handle through [`Store::db`] for the length of one operation and
/// reports failures through [`Store::check`]; the next `db()` after a failure
/// reopens the file (redb repairs it on open), at most once per
/// [`REOPEN_INTERVAL`], so a full disk does not turn every request into a
/// repair.
pub(crate) struct Store {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
    poisoned: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
    /// Bumped on every reopen, so the writer re-reads its sequence numbers.
    generation: AtomicU64,
}

const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// redb's page cache. Its default (1 GiB) let the process grow past a
/// gigabyte under load; the log is written once and read once, soon after,
/// so a small cache loses nothing.
pub const CACHE_BYTES: usize = 32 << 20;

fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new().set_cache_size(CACHE_BYTES).create(path)
}

impl Store {
    fn open(path: PathBuf) -> anyhow::Result<Store> {
        let db = open_db(&path).map_err(|e| anyhow::anyhow!("cannot open embedded log {}: {e}", path.display()))?;
        Ok(Store {
            path,
            db: RwLock::new(Some(Arc::new(db))),
            poisoned: AtomicBool::new(false),
            last_attempt: Mutex::new(None),
            generation: AtomicU64::new(0),
        })
    }

    /// The database for one operation; reopens it first after an I/O error.
    fn db(&self) -> Result<Arc<Database>, BusError> {
        if !self.poisoned.load(Ordering::Acquire) {
            if let Some(db) = self.db.read().unwrap_or_else(|p| p.into_inner()).clone() {
                return Ok(db);
            }
        }
        self.reopen()
    }

    /// Map a redb failure for the caller, remembering I/O errors.
    fn check<T, E: Into<redb::Error>>(&self, r: Result<T, E>) -> Result<T, BusError> {
        r.map_err(|e| {
            let e: redb::Error = e.into();
            if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
                self.poisoned.store(true, Ordering::Release);
            }
            storage_err(e)
        })
    }

    fn reopen(&self) -> Result<Arc<Database>, BusError> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if !self.poisoned.load(Ordering::Acquire) {
            if let Some(db) = slot.clone() {
                return Ok(db); // another caller reopened it meanwhile
            }
        }
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < REOPEN_INTERVAL) {
                return Err(BusError::Unavailable("embedded log: recovering from an I/O error".into()));
            }
            *last = Some(Instant::now());
        }
        if let Some(mut db) = slot.take() {
            // redb locks the file: the old handle must be gone before the new
            // open. Users hold it only for one short operation.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match Arc::try_unwrap(db) {
                    Ok(d) => {
                        drop(d);
                        break;
                    }
                    Err(still_shared) if Instant::now() < deadline => {
                        db = still_shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(still_shared) => {
                        *slot = Some(still_shared);
                        return Err(BusError::Unavailable("embedded log: busy, cannot reopen yet".into()));
                    }
                }
            }
        }
        match open_db(&self.path) {
            Ok(db) => {
                let db = Arc::new(db);
                *slot = Some(db.clone());
                self.poisoned.store(false, Ordering::Release);
                self.generation.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(path = %self.path.display(), "embedded log reopened after an I/O error");
                Ok(db)
            }
            Err(e) => Err(storage_err(format!("reopening after an I/O error: {e}"))),
        }
    }
}

struct WriteRequest {
    topic: Topic,
    records: Vec<Record>,
    done: oneshot::Sender<Result<(), BusError>>,
}

/// The embedded log; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    writer: mpsc::Sender<WriteRequest>,
    /// Next sequence number per topic, published to waiting subscribers.
    heads: [watch::Sender<u64>; 2],
    /// False after a failed commit until the next one succeeds (`/readyz`).
    healthy: AtomicBool,
    /// Approximate stored bytes of the events table, for the size metric.
    stored_bytes: AtomicU64,
    cfg: EmbeddedConfig,
}

fn topic_index(t: Topic) -> usize {
    match t {
        Topic::Events => 0,
        Topic::DeadLetters => 1,
    }
}

impl EmbeddedLog {
    /// Open (or create) the log in `dir`.
    pub fn open(dir: &Path, cfg: EmbeddedConfig) -> anyhow::Result<Arc<EmbeddedLog>> {
        std::fs::create_dir_all(dir)?;
        let store = Arc::new(Store::open(dir.join("log.redb"))?);
        let db = store.db()?;
        // Make sure the tables exist so readers never race their creation.
        let next = next_sequences(&db)?;
        let bytes = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            let bytes = meta.get(bytes_key(Topic::Events))?.map(|g| g.value()).unwrap_or(0);
            bytes
        };
        drop(db);

        let (tx, rx) = mpsc::channel::<WriteRequest>(cfg.max_commit_records.max(1) * 4);
        let heads = [watch::channel(next[0]).0, watch::channel(next[1]).0];
        let inner = Arc::new(Inner {
            store,
            writer: tx,
            heads,
            healthy: AtomicBool::new(true),
            stored_bytes: AtomicU64::new(bytes),
            cfg,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new().name("sluice-log-writer".into()).spawn(move || writer_loop(weak, rx, next))?;
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new().name("sluice-log-retention".into()).spawn(move || retention_loop(weak))?;
        m::embedded_log_bytes(bytes);
        Ok(Arc::new(EmbeddedLog { inner }))
    }

    /// Apply retention now (also runs every few seconds in the background).
    pub fn enforce_retention(&self) -> Result<u64, BusError> {
        self.inner.enforce_retention()
    }
}

/// Create the tables when missing and return the next sequence number of
/// each topic.
fn next_sequences(db: &Database) -> Result<[u64; 2], redb::Error> {
    let txn = db.begin_write()?;
    let mut next = [0u64; 2];
    for topic in [Topic::Events, Topic::DeadLetters] {
        let t = txn.open_table(table(topic))?;
        next[topic_index(topic)] = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(0);
    }
    txn.open_table(META)?;
    txn.commit()?;
    Ok(next)
}

fn writer_loop(inner: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<WriteRequest>, mut next: [u64; 2]) {
    let mut group: Vec<WriteRequest> = Vec::new();
    let mut generation = 0;
    while let Some(first) = rx.blocking_recv() {
        let Some(inner) = inner.upgrade() else { return };
        let max = inner.cfg.max_commit_records.max(1);
        let mut count = first.records.len();
        group.push(first);
        while count < max {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.records.len();
                    group.push(req);
                }
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let result = inner.store.db().and_then(|db| {
            // After a reopen the file is the truth: a commit that failed
            // half-way may or may not have landed.
            let current = inner.store.generation.load(Ordering::Acquire);
            if current != generation {
                next = inner.store.check(next_sequences(&db))?;
                generation = current;
            }
            inner.store.check(commit_group(&db, &group, &mut next))
        });
        m::embedded_commit(started.elapsed(), count);
        let outcome = match result {
            Ok(added) => {
                inner.healthy.store(true, Ordering::Relaxed);
                let total = inner.stored_bytes.fetch_add(added, Ordering::Relaxed) + added;
                m::embedded_log_bytes(total);
                for t in [Topic::Events, Topic::DeadLetters] {
                    inner.heads[topic_index(t)].send_replace(next[topic_index(t)]);
                }
                Ok(())
            }
            Err(e) => {
                inner.healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %e, "embedded log commit failed");
                Err(e.to_string())
            }
        };
        // Let go of the log before answering: once the last publish has its
        // answer and the caller drops the log, the file is closed (and its
        // lock released for the next process, e.g. `sluice dlq list`).
        drop(inner);
        for req in group.drain(..) {
            let _ = req.done.send(outcome.clone().map_err(BusError::Unavailable));
        }
    }
}

/// One write transaction for a whole group; returns the bytes added to the
/// events table. On failure nothing is committed and `next` is unchanged.
fn commit_group(db: &Database, group: &[WriteRequest], next: &mut [u64; 2]) -> Result<u64, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let ts = now_ms();
    let mut seq = *next;
    let mut added = [0u64; 2];
    {
        let mut tables = [txn.open_table(EVENTS)?, txn.open_table(DEAD_LETTERS)?];
        for req in group {
            let i = topic_index(req.topic);
            for r in &req.records {
                let len = encoded_len(r);
                let too_large = || redb::StorageError::ValueTooLarge(len);
                let mut slot = tables[i].insert_reserve(seq[i], u32::try_from(len).map_err(|_| too_large())?)?;
                encode_into(ts, r, slot.as_mut());
                added[i] += len as u64;
                seq[i] += 1;
            }
        }
        let mut meta = txn.open_table(META)?;
        for t in [Topic::Events, Topic::DeadLetters] {
            let i = topic_index(t);
            if added[i] > 0 {
                let cur = meta.get(bytes_key(t))?.map(|g| g.value()).unwrap_or(0);
                meta.insert(bytes_key(t), cur + added[i])?;
            }
        }
    }
    txn.commit()?;
    *next = seq;
    Ok(added[0])
}

fn retention_loop(inner: std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.enforce_retention() {
            tracing::warn!(error = %e, "embedded log retention failed");
        }
    }
}

impl Inner {
    /// Delete the oldest event records past the size or age bound. Returns
    /// how many were deleted.
    fn enforce_retention(&self) -> Result<u64, BusError> {
        let max_bytes = self.cfg.retention_max_bytes;
        let oldest_kept = now_ms().saturating_sub(self.cfg.retention_max_age_secs.saturating_mul(1000));
        let db = self.store.db()?;
        let (deleted, unacked, freed) = self.store.check((|| -> Result<(u64, u64, u64), redb::Error> {
            let (mut deleted, mut unacked, mut freed) = (0u64, 0u64, 0u64);
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                let position = meta.get(position_key(Topic::Events))?.map(|g| g.value()).unwrap_or(0);
                let mut bytes = meta.get(bytes_key(Topic::Events))?.map(|g| g.value()).unwrap_or(0);
                let mut events = txn.open_table(EVENTS)?;
                loop {
                    let Some((seq, size, ts)) = events
                        .first()?
                        .map(|(k, v)| (k.value(), v.value().len() as u64, decode(v.value()).map(|d| d.0).unwrap_or(0)))
                    else {
                        break;
                    };
                    if bytes <= max_bytes && ts >= oldest_kept {
                        break;
                    }
                    events.remove(seq)?;
                    bytes = bytes.saturating_sub(size);
                    freed += size;
                    deleted += 1;
                    if seq >= position {
                        unacked += 1;
                    }
                }
                if deleted > 0 {
                    meta.insert(bytes_key(Topic::Events), bytes)?;
                }
            }
            if deleted == 0 {
                txn.abort()?;
            } else {
                txn.commit()?;
            }
            Ok((deleted, unacked, freed))
        })())?;
        if deleted == 0 {
            return Ok(0);
        }
        let total =
            self.stored_bytes.fetch_sub(freed.min(self.stored_bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
        m::embedded_log_bytes(total.saturating_sub(freed));
        m::embedded_retention(deleted, unacked);
        if unacked > 0 {
            tracing::warn!(
                dropped = unacked,
                "embedded log retention deleted events the forwarder had not delivered yet"
            );
        }
        Ok(deleted)
    }
}

#[async_trait]
impl Publisher for EmbeddedLog {
    async fn publish(&self, topic: Topic, records: Vec<Record>) -> Result<(), BusError> {
        if records.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.inner
            .writer
            .send(WriteRequest { topic, records, done })
            .await
            .map_err(|_| BusError::Fatal("embedded log writer stopped".into()))?;
        wait.await.map_err(|_| BusError::Fatal("embedded log writer stopped".into()))?
    }

    async fn ready(&self) -> Result<(), BusError> {
        if self.inner.writer.is_closed() {
            return Err(BusError::Fatal("embedded log writer stopped".into()));
        }
        if self.inner.healthy.load(Ordering::Relaxed) {
            return Ok(());
        }
        // The last commit failed. Readiness must not wait for a publish to
        // find out that space returned: an unready pod gets no traffic.
        let inner = self.inner.clone();
        let probe = tokio::task::spawn_blocking(move || {
            let db = inner.store.db()?;
            inner.store.check((|| -> Result<(), redb::Error> {
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate);
                txn.open_table(META)?.insert("probe/ready", now_ms())?;
                txn.commit()?;
                Ok(())
            })())?;
            inner.healthy.store(true, Ordering::Relaxed);
            Ok::<(), BusError>(())
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))?;
        probe.map_err(|e| BusError::Unavailable(format!("last embedded log commit failed; probe: {e}")))
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), BusError> {
        // Every publish is committed before it resolves: nothing is buffered.
        Ok(())
    }
}

#[async_trait]
impl SubscriberOpener for EmbeddedLog {
    async fn open(&self, topic: Topic) -> Result<Box<dyn Subscriber>, BusError> {
        let store = self.inner.store.clone();
        let start = tokio::task::spawn_blocking(move || -> Result<u64, BusError> {
            let db = store.db()?;
            store.check((|| -> Result<u64, redb::Error> {
                let txn = db.begin_read()?;
                let meta = txn.open_table(META)?;
                let pos = meta.get(position_key(topic))?.map(|g| g.value()).unwrap_or(0);
                // Retention may have removed records before the stored position.
                let t = txn.open_table(table(topic))?;
                let first = t.first()?.map(|(k, _)| k.value()).unwrap_or(pos);
                Ok(pos.max(first))
            })())
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))??;
        Ok(Box::new(EmbeddedSubscriber {
            store: self.inner.store.clone(),
            topic,
            next_read: start,
            committed: start,
            tracker: AckTracker::default(),
            head: self.inner.heads[topic_index(topic)].subscribe(),
        }))
    }
}

/// Reads one topic of the embedded log for the (single) forwarder.
pub struct EmbeddedSubscriber {
    store: Arc<Store>,
    topic: Topic,
    next_read: u64,
    /// The position stored durably in the file.
    committed: u64,
    tracker: AckTracker,
    head: watch::Receiver<u64>,
}

impl EmbeddedSubscriber {
    fn read(&self, max: usize) -> Result<Vec<Message>, BusError> {
        let db = self.store.db()?;
        let raw = self.store.check((|| -> Result<Vec<(u64, Vec<u8>)>, redb::Error> {
            let txn = db.begin_read()?;
            let t = txn.open_table(table(self.topic))?;
            let mut out = Vec::new();
            for item in t.range(self.next_read..)?.take(max) {
                let (k, v) = item?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        })())?;
        raw.into_iter()
            .map(|(offset, v)| {
                let (_, key, payload) =
                    decode(&v).ok_or_else(|| BusError::Fatal(format!("corrupt record at offset {offset}")))?;
                Ok(Message {
                    position: Position { partition: 0, offset: offset as i64 },
                    key: key.to_vec(),
                    payload: payload.to_vec(),
                })
            })
            .collect()
    }

    /// The first offset still in the log, if any.
    fn first(&self) -> Result<Option<u64>, BusError> {
        let db = self.store.db()?;
        self.store.check((|| -> Result<Option<u64>, redb::Error> {
            let txn = db.begin_read()?;
            let t = txn.open_table(table(self.topic))?;
            let first = t.first()?.map(|(k, _)| k.value());
            Ok(first)
        })())
    }

    /// Store `pos` durably; on failure (disk full) the position stays where
    /// it was: a crash before the next successful store redelivers, which is
    /// the at-least-once contract, and the forwarder keeps delivering.
    async fn store_position(&mut self, pos: u64) {
        let store = self.store.clone();
        let topic = self.topic;
        let stored = tokio::task::spawn_blocking(move || {
            let db = store.db()?;
            store.check(store_position(&db, topic, pos))
        })
        .await
        .map_err(|e| BusError::Fatal(e.to_string()))
        .and_then(|r| r);
        match stored {
            Ok(()) => {
                self.committed = pos;
                m::consumer_lag(self.topic.as_str(), 0, self.lag());
            }
            Err(e) => tracing::warn!(error = %e, position = pos, "cannot store the consumer position; will retry"),
        }
    }

    /// Number of records after the committed position (consumer lag).
    fn lag(&self) -> u64 {
        self.head.borrow().saturating_sub(self.committed)
    }
}

fn store_position(db: &Database, topic: Topic, pos: u64) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(position_key(topic), pos)?;
    }
    txn.commit()?;
    Ok(())
}

#[async_trait]
impl Subscriber for EmbeddedSubscriber {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if *self.head.borrow_and_update() > self.next_read {
                let msgs = self.read(max)?;
                if let Some(last) = msgs.last() {
                    self.next_read = last.position.offset as u64 + 1;
                    for msg in &msgs {
                        self.tracker.delivered(msg.position);
                    }
                    m::consumer_lag(self.topic.as_str(), 0, self.lag());
                    return Ok(msgs);
                }
                // Retention removed what we were about to read: skip ahead.
                let head = *self.head.borrow();
                self.next_read = self.first()?.unwrap_or(head).max(self.next_read);
                continue;
            }
            match tokio::time::timeout_at(deadline, self.head.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(BusError::Fatal("embedded log closed".into())),
                Err(_) => return Ok(Vec::new()),
            }
        }
    }

    async fn ack(&mut self, positions: &[Position]) -> Result<(), BusError> {
        for p in positions {
            self.tracker.ack(*p);
        }
        let next = self.tracker.committable().map(|(_, c)| c as u64).max().unwrap_or(self.committed);
        if next > self.committed {
            self.store_position(next).await;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        // Positions are stored on every ack that moves them; this retries one
        // whose store failed.
        let next = self.tracker.committable().map(|(_, c)| c as u64).max().unwrap_or(self.committed);
        if next > self.committed {
            self.store_position(next).await;
            if self.committed < next {
                return Err(BusError::Unavailable("cannot store the consumer position".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout_round_trips() {
        let r = Record { key: b"k1".to_vec(), payload: b"{\"a\":1}".to_vec() };
        let raw = encode(42, &r);
        let (ts, k, p) = decode(&raw).unwrap();
        assert_eq!((ts, k, p), (42, &b"k1"[..], &b"{\"a\":1}"[..]));
        assert!(decode(&raw[..5]).is_none());
    }

    /// The writer lets go of the log before answering a publish, so once the
    /// caller drops the log the file is closed and another opener (the next
    /// process: `sluice dlq list`) gets redb's lock at once. Racy by nature:
    /// without that ordering this fails on some iterations, not all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_log_after_a_publish_releases_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50u8 {
            let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default())
                .unwrap_or_else(|e| panic!("open #{i} found the file still held: {e}"));
            log.publish(Topic::DeadLetters, vec![Record { key: vec![i], payload: vec![i] }]).await.unwrap();
            drop(log);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_counts_undelivered_drops() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EmbeddedConfig { retention_max_bytes: 0, ..EmbeddedConfig::default() };
        let log = EmbeddedLog::open(dir.path(), cfg).unwrap();
        let recs: Vec<Record> = (0..5).map(|i| Record { key: vec![i], payload: vec![i; 10] }).collect();
        log.publish(Topic::Events, recs).await.unwrap();
        assert_eq!(log.enforce_retention().unwrap(), 5, "size bound 0 deletes everything");
        let mut sub = log.open(Topic::Events).await.unwrap();
        assert!(sub.poll(10, Duration::from_millis(50)).await.unwrap().is_empty());
        // New records after retention are still delivered.
        log.publish(Topic::Events, vec![Record { key: vec![9], payload: vec![9] }]).await.unwrap();
        let got = sub.poll(10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].position.offset, 5);
    }
}
