//! The embedded bus: a durable single-node log in one redb file.
//!
//! * Publishes go to one writer thread that drains every waiting request into
//!   a single write transaction and commits it with fsync
//!   (`Durability::Immediate`): group commit. A publish resolves only after
//!   its transaction committed, so an acknowledged event survives `kill -9`.
//! * Each topic is one table keyed by a gap-free sequence number, which is the
//!   message offset (partition 0: one log, totally ordered).
//! * Records are stored in chunks of ~30 KiB, each one LZ4 block by default
//!   (`bus.embedded.compression`), so the writer passes the kernel a fraction
//!   of the bytes.
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
use crate::config::{EmbeddedConfig, LogCompression};
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

/// Records are stored in chunks: one redb value holds consecutive records
/// of one commit, keyed by the offset of its first record (record `i` of a
/// chunk has offset `key + i`). One B-tree entry per record made redb split
/// leaves half full and rewrite the right edge of the tree on every commit;
/// chunks cut the entries ~50-fold.
///
/// Chunk layout: appended-at millis with [`CHUNK_FLAG`] set (u64 LE), record
/// count (u32 LE), then per record key length (u32 LE), payload length
/// (u32 LE), key, payload. A value without the flag is the layout before
/// chunks, one record: millis (u64 LE), key length (u32 LE), key, payload;
/// logs written by older versions are read as they are.
///
/// A compressed chunk also has [`LZ4_FLAG`] set; after the record count come
/// the length of the records' bytes (u32 LE) and those bytes as one LZ4 block.
/// A chunk LZ4 does not shrink is stored plain.
const CHUNK_FLAG: u64 = 1 << 63;
const LZ4_FLAG: u64 = 1 << 62;
const FLAGS: u64 = CHUNK_FLAG | LZ4_FLAG;

/// A chunk is closed once it holds this many bytes (a record larger than
/// this is a chunk of its own). Sized so a plain chunk and redb's page
/// header fit one 32 KiB page order with little left over; the limit is on
/// the bytes before compression.
const CHUNK_BYTES: usize = 30 * 1024;

const CHUNK_HEADER: usize = 12;

fn record_len(r: &Record) -> usize {
    8 + r.key.len() + r.payload.len()
}

const LZ4_HEADER: usize = CHUNK_HEADER + 4;

/// Write one chunk of `records` into `out` (exactly `CHUNK_HEADER` + the sum
/// of [`record_len`] bytes).
fn encode_chunk(appended_ms: u64, records: &[&Record], out: &mut [u8]) {
    out[..8].copy_from_slice(&(appended_ms | CHUNK_FLAG).to_le_bytes());
    out[8..12].copy_from_slice(&(records.len() as u32).to_le_bytes());
    let mut at = CHUNK_HEADER;
    for r in records {
        out[at..at + 4].copy_from_slice(&(r.key.len() as u32).to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&(r.payload.len() as u32).to_le_bytes());
        at += 8;
        out[at..at + r.key.len()].copy_from_slice(&r.key);
        at += r.key.len();
        out[at..at + r.payload.len()].copy_from_slice(&r.payload);
        at += r.payload.len();
    }
    debug_assert_eq!(at, out.len());
}

/// A stored value's records (key, payload).
struct Chunk<'a> {
    count: u32,
    body: Body<'a>,
}

enum Body<'a> {
    Chunk(&'a [u8]),
    Single(&'a [u8], &'a [u8]),
}

fn u32_at(raw: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(raw.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// Compress the plain chunk `plain` (as [`encode_chunk`] wrote it) into
/// `out`, which is reused from chunk to chunk: the compressed value is
/// `out[..n]`; `None` when it would not be smaller than `plain`.
fn compress_chunk(plain: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let body = &plain[CHUNK_HEADER..];
    let room = LZ4_HEADER + lz4_flex::block::get_maximum_output_size(body.len());
    if out.len() < room {
        out.resize(room, 0);
    }
    let n = LZ4_HEADER + lz4_flex::block::compress_into(body, &mut out[LZ4_HEADER..]).ok()?;
    if n >= plain.len() {
        return None;
    }
    let head = u64::from_le_bytes(plain[..8].try_into().expect("8 bytes")) | LZ4_FLAG;
    out[..8].copy_from_slice(&head.to_le_bytes());
    out[8..12].copy_from_slice(&plain[8..12]);
    out[12..16].copy_from_slice(&(body.len() as u32).to_le_bytes());
    Some(n)
}

/// When a stored value was appended and how many records it holds, without
/// decompressing it.
fn chunk_head(raw: &[u8]) -> Option<(u64, u32)> {
    let head = u64::from_le_bytes(raw.get(0..8)?.try_into().ok()?);
    if head & CHUNK_FLAG == 0 {
        return Some((head, 1));
    }
    Some((head & !FLAGS, u32_at(raw, 8)? as u32))
}

/// An LZ4 block expands at most ~255-fold; a length field claiming more is
/// damage, not a reason to allocate it.
const LZ4_MAX_RATIO: usize = 255;

impl<'a> Chunk<'a> {
    /// Read a stored value; a compressed chunk is decompressed into
    /// `scratch`. `None` for a value too short or a block that does not
    /// decompress to its stated length.
    fn decode(raw: &'a [u8], scratch: &'a mut Vec<u8>) -> Option<Chunk<'a>> {
        let (_, count) = chunk_head(raw)?;
        let head = u64::from_le_bytes(raw[..8].try_into().ok()?);
        if head & CHUNK_FLAG == 0 {
            let klen = u32_at(raw, 8)?;
            let key = raw.get(12..12 + klen)?;
            let payload = raw.get(12 + klen..)?;
            return Some(Chunk { count, body: Body::Single(key, payload) });
        }
        if head & LZ4_FLAG == 0 {
            return Some(Chunk { count, body: Body::Chunk(raw.get(CHUNK_HEADER..)?) });
        }
        let len = u32_at(raw, CHUNK_HEADER)?;
        let block = raw.get(LZ4_HEADER..)?;
        if len > block.len().saturating_mul(LZ4_MAX_RATIO) {
            return None;
        }
        if scratch.len() < len {
            scratch.resize(len, 0);
        }
        let out: &'a mut [u8] = &mut scratch[..len];
        match lz4_flex::block::decompress_into(block, out) {
            Ok(n) if n == len => Some(Chunk { count, body: Body::Chunk(out) }),
            _ => None,
        }
    }

    /// The records in order; `None` for a record the value is too short for.
    fn records(&self) -> impl Iterator<Item = Option<(&'a [u8], &'a [u8])>> + '_ {
        let (single, mut rest) = match self.body {
            Body::Single(k, p) => (Some(Some((k, p))), None),
            Body::Chunk(b) => (None, Some(b)),
        };
        let chunked = (0..self.count).map_while(move |_| {
            // After a damaged record `rest` stays empty: one `None`, then the end.
            let (key, payload, tail) = match split_record(rest.take()?) {
                Some(r) => r,
                None => return Some(None),
            };
            rest = Some(tail);
            Some(Some((key, payload)))
        });
        single.into_iter().chain(chunked)
    }
}

/// The first record of a chunk's body: key, payload and what follows.
fn split_record(b: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (klen, plen) = (u32_at(b, 0)?, u32_at(b, 4)?);
    let key = b.get(8..8 + klen)?;
    let payload = b.get(8 + klen..8 + klen + plen)?;
    Some((key, payload, &b[8 + klen + plen..]))
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
/// gigabyte under load; the log is written once and read once, soon after.
/// A tenth of it is redb's write buffer, smaller than a commit group, so a
/// group's pages are written out before the leaf splits copy them: about
/// twice the chunk bytes reach the page cache. 64 MiB halved those writes
/// without changing the rate and held 80–120 MB more (BENCHMARKS.md,
/// "Records at their exact length"); compressing the chunks cut the bytes
/// written per event about five-fold instead ("LZ4-compressed log chunks").
pub const CACHE_BYTES: usize = 8 << 20;

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
    /// Returns how many records were deleted.
    pub fn enforce_retention(&self) -> Result<u64, BusError> {
        self.inner.enforce_retention().map(|r| r.deleted)
    }
}

/// Create the tables when missing and return the next sequence number of
/// each topic.
fn next_sequences(db: &Database) -> Result<[u64; 2], redb::Error> {
    let txn = db.begin_write()?;
    let mut next = [0u64; 2];
    for topic in [Topic::Events, Topic::DeadLetters] {
        let t = txn.open_table(table(topic))?;
        next[topic_index(topic)] = match t.last()? {
            Some((k, v)) => k.value() + chunk_head(v.value()).map_or(1, |(_, count)| u64::from(count)),
            None => 0,
        };
    }
    txn.open_table(META)?;
    txn.commit()?;
    Ok(next)
}

fn writer_loop(inner: std::sync::Weak<Inner>, mut rx: mpsc::Receiver<WriteRequest>, mut next: [u64; 2]) {
    let mut group: Vec<WriteRequest> = Vec::new();
    let mut bufs = ChunkBufs::default();
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
            inner.store.check(commit_group(&db, &group, &mut next, inner.cfg.compression, &mut bufs))
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

/// The writer's chunk buffers, kept from one commit to the next.
#[derive(Default)]
struct ChunkBufs {
    plain: Vec<u8>,
    packed: Vec<u8>,
}

/// What the writer's buffers keep between commits: a chunk's worth. A
/// record larger than a chunk grows them for its commit only.
const CHUNK_BUFS_KEPT: usize = 2 * CHUNK_BYTES;

impl ChunkBufs {
    fn trim(&mut self) {
        for b in [&mut self.plain, &mut self.packed] {
            if b.capacity() > CHUNK_BUFS_KEPT {
                *b = Vec::new();
            }
        }
    }
}

/// The buffers lent to one commit; trims them to a chunk's worth when the
/// commit returns, whether it succeeded or failed.
struct TrimAfterCommit<'a>(&'a mut ChunkBufs);

impl Drop for TrimAfterCommit<'_> {
    fn drop(&mut self) {
        self.0.trim();
    }
}

/// One write transaction for a whole group; returns the bytes added to the
/// events table (as stored, after compression). On failure nothing is
/// committed and `next` is unchanged. Either way the buffers are trimmed to
/// a chunk's worth.
fn commit_group(
    db: &Database,
    group: &[WriteRequest],
    next: &mut [u64; 2],
    compression: LogCompression,
    bufs: &mut ChunkBufs,
) -> Result<u64, redb::Error> {
    let bufs = TrimAfterCommit(bufs);
    let ChunkBufs { plain, packed } = &mut *bufs.0;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate);
    let ts = now_ms();
    let mut seq = *next;
    let mut added = [0u64; 2];
    {
        let mut tables = [txn.open_table(EVENTS)?, txn.open_table(DEAD_LETTERS)?];
        let mut chunk: Vec<&Record> = Vec::new();
        for topic in [Topic::Events, Topic::DeadLetters] {
            let i = topic_index(topic);
            let mut records = group.iter().filter(|r| r.topic == topic).flat_map(|r| &r.records).peekable();
            while records.peek().is_some() {
                chunk.clear();
                let mut len = CHUNK_HEADER;
                while let Some(r) = records.next_if(|r| chunk.is_empty() || len + record_len(r) <= CHUNK_BYTES) {
                    len += record_len(r);
                    chunk.push(r);
                }
                let too_large = || redb::StorageError::ValueTooLarge(len);
                let stored_len = if compression == LogCompression::Lz4 {
                    // Both buffers only grow: a chunk uses their first bytes.
                    if plain.len() < len {
                        plain.resize(len, 0);
                    }
                    let plain = &mut plain[..len];
                    encode_chunk(ts, &chunk, plain);
                    let value = match compress_chunk(plain, packed) {
                        Some(n) => &packed[..n],
                        None => &plain[..],
                    };
                    tables[i].insert(seq[i], value)?;
                    value.len()
                } else {
                    // Plain: encoded straight into redb's reserved slot.
                    let mut slot = tables[i].insert_reserve(seq[i], u32::try_from(len).map_err(|_| too_large())?)?;
                    encode_chunk(ts, &chunk, slot.as_mut());
                    len
                };
                added[i] += stored_len as u64;
                seq[i] += chunk.len() as u64;
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

/// Bytes one retention transaction deletes (about): a backlog of gigabytes
/// is deleted in several transactions, yielding in between, so the writer's
/// group commits (which wait for redb's write lock) go on instead of
/// stalling for the whole deletion. `examples/retention_latency.rs`: the
/// slowest publish during a 1–2 GB deletion 584–908 ms in one transaction,
/// 742–760 ms in steps without the yield, 83–189 ms with it.
const RETENTION_STEP_BYTES: u64 = 64 << 20;

fn retention_loop(inner: std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(Duration::from_secs(5));
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.enforce_retention() {
            tracing::warn!(error = %e, "embedded log retention failed");
        }
    }
}

/// What one retention pass deleted: records, and of those how many the
/// forwarder had not acknowledged yet.
#[derive(Debug, PartialEq, Eq)]
struct Retained {
    deleted: u64,
    unacked: u64,
}

impl Inner {
    /// Delete the oldest event chunks past the size or age bound, at most
    /// [`RETENTION_STEP_BYTES`] per transaction.
    fn enforce_retention(&self) -> Result<Retained, BusError> {
        self.enforce_retention_by(RETENTION_STEP_BYTES)
    }

    fn enforce_retention_by(&self, step_bytes: u64) -> Result<Retained, BusError> {
        let oldest_kept = now_ms().saturating_sub(self.cfg.retention_max_age_secs.saturating_mul(1000));
        let (mut deleted, mut unacked, mut freed) = (0, 0, 0);
        loop {
            let (step, step_freed) = self.retention_step(oldest_kept, step_bytes)?;
            deleted += step.deleted;
            unacked += step.unacked;
            freed += step_freed;
            if step_freed < step_bytes {
                break;
            }
            // Let the writer's waiting commit take the write lock first.
            std::thread::sleep(Duration::from_millis(1));
        }
        if deleted == 0 {
            return Ok(Retained { deleted, unacked });
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
        Ok(Retained { deleted, unacked })
    }

    /// One retention transaction of about `step_bytes`: what it deleted and
    /// how many bytes that freed.
    fn retention_step(&self, oldest_kept: u64, step_bytes: u64) -> Result<(Retained, u64), BusError> {
        let max_bytes = self.cfg.retention_max_bytes;
        let db = self.store.db()?;
        self.store.check((|| -> Result<(Retained, u64), redb::Error> {
            let (mut deleted, mut unacked, mut freed) = (0u64, 0u64, 0u64);
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                let position = meta.get(position_key(Topic::Events))?.map(|g| g.value()).unwrap_or(0);
                let mut bytes = meta.get(bytes_key(Topic::Events))?.map(|g| g.value()).unwrap_or(0);
                let mut events = txn.open_table(EVENTS)?;
                loop {
                    let Some((seq, size, ts, count)) = events.first()?.map(|(k, v)| {
                        let (ts, count) = chunk_head(v.value()).map_or((0, 1), |(ts, n)| (ts, u64::from(n)));
                        (k.value(), v.value().len() as u64, ts, count)
                    }) else {
                        break;
                    };
                    if (bytes <= max_bytes && ts >= oldest_kept) || freed >= step_bytes {
                        break;
                    }
                    events.remove(seq)?;
                    bytes = bytes.saturating_sub(size);
                    freed += size;
                    deleted += count;
                    // Records of this chunk at or after the stored position.
                    unacked += (seq + count).saturating_sub(seq.max(position));
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
            Ok((Retained { deleted, unacked }, freed))
        })())
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
    /// Up to `max` records from `next_read` on (the chunk holding
    /// `next_read` is read from the record at that offset).
    fn read(&self, max: usize) -> Result<Vec<Message>, BusError> {
        let db = self.store.db()?;
        let from = self.next_read;
        let mut corrupt = None;
        let out = self.store.check((|| -> Result<Vec<Message>, redb::Error> {
            let txn = db.begin_read()?;
            let t = txn.open_table(table(self.topic))?;
            let start = t.range(..=from)?.next_back().transpose()?.map_or(from, |(k, _)| k.value());
            let mut out = Vec::new();
            let mut scratch = Vec::new();
            'chunks: for item in t.range(start..)? {
                let (k, v) = item?;
                let Some(chunk) = Chunk::decode(v.value(), &mut scratch) else {
                    corrupt = Some(k.value());
                    break;
                };
                for (offset, record) in (k.value()..).zip(chunk.records()) {
                    if out.len() >= max {
                        break 'chunks;
                    }
                    let Some((key, payload)) = record else {
                        corrupt = Some(k.value());
                        break 'chunks;
                    };
                    if offset >= from {
                        out.push(Message {
                            position: Position { partition: 0, offset: offset as i64 },
                            key: key.to_vec(),
                            payload: payload.to_vec(),
                        });
                    }
                }
            }
            Ok(out)
        })())?;
        match corrupt {
            // What came before the damage is delivered; the damage stops the
            // reader rather than being skipped silently.
            Some(at) if out.is_empty() => Err(BusError::Fatal(format!("corrupt record chunk at offset {at}"))),
            _ => Ok(out),
        }
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

    fn rec(key: &[u8], payload: &[u8]) -> Record {
        Record { key: key.to_vec(), payload: payload.to_vec() }
    }

    fn encode(appended_ms: u64, records: &[Record]) -> Vec<u8> {
        let refs: Vec<&Record> = records.iter().collect();
        let mut v = vec![0; CHUNK_HEADER + records.iter().map(record_len).sum::<usize>()];
        encode_chunk(appended_ms, &refs, &mut v);
        v
    }

    #[test]
    fn chunk_layout_round_trips_and_refuses_short_values() {
        let records = [rec(b"k1", b"{\"a\":1}"), rec(b"", b""), rec(b"key-3", b"x")];
        let raw = encode(42, &records);
        assert_eq!(chunk_head(&raw), Some((42, 3)));
        let mut scratch = Vec::new();
        let chunk = Chunk::decode(&raw, &mut scratch).unwrap();
        let got: Vec<_> = chunk.records().collect();
        assert_eq!(
            got,
            vec![Some((&b"k1"[..], &b"{\"a\":1}"[..])), Some((&b""[..], &b""[..])), Some((&b"key-3"[..], &b"x"[..]))]
        );
        // A value cut short yields the records before the cut, then None.
        let cut = Chunk::decode(&raw[..raw.len() - 1], &mut scratch).unwrap();
        let got: Vec<_> = cut.records().collect();
        assert_eq!(got.len(), 3);
        assert!(got[2].is_none() && got[1].is_some());
        assert!(Chunk::decode(&raw[..5], &mut scratch).is_none());
    }

    #[test]
    fn compressed_chunks_round_trip_and_damage_is_refused() {
        let records: Vec<Record> =
            (0..40u8).map(|i| rec(&[b'k', i], format!("{{\"event\":\"signup\",\"n\":{i}}}").as_bytes())).collect();
        let plain = encode(7, &records);
        // A buffer left longer by an earlier chunk: only its first n bytes count.
        let mut out = vec![0xaa; 4 * plain.len()];
        let n = compress_chunk(&plain, &mut out).expect("repetitive JSON shrinks");
        let packed = out[..n].to_vec();
        assert!(packed.len() < plain.len() / 2, "{} of {} bytes", packed.len(), plain.len());
        assert_eq!(chunk_head(&packed), Some((7, 40)));
        // A scratch buffer longer than the chunk, as the previous one left it.
        let mut scratch = vec![0x55; 4 * plain.len()];
        let got: Vec<_> = Chunk::decode(&packed, &mut scratch).unwrap().records().collect();
        let want: Vec<_> = records.iter().map(|r| Some((&r.key[..], &r.payload[..]))).collect();
        assert_eq!(got, want);
        // A damaged block, a cut one, or a length field claiming more than
        // LZ4 can expand to, reads as damage rather than as records.
        let mut bad = packed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        bad[LZ4_HEADER] ^= 0xff;
        assert!(Chunk::decode(&bad, &mut scratch).is_none());
        assert!(Chunk::decode(&packed[..packed.len() - 3], &mut scratch).is_none());
        let mut huge = packed.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Chunk::decode(&huge, &mut scratch).is_none());
        // Bytes LZ4 cannot shrink stay plain.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert_eq!(compress_chunk(&encode(7, &[rec(b"n", &noise)]), &mut out), None);
    }

    #[test]
    fn values_written_before_chunks_read_as_one_record() {
        let mut old = 42u64.to_le_bytes().to_vec();
        old.extend_from_slice(&2u32.to_le_bytes());
        old.extend_from_slice(b"k1{\"a\":1}");
        assert_eq!(chunk_head(&old), Some((42, 1)));
        let mut scratch = Vec::new();
        let chunk = Chunk::decode(&old, &mut scratch).unwrap();
        assert_eq!(chunk.records().collect::<Vec<_>>(), vec![Some((&b"k1"[..], &b"{\"a\":1}"[..]))]);
    }

    /// Offsets stay one per record across chunks, commits and reopening; a
    /// reader positioned inside a chunk gets the records from there on; a
    /// log holding values in the old one-record layout continues after them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn offsets_are_per_record_across_chunks_and_old_values() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Two records as an older Sluice stored them.
            let db = open_db(&dir.path().join("log.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(EVENTS).unwrap();
                for (i, key) in [b"old-0", b"old-1"].iter().enumerate() {
                    let mut v = now_ms().to_le_bytes().to_vec();
                    v.extend_from_slice(&5u32.to_le_bytes());
                    v.extend_from_slice(*key);
                    v.extend_from_slice(b"{}");
                    t.insert(i as u64, v.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let big = vec![b'x'; CHUNK_BYTES / 3];
        let expected: Vec<Vec<u8>> = {
            let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
            // Seven records of a third of a chunk each: three chunks in one commit.
            let recs: Vec<Record> = (0..7u8).map(|i| rec(&[b'n', i], &big)).collect();
            log.publish(Topic::Events, recs).await.unwrap();
            log.publish(Topic::Events, vec![rec(b"last", b"1")]).await.unwrap();
            let mut keys = vec![b"old-0".to_vec(), b"old-1".to_vec()];
            keys.extend((0..7u8).map(|i| vec![b'n', i]));
            keys.push(b"last".to_vec());
            keys
        };
        let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
        log.publish(Topic::Events, vec![rec(b"after-reopen", b"2")]).await.unwrap();
        let mut sub = log.open(Topic::Events).await.unwrap();
        let mut got = Vec::new();
        // Small polls end inside chunks; each resumes at the next record.
        while got.len() < 11 {
            let msgs = sub.poll(2, Duration::from_secs(1)).await.unwrap();
            assert!(!msgs.is_empty() && msgs.len() <= 2);
            got.extend(msgs);
        }
        let offsets: Vec<i64> = got.iter().map(|m| m.position.offset).collect();
        assert_eq!(offsets, (0..11).collect::<Vec<i64>>());
        let keys: Vec<Vec<u8>> = got.iter().map(|m| m.key.clone()).collect();
        assert_eq!(&keys[..10], &expected[..]);
        assert_eq!(keys[10], b"after-reopen");
        assert_eq!(got[3].payload, big);
        // A subscriber reopened after acking up to inside a chunk resumes there.
        sub.ack(&got[..4].iter().map(|m| m.position).collect::<Vec<_>>()).await.unwrap();
        drop(sub);
        let mut again = log.open(Topic::Events).await.unwrap();
        let first = again.poll(1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(first[0].position.offset, 4);
        assert_eq!(first[0].key, vec![b'n', 2]);
    }

    /// A record larger than a chunk grows the writer's buffers for its
    /// commit only; chunk-sized commits keep theirs.
    #[test]
    fn writer_buffers_keep_a_chunks_worth_after_a_large_record() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir.path().join("log.redb")).unwrap();
        let mut next = next_sequences(&db).unwrap();
        let mut bufs = ChunkBufs::default();
        let group = |payload: Vec<u8>| {
            let (done, _) = oneshot::channel();
            vec![WriteRequest { topic: Topic::Events, records: vec![rec(b"k", &payload)], done }]
        };
        commit_group(&db, &group(vec![b'{'; 8 * CHUNK_BYTES]), &mut next, LogCompression::Lz4, &mut bufs).unwrap();
        assert_eq!(next[0], 1);
        assert!(bufs.plain.capacity() <= CHUNK_BUFS_KEPT && bufs.packed.capacity() <= CHUNK_BUFS_KEPT);
        commit_group(&db, &group(vec![b'{'; CHUNK_BYTES / 2]), &mut next, LogCompression::Lz4, &mut bufs).unwrap();
        assert!(bufs.plain.capacity() >= CHUNK_BYTES / 2 && bufs.packed.capacity() > 0, "kept for the next commit");
        // A short chunk after a longer one in the same buffers stores only its own bytes.
        commit_group(&db, &group(b"{}".to_vec()), &mut next, LogCompression::Lz4, &mut bufs).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(EVENTS).unwrap();
        let mut scratch = Vec::new();
        let lens: Vec<usize> = table
            .iter()
            .unwrap()
            .flat_map(|row| {
                let (_, v) = row.unwrap();
                let chunk = Chunk::decode(v.value(), &mut scratch).expect("an intact chunk");
                chunk.records().map(|r| r.expect("an intact record").1.len()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(lens, [8 * CHUNK_BYTES, CHUNK_BYTES / 2, 2]);
    }

    /// A log written with `compression: none` and then with `lz4` (or the
    /// other way round) reads back whole, in order; the stored size is the
    /// compressed one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_and_compressed_chunks_read_back_in_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let batch = |tag: u8| -> Vec<Record> {
            (0..50u8)
                .map(|i| rec(&[tag, i], format!("{{\"event\":\"page\",\"tag\":{tag},\"i\":{i}}}").as_bytes()))
                .collect()
        };
        let mut sizes = Vec::new();
        for (tag, compression) in [(1, LogCompression::None), (2, LogCompression::Lz4), (3, LogCompression::None)] {
            let log =
                EmbeddedLog::open(dir.path(), EmbeddedConfig { compression, ..EmbeddedConfig::default() }).unwrap();
            let before = log.inner.stored_bytes.load(Ordering::Relaxed);
            log.publish(Topic::Events, batch(tag)).await.unwrap();
            sizes.push(log.inner.stored_bytes.load(Ordering::Relaxed) - before);
        }
        assert!(sizes[1] * 2 < sizes[0] && sizes[0] == sizes[2], "stored sizes {sizes:?}");
        let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
        let mut sub = log.open(Topic::Events).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 150 {
            let msgs = sub.poll(64, Duration::from_secs(1)).await.unwrap();
            assert!(!msgs.is_empty());
            got.extend(msgs);
        }
        let want: Vec<Record> = (1..=3).flat_map(batch).collect();
        assert_eq!(got.iter().map(|m| m.position.offset).collect::<Vec<_>>(), (0..150).collect::<Vec<i64>>());
        assert!(got.iter().zip(&want).all(|(m, r)| m.key == r.key && m.payload == r.payload));
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

    /// A chunk is deleted whole; of its records only those at or after the
    /// acknowledged position count as undelivered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_of_a_chunk_counts_only_its_unacknowledged_records() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EmbeddedConfig { retention_max_bytes: 0, ..EmbeddedConfig::default() };
        let log = EmbeddedLog::open(dir.path(), cfg).unwrap();
        let recs: Vec<Record> = (0..5).map(|i| rec(&[i], &[i; 10])).collect();
        log.publish(Topic::Events, recs).await.unwrap();
        let mut sub = log.open(Topic::Events).await.unwrap();
        let got = sub.poll(2, Duration::from_secs(1)).await.unwrap();
        sub.ack(&got.iter().map(|m| m.position).collect::<Vec<_>>()).await.unwrap();
        assert_eq!(log.inner.enforce_retention().unwrap(), Retained { deleted: 5, unacked: 3 });
    }

    /// A deletion larger than one step takes several transactions and ends
    /// where one would have: at the size bound, with the stored size right.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_deletes_in_steps_down_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
        // Four commits, four chunks of two records each.
        for i in 0..4u8 {
            log.publish(Topic::Events, vec![rec(&[i], &[i; 100]), rec(&[i], &[i; 100])]).await.unwrap();
        }
        let chunk_bytes = {
            let db = log.inner.store.db().unwrap();
            let txn = db.begin_read().unwrap();
            let last = txn.open_table(EVENTS).unwrap().last().unwrap().map(|(_, v)| v.value().len() as u64);
            last.unwrap()
        };
        // Keep the newest chunk only, deleting one chunk per transaction.
        let cfg = EmbeddedConfig { retention_max_bytes: chunk_bytes, ..EmbeddedConfig::default() };
        drop(log);
        let log = EmbeddedLog::open(dir.path(), cfg).unwrap();
        assert_eq!(log.inner.enforce_retention_by(1).unwrap(), Retained { deleted: 6, unacked: 6 });
        assert_eq!(log.inner.stored_bytes.load(Ordering::Relaxed), chunk_bytes);
        assert_eq!(log.inner.enforce_retention_by(1).unwrap(), Retained { deleted: 0, unacked: 0 });
        let mut sub = log.open(Topic::Events).await.unwrap();
        let got = sub.poll(10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got.iter().map(|m| m.position.offset).collect::<Vec<_>>(), vec![6, 7]);
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
