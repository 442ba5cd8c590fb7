//! Embedded-bus throughput: many concurrent publishers of 10-event batches
//! (~650-byte events, as PostHog SDKs send them), each publish waiting for its
//! fsync'd group commit. Reports events/s; the figure in ARCHITECTURE.md and
//! BENCHMARKS.md comes from here.
//!
//! Throughput is bounded by events per commit ÷ commit time, and events per
//! commit by how many publishes wait at once: 64 publishers can put at most
//! 640 events in one fsync. 256 publishers is what the HTTP load harness
//! (`scripts/bench-ingress`, 256 connections of 10-event batches) offers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::bus::embedded::EmbeddedLog;
use sluice::bus::{Publisher, Record, Topic};
use sluice::config::EmbeddedConfig;

const BATCH: usize = 10;
const PUBLISHERS: [usize; 2] = [64, 256];
const BATCHES_PER_PUBLISHER: usize = 20;

fn record(i: usize) -> Record {
    Record { key: format!("posthog:phc_bench:user-{}", i % 1000).into_bytes(), payload: vec![b'x'; 650] }
}

fn embedded_group_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedConfig::default()).unwrap();
    let mut g = c.benchmark_group("embedded_bus");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    for publishers in PUBLISHERS {
        g.throughput(Throughput::Elements((publishers * BATCHES_PER_PUBLISHER * BATCH) as u64));
        let name = format!("publish_10_event_batches_{publishers}_concurrent");
        g.bench_function(name.as_str(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let log: Arc<EmbeddedLog> = log.clone();
                    total += rt.block_on(async move {
                        let started = Instant::now();
                        let tasks: Vec<_> = (0..publishers)
                            .map(|p| {
                                let log = log.clone();
                                tokio::spawn(async move {
                                    for b in 0..BATCHES_PER_PUBLISHER {
                                        let recs = (0..BATCH).map(|i| record(p * 1000 + b * BATCH + i)).collect();
                                        log.publish(Topic::Events, recs).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                        started.elapsed()
                    });
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, embedded_group_commit);
criterion_main!(benches);
