//! The optional per-user / per-device events-per-second throttle
//! (`connectors.amplitude.eps_threshold`, 0 = off).
//!
//! Amplitude measures each user's and each device's rate as an average over
//! 30 seconds and answers 429 for requests that carry a throttled one. Here:
//! * a user or device is throttled while the events Sluice *accepted* for it
//!   in the last 30 s average more than the threshold per second;
//! * a request is refused (429, with every event of a throttled user or
//!   device listed) only when one is already throttled; the request that
//!   crosses the line is still accepted. So a single large batch can never
//!   be refused forever: after 30 s the window is empty again and it passes;
//! * refused events are not counted, so a client that retries does not
//!   extend its own throttle.
//!
//! Counters live in memory, per process (replicas each throttle their own
//! share), in one-second buckets; idle ids are swept once the map passes
//! [`MAX_TRACKED_IDS`], beyond which new ids go untracked (fail open).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::ingress::IngressError;

/// Averaging window, in seconds (Amplitude's documented 30 s).
pub const WINDOW_SECS: usize = 30;
/// Bound on tracked users + devices.
pub const MAX_TRACKED_IDS: usize = 500_000;

/// Events of one second-bucket ring.
struct Counter {
    buckets: [u32; WINDOW_SECS],
    /// The second the newest bucket belongs to.
    last_sec: i64,
}

impl Counter {
    fn new(now: i64) -> Counter {
        Counter { buckets: [0; WINDOW_SECS], last_sec: now }
    }

    /// Forget buckets older than the window as of `now`.
    fn advance(&mut self, now: i64) {
        if now <= self.last_sec {
            return;
        }
        let gap = (now - self.last_sec) as usize;
        if gap >= WINDOW_SECS {
            self.buckets = [0; WINDOW_SECS];
        } else {
            for s in 1..=gap {
                self.buckets[slot(self.last_sec + s as i64)] = 0;
            }
        }
        self.last_sec = now;
    }

    fn total(&self) -> u64 {
        self.buckets.iter().map(|&b| u64::from(b)).sum()
    }
}

fn slot(sec: i64) -> usize {
    sec.rem_euclid(WINDOW_SECS as i64) as usize
}

/// Who an event counts against: its user id and its device id.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub user_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
}

pub struct EpsThrottle {
    threshold: u32,
    counters: Mutex<HashMap<String, Counter>>,
}

impl EpsThrottle {
    /// `threshold` 0 disables the throttle.
    pub fn new(threshold: u32) -> EpsThrottle {
        EpsThrottle { threshold, counters: Mutex::new(HashMap::new()) }
    }

    pub fn enabled(&self) -> bool {
        self.threshold > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counter>> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse when any sender is throttled, with Amplitude's 429 details.
    pub fn check(&self, project: &str, senders: &[Sender<'_>], now_sec: i64) -> Result<(), IngressError> {
        if !self.enabled() {
            return Ok(());
        }
        let limit = u64::from(self.threshold) * WINDOW_SECS as u64;
        let mut map = self.lock();
        let mut rate_of = |kind: char, id: &str| -> Option<u64> {
            let c = map.get_mut(&key(project, kind, id))?;
            c.advance(now_sec);
            let total = c.total();
            (total > limit).then(|| total.div_ceil(WINDOW_SECS as u64))
        };
        let mut users = BTreeMap::new();
        let mut devices = BTreeMap::new();
        let mut events = Vec::new();
        for (i, s) in senders.iter().enumerate() {
            let u = s.user_id.and_then(|u| rate_of('u', u).map(|r| (u, r)));
            let d = s.device_id.and_then(|d| rate_of('d', d).map(|r| (d, r)));
            if u.is_none() && d.is_none() {
                continue;
            }
            events.push(i);
            if let Some((id, rate)) = u {
                users.insert(id.to_string(), rate);
            }
            if let Some((id, rate)) = d {
                devices.insert(id.to_string(), rate);
            }
        }
        if events.is_empty() {
            return Ok(());
        }
        let mut details = Map::new();
        details.insert("eps_threshold".into(), Value::from(self.threshold));
        details.insert("throttled_users".into(), Value::Object(to_json(users)));
        details.insert("throttled_devices".into(), Value::Object(to_json(devices)));
        details.insert("throttled_events".into(), Value::from(events));
        Err(IngressError::Throttled { details })
    }

    /// Count accepted events.
    pub fn record(&self, project: &str, senders: &[Sender<'_>], now_sec: i64) {
        if !self.enabled() {
            return;
        }
        let mut map = self.lock();
        for s in senders {
            for (kind, id) in [('u', s.user_id), ('d', s.device_id)] {
                let Some(id) = id else { continue };
                let k = key(project, kind, id);
                if !map.contains_key(&k) && map.len() >= MAX_TRACKED_IDS {
                    map.retain(|_, c| now_sec - c.last_sec < WINDOW_SECS as i64);
                    if map.len() >= MAX_TRACKED_IDS {
                        continue;
                    }
                }
                let c = map.entry(k).or_insert_with(|| Counter::new(now_sec));
                c.advance(now_sec);
                let b = &mut c.buckets[slot(now_sec)];
                *b = b.saturating_add(1);
            }
        }
    }
}

fn key(project: &str, kind: char, id: &str) -> String {
    let mut k = String::with_capacity(project.len() + id.len() + 3);
    k.push_str(project);
    k.push('\u{1f}');
    k.push(kind);
    k.push('\u{1f}');
    k.push_str(id);
    k
}

fn to_json(m: BTreeMap<String, u64>) -> Map<String, Value> {
    m.into_iter().map(|(k, v)| (k, Value::from(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(d: &str) -> Sender<'_> {
        Sender { user_id: None, device_id: Some(d) }
    }

    #[test]
    fn throttles_only_after_the_average_exceeds_the_threshold() {
        let t = EpsThrottle::new(2); // 60 events per 30 s window
        let batch: Vec<Sender> = (0..60).map(|_| dev("device-1")).collect();
        assert!(t.check("k", &batch, 1000).is_ok());
        t.record("k", &batch, 1000);
        assert!(t.check("k", &[dev("device-1")], 1001).is_ok(), "60 in 30 s is exactly 2/s, not over");
        t.record("k", &[dev("device-1")], 1001);
        let err = t.check("k", &[dev("other-device"), dev("device-1")], 1002).unwrap_err();
        let IngressError::Throttled { details } = err else { panic!("expected Throttled") };
        assert_eq!(
            Value::Object(details),
            serde_json::json!({"eps_threshold": 2, "throttled_users": {}, "throttled_devices": {"device-1": 3},
                "throttled_events": [1]})
        );
        // Another project's device of the same name is not affected.
        assert!(t.check("k2", &[dev("device-1")], 1002).is_ok());
        // Once the window has passed, the device is free again.
        assert!(t.check("k", &[dev("device-1")], 1001 + WINDOW_SECS as i64).is_ok());
    }

    #[test]
    fn users_and_devices_are_counted_separately() {
        let t = EpsThrottle::new(1);
        let s = Sender { user_id: Some("user-1"), device_id: Some("dev-1") };
        let many: Vec<Sender> = (0..31).map(|_| s).collect();
        t.record("k", &many, 0);
        let err = t.check("k", &[Sender { user_id: Some("user-1"), device_id: Some("dev-2") }], 5).unwrap_err();
        let IngressError::Throttled { details } = err else { panic!("expected Throttled") };
        assert_eq!(details["throttled_users"], serde_json::json!({"user-1": 2}));
        assert_eq!(details["throttled_devices"], serde_json::json!({}));
    }

    #[test]
    fn disabled_throttle_never_refuses() {
        let t = EpsThrottle::new(0);
        let many: Vec<Sender> = (0..10_000).map(|_| dev("d")).collect();
        t.record("k", &many, 0);
        assert!(t.check("k", &many, 0).is_ok());
        assert!(t.lock().is_empty(), "nothing is tracked when off");
    }
}
