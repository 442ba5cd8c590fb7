//! Injected faults: what a test queues so the simulator misbehaves on
//! purpose, deterministically, for the next matching requests.
//!
//! Faults sit in one FIFO queue. Each authenticated request takes at most one
//! fault: the first queued entry whose filter matches it, and spends one of
//! that entry's `times`. Requests with a wrong key never consume a fault.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::limits::EndpointClass;

/// What an injected fault does to the request that takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this 5xx status (`{"code":"internal_error",...}` body); the
    /// request is not processed and spends no rate budget.
    ServerError { status: u16 },
    /// Answer 429 as if the rate limit were exhausted, with `Retry-After` and
    /// `x-sib-ratelimit-reset` set to `retry_after_secs` and remaining 0.
    RateLimited { retry_after_secs: u64 },
    /// Hold the request `ms` milliseconds, then process it normally: a client
    /// with a shorter timeout sees a timeout, yet the request may still land
    /// (exactly the ambiguity a real timeout has).
    Delay { ms: u64 },
    /// Hold the request `ms` milliseconds, then answer 504 without processing
    /// it: a timeout after which a retry is not a duplicate.
    Stall { ms: u64 },
    /// Answer 401 `Key not found` although the key is right (a revoked key).
    Unauthorized,
    /// On `POST /v3/events/batch` only: the events at these 0-based indexes
    /// fail validation. Answer 207 when some events remain, 400 when none do.
    PartialFailure { event_indexes: Vec<usize> },
}

/// One queued fault. Serializes flat, in the same shape `POST /_sim/faults`
/// accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many matching requests it affects (at least 1).
    pub times: u32,
    /// Only requests of this class take it; `None` = any class.
    pub class: Option<EndpointClass>,
}

impl Fault {
    fn new(kind: FaultKind, times: u32) -> Fault {
        Fault { kind, times: times.max(1), class: None }
    }
    /// `times` requests answered with `status` (500–599).
    pub fn server_errors(status: u16, times: u32) -> Fault {
        Fault::new(FaultKind::ServerError { status }, times)
    }
    /// A 429 storm of `times` requests.
    pub fn rate_limited(times: u32, retry_after_secs: u64) -> Fault {
        Fault::new(FaultKind::RateLimited { retry_after_secs }, times)
    }
    /// `times` requests held `ms` milliseconds before normal processing.
    pub fn delay(ms: u64, times: u32) -> Fault {
        Fault::new(FaultKind::Delay { ms }, times)
    }
    /// `times` requests held `ms` milliseconds, then answered 504 unprocessed.
    pub fn stall(ms: u64, times: u32) -> Fault {
        Fault::new(FaultKind::Stall { ms }, times)
    }
    /// `times` requests refused 401.
    pub fn unauthorized(times: u32) -> Fault {
        Fault::new(FaultKind::Unauthorized, times)
    }
    /// The next batch-events request fails the events at `event_indexes`.
    pub fn partial_failure(event_indexes: Vec<usize>) -> Fault {
        Fault::new(FaultKind::PartialFailure { event_indexes }, 1)
    }
    /// Repeat for `times` matching requests.
    pub fn times(mut self, times: u32) -> Fault {
        self.times = times.max(1);
        self
    }
    /// Restrict to one endpoint class.
    pub fn on(mut self, class: EndpointClass) -> Fault {
        self.class = Some(class);
        self
    }

    fn matches(&self, class: EndpointClass, batch_events: bool) -> bool {
        if self.class.is_some_and(|c| c != class) {
            return false;
        }
        match self.kind {
            FaultKind::PartialFailure { .. } => batch_events,
            _ => true,
        }
    }

    /// A short label for the recording.
    pub fn label(&self) -> String {
        match &self.kind {
            FaultKind::ServerError { status } => format!("server_error:{status}"),
            FaultKind::RateLimited { retry_after_secs } => format!("rate_limited:{retry_after_secs}s"),
            FaultKind::Delay { ms } => format!("delay:{ms}ms"),
            FaultKind::Stall { ms } => format!("stall:{ms}ms"),
            FaultKind::Unauthorized => "unauthorized".into(),
            FaultKind::PartialFailure { event_indexes } => format!("partial_failure:{event_indexes:?}"),
        }
    }
}

/// The JSON accepted by `POST /_sim/faults` (one object or an array), e.g.
/// `{"kind":"server_error","status":503,"times":3,"class":"events"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    kind: String,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    retry_after_secs: Option<u64>,
    #[serde(default)]
    ms: Option<u64>,
    #[serde(default)]
    event_indexes: Option<Vec<usize>>,
    #[serde(default)]
    times: Option<u32>,
    #[serde(default)]
    class: Option<EndpointClass>,
}

impl TryFrom<FaultSpec> for Fault {
    type Error = String;
    fn try_from(s: FaultSpec) -> Result<Fault, String> {
        let kind = match s.kind.as_str() {
            "server_error" => {
                let status = s.status.unwrap_or(500);
                if !(500..=599).contains(&status) {
                    return Err(format!("server_error: status {status} is not a 5xx"));
                }
                FaultKind::ServerError { status }
            }
            "rate_limited" => FaultKind::RateLimited { retry_after_secs: s.retry_after_secs.unwrap_or(1) },
            "delay" => FaultKind::Delay { ms: s.ms.ok_or("delay: `ms` is required")? },
            "stall" => FaultKind::Stall { ms: s.ms.ok_or("stall: `ms` is required")? },
            "unauthorized" => FaultKind::Unauthorized,
            "partial_failure" => FaultKind::PartialFailure {
                event_indexes: s.event_indexes.ok_or("partial_failure: `event_indexes` is required")?,
            },
            other => {
                return Err(format!(
                    "unknown fault kind {other:?}: expected server_error, rate_limited, delay, stall, unauthorized or partial_failure"
                ))
            }
        };
        let mut f = Fault::new(kind, s.times.unwrap_or(1));
        f.class = s.class;
        Ok(f)
    }
}

/// The queue of pending faults.
#[derive(Debug, Default)]
pub struct FaultQueue {
    pending: VecDeque<Fault>,
}

impl FaultQueue {
    pub fn push(&mut self, f: Fault) {
        self.pending.push_back(f);
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }

    pub fn pending(&self) -> Vec<Fault> {
        self.pending.iter().cloned().collect()
    }

    /// Take one use of the first fault matching this request, if any.
    pub fn take(&mut self, class: EndpointClass, batch_events: bool) -> Option<Fault> {
        let i = self.pending.iter().position(|f| f.matches(class, batch_events))?;
        let entry = &mut self.pending[i];
        let mut one = entry.clone();
        one.times = 1;
        entry.times -= 1;
        if entry.times == 0 {
            self.pending.remove(i);
        }
        Some(one)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_taken_in_order_and_counted_down() {
        let mut q = FaultQueue::default();
        q.push(Fault::server_errors(503, 2));
        q.push(Fault::unauthorized(1));
        let label = |f: Option<Fault>| f.map(|f| f.label());
        assert_eq!(label(q.take(EndpointClass::Events, false)).as_deref(), Some("server_error:503"));
        assert_eq!(label(q.take(EndpointClass::Contacts, false)).as_deref(), Some("server_error:503"));
        assert_eq!(label(q.take(EndpointClass::Events, false)).as_deref(), Some("unauthorized"));
        assert_eq!(q.take(EndpointClass::Events, false), None);
    }

    #[test]
    fn class_filters_and_partial_failures_skip_other_requests() {
        let mut q = FaultQueue::default();
        q.push(Fault::partial_failure(vec![1]));
        q.push(Fault::rate_limited(1, 2).on(EndpointClass::Contacts));
        // A single-event request cannot take the partial failure, nor the
        // contacts-only storm.
        assert_eq!(q.take(EndpointClass::Events, false), None);
        assert_eq!(
            q.take(EndpointClass::Contacts, false).map(|f| f.kind),
            Some(FaultKind::RateLimited { retry_after_secs: 2 })
        );
        assert_eq!(
            q.take(EndpointClass::Events, true).map(|f| f.kind),
            Some(FaultKind::PartialFailure { event_indexes: vec![1] })
        );
        assert!(q.pending().is_empty());
    }

    #[test]
    fn json_specs_are_checked() {
        let parse = |s: &str| -> Result<Fault, String> {
            let spec: FaultSpec = serde_json::from_str(s).map_err(|e| e.to_string())?;
            Fault::try_from(spec)
        };
        let f = parse(r#"{"kind":"server_error","status":502,"times":3,"class":"events"}"#).unwrap();
        assert_eq!(f, Fault::server_errors(502, 3).on(EndpointClass::Events));
        assert_eq!(parse(r#"{"kind":"delay","ms":250}"#).unwrap(), Fault::delay(250, 1));
        assert_eq!(parse(r#"{"kind":"stall","ms":250,"times":2}"#).unwrap(), Fault::stall(250, 2));
        assert!(parse(r#"{"kind":"server_error","status":404}"#).is_err());
        assert!(parse(r#"{"kind":"delay"}"#).is_err());
        assert!(parse(r#"{"kind":"explode"}"#).is_err());
        // A typo must not silently fall back to a default.
        assert!(parse(r#"{"kind":"server_error","time":3}"#).is_err());
        // What the control API lists can be posted back.
        let shown = serde_json::to_string(&Fault::partial_failure(vec![2]).on(EndpointClass::Events)).unwrap();
        assert_eq!(parse(&shown).unwrap(), Fault::partial_failure(vec![2]).on(EndpointClass::Events));
    }
}
