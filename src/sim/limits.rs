//! Brevo's rate limits as the simulator enforces them: endpoint classes,
//! per-plan budgets, and the sliding-window limiter behind the
//! `x-sib-ratelimit-*` headers and the 429s.
//!
//! Model: a **sliding-window log** per budget. A request is admitted only if
//! fewer than `limit` requests were admitted in the preceding window
//! (`(now - window, now]`). That is the strictest common model: any request
//! pattern it admits is also admitted by a fixed-window counter or a token
//! bucket with the same budget, so a client that never sees a 429 here will
//! not see one from Brevo on account of request counts, whichever model Brevo
//! really uses (its docs say only "in the current time window").

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Brevo's rate-limit classes (official rate-limit page; CONTRACTS §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointClass {
    /// `/v3/events` and `/v3/events/batch` (assumed to share one budget:
    /// CONTRACTS marks this unverified, sharing is the safe side).
    Events,
    /// `/v3/contacts` and everything below it, attributes and lists included.
    Contacts,
    /// Every other path.
    Other,
}

impl EndpointClass {
    pub const ALL: [EndpointClass; 3] = [EndpointClass::Events, EndpointClass::Contacts, EndpointClass::Other];

    /// The class of a request path below the API root (`/v3/...`).
    pub fn of_path(path: &str) -> EndpointClass {
        let rest = path.strip_prefix("/v3").unwrap_or(path);
        if rest == "/events" || rest.starts_with("/events/") {
            EndpointClass::Events
        } else if rest == "/contacts" || rest.starts_with("/contacts/") {
            EndpointClass::Contacts
        } else {
            EndpointClass::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Events => "events",
            EndpointClass::Contacts => "contacts",
            EndpointClass::Other => "other",
        }
    }
}

/// Brevo plan families with distinct rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    #[default]
    General,
    Professional,
    Enterprise,
}

impl std::str::FromStr for Plan {
    type Err = String;
    fn from_str(s: &str) -> Result<Plan, String> {
        match s {
            "general" => Ok(Plan::General),
            "professional" => Ok(Plan::Professional),
            "enterprise" => Ok(Plan::Enterprise),
            other => Err(format!("unknown plan {other:?}: expected general, professional or enterprise")),
        }
    }
}

/// The two budgets that apply at once to one endpoint class. `None` means
/// that window is not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub per_second: Option<u32>,
    pub per_hour: Option<u32>,
}

/// Budgets for every endpoint class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub events: Budget,
    pub contacts: Budget,
    pub other: Budget,
}

impl RateLimits {
    /// The published limits (CONTRACTS §5): general plans 10/s + 36,000/h on
    /// events and contacts and 100/h elsewhere; professional and enterprise
    /// double every figure.
    pub fn for_plan(plan: Plan) -> RateLimits {
        let k = match plan {
            Plan::General => 1,
            Plan::Professional | Plan::Enterprise => 2,
        };
        let api = Budget { per_second: Some(10 * k), per_hour: Some(36_000 * k) };
        RateLimits { events: api, contacts: api, other: Budget { per_second: None, per_hour: Some(100 * k) } }
    }

    /// No limit anywhere: for tests that are about something else.
    pub fn unlimited() -> RateLimits {
        let none = Budget { per_second: None, per_hour: None };
        RateLimits { events: none, contacts: none, other: none }
    }

    pub fn budget(&self, class: EndpointClass) -> Budget {
        match class {
            EndpointClass::Events => self.events,
            EndpointClass::Contacts => self.contacts,
            EndpointClass::Other => self.other,
        }
    }
}

/// "At most `limit` admitted requests in any window of length `window`."
#[derive(Debug)]
struct SlidingWindow {
    limit: u32,
    window: Duration,
    /// Admission times still inside the window, oldest first.
    admitted: VecDeque<Duration>,
}

impl SlidingWindow {
    fn new(limit: u32, window: Duration) -> SlidingWindow {
        SlidingWindow { limit, window, admitted: VecDeque::new() }
    }

    fn expire(&mut self, now: Duration) {
        while self.admitted.front().is_some_and(|t| *t + self.window <= now) {
            self.admitted.pop_front();
        }
    }

    fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.admitted.len() as u32)
    }

    /// Time until the oldest admission leaves the window (a slot frees up).
    fn next_slot_in(&self, now: Duration) -> Duration {
        self.admitted.front().map(|t| (*t + self.window).saturating_sub(now)).unwrap_or(Duration::ZERO)
    }

    /// Time until every admission has left the window (the full budget is back).
    fn full_reset_in(&self, now: Duration) -> Duration {
        self.admitted.back().map(|t| (*t + self.window).saturating_sub(now)).unwrap_or(Duration::ZERO)
    }
}

/// What the `x-sib-ratelimit-*` headers of one response say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the reported window's budget is fully restored.
    pub reset_secs: u64,
}

/// The outcome of asking the limiter to admit one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted(Option<RateHeaders>),
    /// Over budget: the request must be answered 429 and not processed.
    Limited {
        headers: Option<RateHeaders>,
        retry_after_secs: u64,
        window: &'static str,
        limit: u32,
    },
}

/// The limiter of one endpoint class: a per-second and a per-hour window.
#[derive(Debug)]
pub struct ClassLimiter {
    second: Option<SlidingWindow>,
    hour: Option<SlidingWindow>,
}

fn ceil_secs(d: Duration) -> u64 {
    let whole = d.as_secs();
    if d.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    }
}

impl ClassLimiter {
    pub fn new(budget: Budget) -> ClassLimiter {
        ClassLimiter {
            second: budget.per_second.map(|n| SlidingWindow::new(n, Duration::from_secs(1))),
            hour: budget.per_hour.map(|n| SlidingWindow::new(n, Duration::from_secs(3600))),
        }
    }

    fn windows(&mut self) -> impl Iterator<Item = (&'static str, &mut SlidingWindow)> {
        let s = self.second.as_mut().map(|w| ("second", w));
        let h = self.hour.as_mut().map(|w| ("hour", w));
        s.into_iter().chain(h)
    }

    /// Admit (and count) one request at `now`, or refuse it without counting.
    pub fn admit(&mut self, now: Duration) -> Admission {
        let mut refused: Option<(&'static str, u32, Duration)> = None;
        for (name, w) in self.windows() {
            w.expire(now);
            if w.remaining() == 0 {
                let wait = w.next_slot_in(now);
                // Report the window that keeps the client waiting longest.
                if refused.map_or(true, |(_, _, longest)| wait > longest) {
                    refused = Some((name, w.limit, wait));
                }
            }
        }
        if let Some((window, limit, wait)) = refused {
            return Admission::Limited {
                headers: self.headers(now),
                retry_after_secs: ceil_secs(wait).max(1),
                window,
                limit,
            };
        }
        for (_, w) in self.windows() {
            w.admitted.push_back(now);
        }
        Admission::Admitted(self.headers(now))
    }

    /// The headers for a response at `now`, without counting anything. The
    /// window with the least remaining budget is reported (the per-second one
    /// on a tie), since that is the one a client must slow down for.
    pub fn headers(&mut self, now: Duration) -> Option<RateHeaders> {
        let mut best: Option<RateHeaders> = None;
        for (_, w) in self.windows() {
            w.expire(now);
            let h =
                RateHeaders { limit: w.limit, remaining: w.remaining(), reset_secs: ceil_secs(w.full_reset_in(now)) };
            if best.map_or(true, |b| h.remaining < b.remaining) {
                best = Some(h);
            }
        }
        best
    }
}

/// Largest number of `times` (sorted ascending) inside any half-open window
/// `[t, t + window)`: the figure to compare with a per-window budget.
pub fn max_in_any_window(times: &[Duration], window: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for (end, t) in times.iter().enumerate() {
        while times[start] + window <= *t {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn classes_follow_brevo_paths() {
        assert_eq!(EndpointClass::of_path("/v3/events"), EndpointClass::Events);
        assert_eq!(EndpointClass::of_path("/v3/events/batch"), EndpointClass::Events);
        assert_eq!(EndpointClass::of_path("/v3/contacts"), EndpointClass::Contacts);
        assert_eq!(EndpointClass::of_path("/v3/contacts/lists/3/contacts/add"), EndpointClass::Contacts);
        assert_eq!(EndpointClass::of_path("/v3/account"), EndpointClass::Other);
        assert_eq!(EndpointClass::of_path("/v3/eventsx"), EndpointClass::Other);
    }

    #[test]
    fn plans_have_published_budgets() {
        let g = RateLimits::for_plan(Plan::General);
        assert_eq!(g.events, Budget { per_second: Some(10), per_hour: Some(36_000) });
        assert_eq!(g.other, Budget { per_second: None, per_hour: Some(100) });
        let p = RateLimits::for_plan(Plan::Professional);
        assert_eq!(p.contacts, Budget { per_second: Some(20), per_hour: Some(72_000) });
        assert_eq!(RateLimits::for_plan(Plan::Enterprise), p);
        assert!("gold".parse::<Plan>().is_err());
    }

    #[test]
    fn per_second_window_slides() {
        let mut l = ClassLimiter::new(Budget { per_second: Some(3), per_hour: None });
        for i in 0..3 {
            assert!(matches!(l.admit(ms(100 * i)), Admission::Admitted(_)));
        }
        // 4th inside (200ms..1000ms] of the first: refused, slot frees at 1000ms.
        match l.admit(ms(900)) {
            Admission::Limited { retry_after_secs, window, limit, headers } => {
                assert_eq!((retry_after_secs, window, limit), (1, "second", 3));
                assert_eq!(headers.map(|h| h.remaining), Some(0));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // At exactly 1000ms the first admission has left the window.
        assert!(matches!(l.admit(ms(1000)), Admission::Admitted(_)));
        assert!(matches!(l.admit(ms(1050)), Admission::Limited { .. }));
        assert!(matches!(l.admit(ms(1100)), Admission::Admitted(_)));
    }

    #[test]
    fn refusals_do_not_consume_budget() {
        let mut l = ClassLimiter::new(Budget { per_second: Some(1), per_hour: None });
        assert!(matches!(l.admit(ms(0)), Admission::Admitted(_)));
        for t in 1..50 {
            assert!(matches!(l.admit(ms(t * 10)), Admission::Limited { .. }));
        }
        assert!(matches!(l.admit(ms(1000)), Admission::Admitted(_)));
    }

    #[test]
    fn hour_budget_applies_with_second_budget() {
        let mut l = ClassLimiter::new(Budget { per_second: Some(10), per_hour: Some(15) });
        let mut admitted = 0;
        for t in 0..40 {
            if matches!(l.admit(ms(t * 200)), Admission::Admitted(_)) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 15);
        match l.admit(ms(10_000)) {
            Admission::Limited { retry_after_secs, window, .. } => {
                assert_eq!(window, "hour");
                assert_eq!(retry_after_secs, 3590);
            }
            other => panic!("expected the hour budget to refuse, got {other:?}"),
        }
    }

    #[test]
    fn headers_report_the_tightest_window() {
        let mut l = ClassLimiter::new(Budget { per_second: Some(10), per_hour: Some(12) });
        let Admission::Admitted(Some(h)) = l.admit(ms(0)) else { panic!("first request refused") };
        assert_eq!(h, RateHeaders { limit: 10, remaining: 9, reset_secs: 1 });
        for t in 1..10 {
            l.admit(ms(t));
        }
        let Admission::Admitted(Some(h)) = l.admit(ms(2000)) else { panic!("refused after the second passed") };
        // 11 of 12 used this hour vs 1 of 10 this second: the hour binds.
        assert_eq!(h, RateHeaders { limit: 12, remaining: 1, reset_secs: 3600 });
        let unlimited = ClassLimiter::new(Budget { per_second: None, per_hour: None }).headers(ms(0));
        assert_eq!(unlimited, None);
    }

    #[test]
    fn max_in_any_window_counts_half_open_windows() {
        let t: Vec<Duration> = [0, 100, 999, 1000, 1500, 1999].into_iter().map(ms).collect();
        assert_eq!(max_in_any_window(&t, Duration::from_secs(1)), 3);
        let dense: Vec<Duration> = [0, 10, 20, 990, 995].into_iter().map(ms).collect();
        assert_eq!(max_in_any_window(&dense, Duration::from_secs(1)), 5);
        assert_eq!(max_in_any_window(&[], Duration::from_secs(1)), 0);
        let burst: Vec<Duration> = vec![ms(5); 7];
        assert_eq!(max_in_any_window(&burst, Duration::from_secs(1)), 7);
    }
}
