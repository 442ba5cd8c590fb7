//! Spending Brevo's rate budget exactly: one [`ClassLimiter`] per endpoint
//! class, each with a per-second and a per-hour [`TokenBucket`], Brevo plan
//! presets with per-class overrides, adaptation to `x-sib-ratelimit-*`
//! headers, and a pause after a 429.
//!
//! Two choices make "never more than N per second, as Brevo counts" hold
//! while a saturated sender still gets N:
//!
//! * Each token comes back exactly one period after its use, instead of
//!   dripping back continuously. A classic bucket of capacity N refilled at
//!   N/s lets 2N requests through inside one second (a full bucket, then a
//!   bucket's worth of refill); Brevo would answer the extra with 429s.
//! * The period starts when Brevo's *answer* arrives, not when the request
//!   leaves. Brevo counted the request somewhere between the two; only the
//!   answer bounds that instant from above, whatever the network and
//!   scheduling jitter. The cost is one round trip per token per period
//!   (a few ms against a nearby server, ~10% of the budget at 100 ms).
//!   A request is holding its token ([`Permit`]) until then.
//!
//! All time is `tokio::time`, so tests drive it with `tokio::time::pause()`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::brevo::{EndpointClass, RateHeaders};
use crate::config::{BrevoConfig, BrevoPlan, RateBudget};
use crate::metrics as m;

/// The documented limits of a Brevo plan for one endpoint class.
pub fn preset(plan: BrevoPlan, class: EndpointClass) -> RateBudget {
    let (per_second, per_hour) = match (plan, class) {
        (BrevoPlan::General, EndpointClass::Events | EndpointClass::Contacts) => (10.0, 36_000.0),
        (BrevoPlan::Professional | BrevoPlan::Enterprise, EndpointClass::Events | EndpointClass::Contacts) => {
            (20.0, 72_000.0)
        }
        // Only an hourly figure is published for other endpoints; the
        // per-second bound just keeps a burst from spending it at once.
        (BrevoPlan::General, EndpointClass::Other) => (1.0, 100.0),
        (BrevoPlan::Professional | BrevoPlan::Enterprise, EndpointClass::Other) => (1.0, 200.0),
    };
    RateBudget { per_second, per_hour }
}

/// The budget in force for `class`: the override when configured, else the
/// plan's preset.
pub fn budget(cfg: &BrevoConfig, class: EndpointClass) -> RateBudget {
    let o = match class {
        EndpointClass::Events => cfg.rate_limits.events,
        EndpointClass::Contacts => cfg.rate_limits.contacts,
        EndpointClass::Other => cfg.rate_limits.other,
    };
    o.unwrap_or_else(|| preset(cfg.plan, class))
}

/// At most `limit` requests counted in any window of `period`: a token is
/// held while its request is in flight and returns `period` after the
/// request completed.
#[derive(Debug)]
pub struct TokenBucket {
    limit: usize,
    period: Duration,
    /// Completion instants of requests within the last period, ascending.
    completed: VecDeque<Instant>,
    /// Requests holding a token now.
    in_flight: usize,
}

impl TokenBucket {
    pub fn new(limit: usize, period: Duration) -> TokenBucket {
        let limit = limit.max(1);
        TokenBucket { limit, period, completed: VecDeque::with_capacity(limit.min(4096)), in_flight: 0 }
    }

    /// A rate of `per_period` per `period`, fractional rates included
    /// (0.5 per second becomes 1 per 2 seconds).
    pub fn with_rate(per_period: f64, period: Duration) -> TokenBucket {
        if per_period >= 1.0 {
            TokenBucket::new(per_period.floor() as usize, period)
        } else {
            TokenBucket::new(1, period.div_f64(per_period.max(1e-6)))
        }
    }

    /// The earliest instant a token is free; `None` while every token is
    /// held by a request still in flight (the next completion decides).
    pub fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        while self.completed.front().is_some_and(|&t| t + self.period <= now) {
            self.completed.pop_front();
        }
        let used = self.completed.len() + self.in_flight;
        if used < self.limit {
            return Some(now);
        }
        // The (used - limit + 1)-th oldest completed token frees one.
        self.completed.get(used - self.limit).map(|&t| t + self.period)
    }

    fn reserve(&mut self) {
        self.in_flight += 1;
    }

    fn complete(&mut self, at: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        // Completions arrive nearly in order: insert from the back.
        let pos = self.completed.iter().rposition(|&t| t <= at).map_or(0, |i| i + 1);
        self.completed.insert(pos, at);
    }
}

/// Limits for one endpoint class.
#[derive(Debug)]
pub struct ClassLimiter {
    second: TokenBucket,
    hour: TokenBucket,
    /// After a 429, or when Brevo counts the budget spent while we do not
    /// (another client on the same account): nothing is sent before this.
    paused_until: Option<Instant>,
}

impl ClassLimiter {
    pub fn new(budget: RateBudget, margin: Duration) -> ClassLimiter {
        ClassLimiter {
            second: TokenBucket::with_rate(budget.per_second, Duration::from_secs(1) + margin),
            hour: TokenBucket::with_rate(budget.per_hour, Duration::from_secs(3600)),
            paused_until: None,
        }
    }

    /// Reserve a token now if one is free; otherwise say when to ask again
    /// (`None`: when a request in flight completes).
    pub fn try_reserve(&mut self, now: Instant) -> Result<(), Option<Instant>> {
        let second = self.second.ready_at(now);
        let hour = self.hour.ready_at(now);
        let at = match (second, hour) {
            (Some(a), Some(b)) => a.max(b).max(self.paused_until.unwrap_or(now)),
            _ => return Err(None),
        };
        if at > now {
            return Err(Some(at));
        }
        self.second.reserve();
        self.hour.reserve();
        Ok(())
    }

    /// The request holding a token got its answer (or gave up) at `at`.
    pub fn complete(&mut self, at: Instant) {
        self.second.complete(at);
        self.hour.complete(at);
    }

    /// Follow Brevo's own count when it disagrees with ours. `remaining: 0`
    /// while our buckets still hold tokens means someone else spends this
    /// account's budget: hold the class until Brevo's reset. When our buckets
    /// are exhausted too, they already know when the next slot frees, and more
    /// precisely than `reset` (whole seconds until the window is *fully*
    /// restored), so the header is not allowed to slow a saturated sender.
    pub fn observe(&mut self, now: Instant, rate: &RateHeaders) {
        let (Some(0), Some(reset)) = (rate.remaining, rate.reset) else { return };
        let free = |b: &mut TokenBucket| b.ready_at(now).is_some_and(|t| t <= now);
        if free(&mut self.second) && free(&mut self.hour) {
            let until = now + reset;
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        }
    }

    /// A 429: stop the class until `now + wait` (one second when Brevo did
    /// not say).
    pub fn pause(&mut self, now: Instant, wait: Option<Duration>) {
        let until = now + wait.unwrap_or(Duration::from_secs(1)).max(Duration::from_millis(100));
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }
}

/// The limiter every lane shares.
#[derive(Debug)]
pub struct RateLimiter {
    classes: [Mutex<ClassLimiter>; 3],
    /// Woken when a request completes and its token starts its return.
    completed: [Notify; 3],
}

/// A token held by a request in flight; dropping it (after Brevo's answer,
/// a timeout, or a cancelled send) starts the token's way back.
#[must_use = "the token returns when the permit is dropped: hold it across the request"]
pub struct Permit<'a> {
    limiter: &'a RateLimiter,
    class: EndpointClass,
    /// How long the acquisition waited.
    pub waited: Duration,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.lock(self.class).complete(Instant::now());
        self.limiter.completed[self.class.index()].notify_waiters();
    }
}

impl RateLimiter {
    pub fn new(cfg: &BrevoConfig) -> RateLimiter {
        let margin = Duration::from_millis(cfg.rate_limit_margin_ms);
        let mk = |c| Mutex::new(ClassLimiter::new(budget(cfg, c), margin));
        RateLimiter {
            classes: [mk(EndpointClass::Events), mk(EndpointClass::Contacts), mk(EndpointClass::Other)],
            completed: [Notify::new(), Notify::new(), Notify::new()],
        }
    }

    fn lock(&self, class: EndpointClass) -> std::sync::MutexGuard<'_, ClassLimiter> {
        self.classes[class.index()].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for a token of `class`; hold the permit until the answer.
    pub async fn acquire(&self, class: EndpointClass) -> Permit<'_> {
        let started = Instant::now();
        loop {
            // Registered before looking, so a completion in between is not missed.
            let completed = self.completed[class.index()].notified();
            tokio::pin!(completed);
            completed.as_mut().enable();
            let next = self.lock(class).try_reserve(Instant::now());
            match next {
                Ok(()) => break,
                Err(Some(at)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = &mut completed => {}
                    }
                }
                Err(None) => completed.await,
            }
        }
        let waited = started.elapsed();
        m::rate_limit_wait(class.as_str(), waited);
        Permit { limiter: self, class, waited }
    }

    pub fn observe(&self, class: EndpointClass, rate: &RateHeaders) {
        self.lock(class).observe(Instant::now(), rate);
    }

    pub fn pause(&self, class: EndpointClass, wait: Option<Duration>) {
        m::rate_limit_pause(class.as_str());
        self.lock(class).pause(Instant::now(), wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(per_second: f64, per_hour: f64) -> BrevoConfig {
        let mut c = BrevoConfig { rate_limit_margin_ms: 0, ..BrevoConfig::default() };
        c.rate_limits.events = Some(RateBudget { per_second, per_hour });
        c
    }

    /// A request that is answered the instant it is sent.
    async fn take(l: &RateLimiter, class: EndpointClass) -> Duration {
        l.acquire(class).await.waited
    }

    /// Acquire `n` tokens back to back; return the instants they were granted.
    async fn grant_times(l: &RateLimiter, n: usize) -> Vec<Instant> {
        let mut out = Vec::new();
        for _ in 0..n {
            take(l, EndpointClass::Events).await;
            out.push(Instant::now());
        }
        out
    }

    /// Largest number of grants inside any window of `len`.
    fn max_in_window(times: &[Instant], len: Duration) -> usize {
        let mut best = 0;
        for (i, &t) in times.iter().enumerate() {
            let n = times[i..].iter().take_while(|&&u| u < t + len).count();
            best = best.max(n);
        }
        best
    }

    #[test]
    fn presets_follow_the_published_table() {
        assert_eq!(
            preset(BrevoPlan::General, EndpointClass::Events),
            RateBudget { per_second: 10.0, per_hour: 36_000.0 }
        );
        assert_eq!(preset(BrevoPlan::Enterprise, EndpointClass::Contacts).per_second, 20.0);
        assert_eq!(preset(BrevoPlan::Professional, EndpointClass::Other).per_hour, 200.0);
        let c = cfg(3.0, 50.0);
        assert_eq!(budget(&c, EndpointClass::Events).per_second, 3.0);
        assert_eq!(budget(&c, EndpointClass::Contacts).per_second, 10.0, "no override: plan preset");
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_budget_in_any_second_yet_exactly_the_budget_when_saturated() {
        let l = RateLimiter::new(&cfg(10.0, 36_000.0));
        let start = Instant::now();
        let times = grant_times(&l, 50).await;
        assert_eq!(max_in_window(&times, Duration::from_secs(1)), 10);
        // 50 tokens at 10/s: the first 10 at once, then 10 more each second.
        assert_eq!(times[49] - start, Duration::from_secs(4));
        assert_eq!(times[10] - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_hourly_budget_binds_too() {
        let l = RateLimiter::new(&cfg(10.0, 25.0));
        let start = Instant::now();
        let times = grant_times(&l, 26).await;
        assert_eq!(times[24] - start, Duration::from_secs(2), "per-second bound while the hour lasts");
        assert_eq!(times[25] - start, Duration::from_secs(3600), "the 26th waits for the hour");
    }

    #[tokio::test(start_paused = true)]
    async fn margin_widens_the_second() {
        let mut c = cfg(2.0, 1000.0);
        c.rate_limit_margin_ms = 20;
        let l = RateLimiter::new(&c);
        let start = Instant::now();
        let times = grant_times(&l, 3).await;
        assert_eq!(times[2] - start, Duration::from_millis(1020));
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rates_space_requests_out() {
        let l = RateLimiter::new(&cfg(0.5, 1000.0));
        let start = Instant::now();
        let times = grant_times(&l, 3).await;
        assert_eq!(times[1] - start, Duration::from_secs(2));
        assert_eq!(times[2] - start, Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_the_class_until_reset_and_only_that_class() {
        let l = RateLimiter::new(&cfg(10.0, 36_000.0));
        let start = Instant::now();
        l.pause(EndpointClass::Events, Some(Duration::from_secs(3)));
        take(&l, EndpointClass::Contacts).await;
        assert_eq!(Instant::now(), start, "contacts are not paused");
        let waited = take(&l, EndpointClass::Events).await;
        assert_eq!(waited, Duration::from_secs(3));
        // Without a hint the pause is one second.
        l.pause(EndpointClass::Events, None);
        assert_eq!(take(&l, EndpointClass::Events).await, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn brevo_counting_the_budget_spent_holds_the_class_until_its_reset() {
        let l = RateLimiter::new(&cfg(10.0, 36_000.0));
        let start = Instant::now();
        take(&l, EndpointClass::Events).await;
        // We spent 1 of 10; Brevo says 0 remain (another client): hold.
        let spent = RateHeaders { remaining: Some(0), reset: Some(Duration::from_secs(2)), ..Default::default() };
        l.observe(EndpointClass::Events, &spent);
        take(&l, EndpointClass::Events).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
        // Remaining above zero changes nothing.
        let plenty = RateHeaders { remaining: Some(5), reset: Some(Duration::from_secs(9)), ..Default::default() };
        l.observe(EndpointClass::Events, &plenty);
        take(&l, EndpointClass::Events).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_we_agree_with_does_not_slow_a_saturated_sender() {
        let l = RateLimiter::new(&cfg(10.0, 36_000.0));
        let start = Instant::now();
        let zero = RateHeaders { remaining: Some(0), reset: Some(Duration::from_secs(1)), ..Default::default() };
        let mut times = Vec::new();
        for _ in 0..30 {
            take(&l, EndpointClass::Events).await;
            times.push(Instant::now());
            // Brevo answers every request of a saturated second with 0 left.
            if times.len() % 10 == 0 {
                tokio::time::advance(Duration::from_millis(5)).await;
                l.observe(EndpointClass::Events, &zero);
            }
        }
        assert_eq!(times[29] - start, Duration::from_secs(2), "30 tokens in 2 s: no extra pauses");
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_returns_one_period_after_the_answer_not_the_send() {
        let l = RateLimiter::new(&cfg(2.0, 1000.0));
        let start = Instant::now();
        for _ in 0..2 {
            let permit = l.acquire(EndpointClass::Events).await;
            // Brevo takes 100 ms to answer.
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(permit);
        }
        // Answers came at 100 ms and 200 ms: their tokens are back at 1.1 s
        // and 1.2 s, whenever Brevo counted the requests in between.
        let times = grant_times(&l, 2).await;
        assert_eq!(times[0] - start, Duration::from_millis(1100));
        assert_eq!(times[1] - start, Duration::from_millis(1200));
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_token_in_flight_the_next_waits_for_an_answer() {
        let l = std::sync::Arc::new(RateLimiter::new(&cfg(1.0, 1000.0)));
        let start = Instant::now();
        let held = l.acquire(EndpointClass::Events).await;
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { take(&l, EndpointClass::Events).await })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "the only token is still in flight");
        drop(held);
        let waited = waiter.await.unwrap();
        assert_eq!(waited, Duration::from_secs(6), "5 s in flight, then one period");
        assert_eq!(Instant::now() - start, Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waiters_share_the_budget() {
        let l = std::sync::Arc::new(RateLimiter::new(&cfg(5.0, 36_000.0)));
        let times = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (l, times) = (l.clone(), times.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    take(&l, EndpointClass::Events).await;
                    times.lock().unwrap().push(Instant::now());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut times = times.lock().unwrap().clone();
        times.sort();
        assert_eq!(times.len(), 20);
        assert_eq!(max_in_window(&times, Duration::from_secs(1)), 5);
        assert_eq!(times[19] - times[0], Duration::from_secs(3));
    }
}
