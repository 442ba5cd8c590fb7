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
//!   Those writes are not fsync'd one by one: a background flush makes them
//!   durable every second, so a crash can forget up to a second of ids (the
//!   forwarder's envelope-id dedup is the second line).
//! * Across replicas each process has its own set: a redelivery that lands on
//!   another ingress replica is published again and then suppressed by the
//!   forwarder's envelope-id dedup (same id), within its window.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{Database, Durability, ReadableTable, TableDefinition};

/// id → expiry (ms since epoch), one table per store name.
type Table<'a> = TableDefinition<'a, &'static str, u64>;

/// redb wants one handle per file per process: stores opened on the same
/// directory share it.
fn shared_db(dir: &Path) -> anyhow::Result<Arc<Database>> {
    static OPEN: Mutex<Vec<(std::path::PathBuf, std::sync::Weak<Database>)>> = Mutex::new(Vec::new());
    std::fs::create_dir_all(dir)?;
    let path = dir.join("dedup.redb");
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|(_, w)| w.strong_count() > 0);
    if let Some(db) = open.iter().find(|(p, _)| *p == path).and_then(|(_, w)| w.upgrade()) {
        return Ok(db);
    }
    // A small page cache: the window is bounded and mostly in memory already.
    let db = Arc::new(redb::Builder::new().set_cache_size(8 << 20).create(&path)?);
    open.push((path, Arc::downgrade(&db)));
    let weak = Arc::downgrade(&db);
    std::thread::Builder::new().name("sluice-dedup-flush".into()).spawn(move || flush_loop(weak))?;
    Ok(db)
}

/// Make the unsynced commits durable once a second, and stop with the db.
fn flush_loop(db: std::sync::Weak<Database>) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(db) = db.upgrade() else { return };
        if let Ok(mut txn) = db.begin_write() {
            txn.set_durability(Durability::Immediate);
            let _ = txn.commit();
        }
    }
}

/// Ids are held in memory as 128-bit keyed digests, not strings, and the
/// per-process random keys leave nobody able to aim a collision. Memory per
/// id (the Amplitude window holds up to a million): a 20-byte map slot
/// (digest + expiry second) at most half empty, and 16 bytes of eviction
/// order, about 60 bytes. The map is split in [`SHARDS`] so that growing
/// it never holds two full-size tables at once (a million ids peaked at
/// ~115 MB in one map of 128-bit keys and millisecond expiries, ~60 MB so).
struct Memory {
    /// Per shard: digest → expiry, in whole seconds since the epoch,
    /// rounded up (an id may be remembered up to a second longer).
    expiry: Vec<HashMap<Digest, u32, BuildDigestHasher>>,
    /// Insertion order, for eviction beyond `max_entries`.
    order: VecDeque<Digest>,
    keys: (RandomState, RandomState),
}

type Digest = [u32; 4];

const SHARDS: usize = 16;

impl Memory {
    fn new() -> Memory {
        Memory {
            expiry: (0..SHARDS).map(|_| HashMap::default()).collect(),
            order: VecDeque::new(),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    fn digest(&self, id: &str) -> Digest {
        let (a, b) = (self.keys.0.hash_one(id), self.keys.1.hash_one(id));
        [a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32]
    }

    fn shard(&mut self, d: &Digest) -> &mut HashMap<Digest, u32, BuildDigestHasher> {
        &mut self.expiry[shard_of(d)]
    }

    fn expiry_of(&self, d: &Digest) -> Option<u32> {
        self.expiry[shard_of(d)].get(d).copied()
    }

    fn len(&self) -> usize {
        self.expiry.iter().map(HashMap::len).sum()
    }

    /// Insert or refresh; evict the oldest beyond `max`.
    fn insert(&mut self, d: Digest, exp_ms: u64, max: usize) {
        if self.shard(&d).insert(d, seconds_up(exp_ms)).is_none() {
            self.order.push_back(d);
        }
        while self.order.len() > max {
            if let Some(old) = self.order.pop_front() {
                self.shard(&old).remove(&old);
            }
        }
    }
}

fn shard_of(d: &Digest) -> usize {
    d[3] as usize % SHARDS
}

/// `ms` as whole seconds, rounded up.
fn seconds_up(ms: u64) -> u32 {
    u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
}

/// Digests are uniformly random already (keyed): the map hashes them by
/// folding their bytes instead of running SipHash over them again.
#[derive(Clone, Copy, Default)]
struct BuildDigestHasher;

impl BuildHasher for BuildDigestHasher {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher(0)
    }
}

struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A bounded, windowed set of ids; cheap to share behind an `Arc`.
pub struct DedupStore {
    name: String,
    window_ms: u64,
    max_entries: usize,
    mem: Mutex<Memory>,
    db: Option<Arc<Database>>,
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
            db: dir.map(shared_db).transpose()?,
        };
        store.load(now_ms())?;
        Ok(store)
    }

    fn table(&self) -> Table<'_> {
        TableDefinition::new(&self.name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reload unexpired ids from disk, dropping expired ones there.
    fn load(&self, now: u64) -> anyhow::Result<()> {
        let Some(db) = &self.db else { return Ok(()) };
        let txn = db.begin_write()?;
        let mut live: Vec<(u64, String)> = Vec::new();
        {
            let mut t = txn.open_table(self.table())?;
            let mut expired = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                if v.value() > now {
                    live.push((v.value(), k.value().to_string()));
                } else {
                    expired.push(k.value().to_string());
                }
            }
            for k in expired {
                t.remove(k.as_str())?;
            }
        }
        txn.commit()?;
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
        let mut fresh = Vec::new();
        {
            let mut mem = self.lock();
            for id in ids {
                let d = mem.digest(id);
                mem.insert(d, exp, self.max_entries);
                if self.db.is_some() {
                    fresh.push(id.to_string());
                }
            }
        }
        if let Some(db) = &self.db {
            if let Err(e) = self.persist(db, &fresh, exp) {
                tracing::warn!(store = %self.name, error = %e, "cannot persist dedup ids");
            }
        }
    }

    fn persist(&self, db: &Database, ids: &[String], exp: u64) -> anyhow::Result<()> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::None);
        {
            let mut t = txn.open_table(self.table())?;
            for id in ids {
                t.insert(id.as_str(), exp)?;
            }
        }
        txn.commit()?;
        Ok(())
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
        if let Some(db) = &self.db {
            if let Ok(mut txn) = db.begin_write() {
                txn.set_durability(Durability::Immediate);
                let _ = txn.commit();
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
}
