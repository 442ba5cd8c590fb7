//! The slowest embedded-log publish while retention deletes a large backlog:
//! 64 publishers write 100 records of 1 KB each as fast as they can for 9 s
//! into a log bounded at 20 MiB, so the background retention pass at ~5 s
//! deletes the 1–2 GB written until then.
//!
//! ```sh
//! cargo run --release --example retention_latency
//! ```
//!
//! Prints the slowest publish before, around and after that pass
//! (BENCHMARKS.md, "Memory under Amplitude's 100-event batches"). The log
//! lives in a fresh temporary directory.

use std::time::{Duration, Instant};

use sluice::bus::embedded::EmbeddedLog;
use sluice::bus::{Publisher, Record, Topic};
use sluice::config::EmbeddedConfig;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PUBLISHERS: usize = 64;
const RUN: Duration = Duration::from_secs(9);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let cfg = EmbeddedConfig { retention_max_bytes: 20 << 20, ..EmbeddedConfig::default() };
    let log = EmbeddedLog::open(dir.path(), cfg).expect("open the log");
    let start = Instant::now();
    let tasks: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move {
                // (ms since start when sent, ms it took)
                let mut took = Vec::new();
                while start.elapsed() < RUN {
                    let records = (0..100u8).map(|i| Record { key: vec![i; 20], payload: vec![b'x'; 1000] }).collect();
                    let sent = Instant::now();
                    log.publish(Topic::Events, records).await.expect("publish");
                    took.push((sent.duration_since(start).as_millis(), sent.elapsed().as_millis()));
                }
                took
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("publisher"));
    }
    let window = |from: u128, to: u128| {
        let sent: Vec<u128> = all.iter().filter(|(at, _)| (from..to).contains(at)).map(|(_, ms)| *ms).collect();
        (sent.iter().max().copied().unwrap_or(0), sent.len() * 100)
    };
    for (name, from, to) in [("before", 0, 4_500), ("around", 4_500, 7_000), ("after", 7_000, 9_000)] {
        let (slowest, events) = window(from, to);
        println!("{name:>6} the retention pass ({from}-{to} ms): slowest publish {slowest} ms, {events} events");
    }
}
