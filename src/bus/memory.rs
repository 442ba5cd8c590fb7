//! An in-memory bus: the fake behind unit tests of the ingress and the
//! forwarder. It keeps every record, can be told to refuse publishes, and
//! implements the same ack semantics as the real backends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{AckTracker, BusError, Message, Position, Publisher, Record, Subscriber, SubscriberOpener, Topic};

#[derive(Default)]
struct State {
    topics: HashMap<Topic, Vec<Record>>,
    committed: HashMap<Topic, u64>,
    /// When set, publishes fail with this error (simulates an outage).
    refuse: Option<fn() -> BusError>,
}

/// A bus held in memory; clones share the same data.
#[derive(Clone)]
pub struct MemoryBus {
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus { state: Arc::default(), changed: watch::channel(0).0 }
    }
}

impl MemoryBus {
    pub fn new() -> MemoryBus {
        MemoryBus::default()
    }

    /// Everything published to `topic` so far.
    pub fn records(&self, topic: Topic) -> Vec<Record> {
        self.lock().topics.get(&topic).cloned().unwrap_or_default()
    }

    /// Make publishes fail with `err()` until called with `None`.
    pub fn refuse(&self, err: Option<fn() -> BusError>) {
        self.lock().refuse = err;
    }

    /// The committed position of `topic` (next offset to deliver).
    pub fn committed(&self, topic: Topic) -> u64 {
        self.lock().committed.get(&topic).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Publisher for MemoryBus {
    async fn publish(&self, topic: Topic, records: Vec<Record>) -> Result<(), BusError> {
        {
            let mut st = self.lock();
            if let Some(err) = st.refuse {
                return Err(err());
            }
            st.topics.entry(topic).or_default().extend(records);
        }
        self.changed.send_modify(|v| *v += 1);
        Ok(())
    }

    async fn ready(&self) -> Result<(), BusError> {
        match self.lock().refuse {
            Some(err) => Err(err()),
            None => Ok(()),
        }
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), BusError> {
        Ok(())
    }
}

#[async_trait]
impl SubscriberOpener for MemoryBus {
    async fn open(&self, topic: Topic) -> Result<Box<dyn Subscriber>, BusError> {
        let next = self.committed(topic);
        Ok(Box::new(MemorySubscriber {
            bus: self.clone(),
            topic,
            next,
            tracker: AckTracker::default(),
            changed: self.changed.subscribe(),
        }))
    }
}

pub struct MemorySubscriber {
    bus: MemoryBus,
    topic: Topic,
    next: u64,
    tracker: AckTracker,
    changed: watch::Receiver<u64>,
}

#[async_trait]
impl Subscriber for MemorySubscriber {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.changed.borrow_and_update();
            let msgs: Vec<Message> = {
                let st = self.bus.lock();
                let recs = st.topics.get(&self.topic).map(Vec::as_slice).unwrap_or_default();
                recs.iter()
                    .enumerate()
                    .skip(self.next as usize)
                    .take(max)
                    .map(|(i, r)| Message {
                        position: Position { partition: 0, offset: i as i64 },
                        key: r.key.clone(),
                        payload: r.payload.clone(),
                    })
                    .collect()
            };
            if !msgs.is_empty() {
                self.next += msgs.len() as u64;
                msgs.iter().for_each(|m| self.tracker.delivered(m.position));
                return Ok(msgs);
            }
            if tokio::time::timeout_at(deadline, self.changed.changed()).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&mut self, positions: &[Position]) -> Result<(), BusError> {
        for p in positions {
            if let Some((_, next)) = self.tracker.ack(*p) {
                self.bus.lock().committed.insert(self.topic, next as u64);
            }
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        Ok(())
    }
}
