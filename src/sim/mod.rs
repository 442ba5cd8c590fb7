//! A faithful fake of the Brevo API for tests and local development: the
//! endpoints the forwarder calls, Brevo's validation rules, batch limits, rate
//! limits with `x-sib-ratelimit-*` headers and 429s, injectable faults, and a
//! recording of everything it received and accepted.
//!
//! Every `/v3/...` request goes through one pipeline, in this order:
//! 1. **auth**: `api-key` must equal [`SimConfig::api_key`], else 401
//!    `{"code":"unauthorized","message":"Key not found"}` (no budget spent,
//!    no fault consumed);
//! 2. **faults** ([`faults`]): the first queued fault matching the request is
//!    applied; 5xx / 429 / 401 faults answer at once and spend no budget;
//! 3. **rate limit** ([`limits`]): per endpoint class, per second and per
//!    hour, sliding window; over budget → 429 with `Retry-After`;
//! 4. **endpoint** ([`api`]): content type, JSON, Brevo's validation
//!    ([`validate`]), then the effect on the simulated account ([`account`]).
//!
//! Every response to a `/v3` request carries the `x-sib-ratelimit-*` headers
//! of its class (when the class is limited) and is recorded. The `/_sim/*`
//! control endpoints are neither authenticated, limited nor recorded.

pub mod account;
pub mod api;
pub mod faults;
pub mod limits;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use account::{AttributeType, Contact, IgnoredAttribute, ImportReport};
pub use api::AcceptedEvent;
pub use faults::{Fault, FaultKind};
pub use limits::{Budget, EndpointClass, Plan, RateLimits};

use account::Account;
use api::Reply;
use faults::{FaultQueue, FaultSpec};
use limits::{Admission, ClassLimiter, RateHeaders};

/// The simulator's time source. Rate limits and recorded times are offsets
/// from the simulator's start on this clock.
#[derive(Debug, Clone)]
pub struct SimClock(Arc<ClockSource>);

#[derive(Debug)]
enum ClockSource {
    /// `tokio::time::Instant`: real time, or paused time under tokio's
    /// `test-util` (`tokio::time::pause()`).
    Tokio(tokio::time::Instant),
    /// Moves only when told to ([`SimClock::advance`]): rate-limit tests
    /// without sleeping and without pausing the runtime's I/O timers.
    Manual(Mutex<Duration>),
}

impl SimClock {
    pub fn real() -> SimClock {
        SimClock(Arc::new(ClockSource::Tokio(tokio::time::Instant::now())))
    }

    pub fn manual() -> SimClock {
        SimClock(Arc::new(ClockSource::Manual(Mutex::new(Duration::ZERO))))
    }

    /// Time since the clock was created.
    pub fn now(&self) -> Duration {
        match &*self.0 {
            ClockSource::Tokio(origin) => origin.elapsed(),
            ClockSource::Manual(t) => *lock(t),
        }
    }

    /// Move a manual clock forward; `false` (and no effect) on a real one.
    pub fn advance(&self, by: Duration) -> bool {
        match &*self.0 {
            ClockSource::Tokio(_) => false,
            ClockSource::Manual(t) => {
                *lock(t) += by;
                true
            }
        }
    }
}

/// A poisoned lock only means a panic elsewhere in a test; the data is
/// still the best record of what happened.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The only `api-key` header value accepted.
    pub api_key: String,
    /// Where to listen; port 0 picks a free one (the default, 127.0.0.1:0).
    pub listen: SocketAddr,
    /// Budgets per endpoint class (default: the general plan).
    pub limits: RateLimits,
    /// Lists that exist in the account, by id (default: ids 1–10).
    pub lists: BTreeMap<u64, String>,
    /// Contact attributes that exist in the account (default:
    /// [`account::default_attributes`]); values for others are ignored.
    pub attributes: BTreeMap<String, AttributeType>,
    pub clock: SimClock,
    /// Whether an event whose identifiers match no contact creates one
    /// (default true; Brevo's behaviour here is undocumented).
    pub events_create_contacts: bool,
    /// Cap on `POST /v3/contacts/batch` (Brevo documents none; default none).
    pub contacts_batch_max: Option<usize>,
}

impl SimConfig {
    pub fn new(api_key: impl Into<String>) -> SimConfig {
        SimConfig {
            api_key: api_key.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            limits: RateLimits::for_plan(Plan::General),
            lists: (1..=10).map(|i| (i, format!("List {i}"))).collect(),
            attributes: account::default_attributes(),
            clock: SimClock::real(),
            events_create_contacts: true,
            contacts_batch_max: None,
        }
    }

    pub fn plan(mut self, plan: Plan) -> SimConfig {
        self.limits = RateLimits::for_plan(plan);
        self
    }

    pub fn limits(mut self, limits: RateLimits) -> SimConfig {
        self.limits = limits;
        self
    }

    pub fn listen(mut self, addr: SocketAddr) -> SimConfig {
        self.listen = addr;
        self
    }

    pub fn clock(mut self, clock: SimClock) -> SimConfig {
        self.clock = clock;
        self
    }
}

/// One request the simulator received on `/v3`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    /// Arrival order, from 1.
    pub seq: u64,
    /// Arrival time on the simulator clock, in microseconds since start.
    pub at_us: u64,
    pub method: String,
    /// Path without the query string, e.g. `/v3/events/batch`.
    pub path: String,
    pub query: Option<String>,
    pub class: EndpointClass,
    /// The status returned.
    pub status: u16,
    /// Request body as received (lossy UTF-8).
    pub body: String,
    /// Response body as sent (empty for 201/204 without content).
    pub response: String,
    /// The injected fault that shaped this response, if any.
    pub fault: Option<String>,
}

impl RecordedRequest {
    pub fn at(&self) -> Duration {
        Duration::from_micros(self.at_us)
    }

    /// The request body as JSON (`Value::Null` if it was not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Counts over one endpoint class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClassStats {
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Most requests received (whatever their answer) in any 1-second window
    /// `[t, t+1s)`: compare with the per-second budget.
    pub max_in_any_second: usize,
    /// Same over any one-hour window.
    pub max_in_any_hour: usize,
}

/// A summary of the recording.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub classes: BTreeMap<EndpointClass, ClassStats>,
    pub accepted_events: u64,
    pub contacts: u64,
    /// Attribute values the account dropped (see [`IgnoredAttribute`]).
    pub ignored_attributes: BTreeMap<String, IgnoredAttribute>,
}

impl Stats {
    /// Requests answered with `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    pub fn class(&self, class: EndpointClass) -> ClassStats {
        self.classes.get(&class).cloned().unwrap_or_default()
    }
}

/// Everything mutable, behind one lock (never held across an await).
struct Inner {
    limiters: BTreeMap<EndpointClass, ClassLimiter>,
    faults: FaultQueue,
    account: Account,
    accepted: Vec<AcceptedEvent>,
    requests: Vec<RecordedRequest>,
    next_seq: u64,
}

struct Shared {
    api_key: String,
    clock: SimClock,
    events_create_contacts: bool,
    contacts_batch_max: Option<usize>,
    state: Mutex<Inner>,
}

impl Shared {
    fn new(cfg: SimConfig) -> Shared {
        let limiters = EndpointClass::ALL.into_iter().map(|c| (c, ClassLimiter::new(cfg.limits.budget(c)))).collect();
        Shared {
            api_key: cfg.api_key,
            clock: cfg.clock,
            events_create_contacts: cfg.events_create_contacts,
            contacts_batch_max: cfg.contacts_batch_max,
            state: Mutex::new(Inner {
                limiters,
                faults: FaultQueue::default(),
                account: Account::new(cfg.lists, cfg.attributes),
                accepted: Vec::new(),
                requests: Vec::new(),
                next_seq: 1,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, Inner> {
        lock(&self.state)
    }

    fn recorded(&self) -> Vec<RecordedRequest> {
        let mut r = self.state().requests.clone();
        r.sort_by_key(|r| r.seq);
        r
    }

    fn stats(&self) -> Stats {
        let requests = self.recorded();
        let st = self.state();
        let mut stats = Stats {
            requests: requests.len() as u64,
            accepted_events: st.accepted.len() as u64,
            contacts: st.account.contacts().len() as u64,
            ignored_attributes: st.account.ignored_attributes.clone(),
            ..Stats::default()
        };
        for class in EndpointClass::ALL {
            let mine: Vec<&RecordedRequest> = requests.iter().filter(|r| r.class == class).collect();
            let times: Vec<Duration> = mine.iter().map(|r| r.at()).collect();
            let mut cs = ClassStats {
                requests: mine.len() as u64,
                max_in_any_second: limits::max_in_any_window(&times, Duration::from_secs(1)),
                max_in_any_hour: limits::max_in_any_window(&times, Duration::from_secs(3600)),
                ..ClassStats::default()
            };
            for r in &mine {
                *cs.by_status.entry(r.status).or_default() += 1;
                *stats.by_status.entry(r.status).or_default() += 1;
            }
            stats.classes.insert(class, cs);
        }
        stats
    }

    fn snapshot_json(&self) -> Value {
        let requests = self.recorded();
        let stats = self.stats();
        let st = self.state();
        json!({
            "requests": requests,
            "accepted_events": st.accepted,
            "contacts": st.account.contacts(),
            "lists": st.account.lists,
            "imports": st.account.imports,
            "pending_faults": st.faults.pending(),
            "stats": stats,
        })
    }
}

/// A response on its way out: status, body, headers, and what to record.
struct Outcome {
    reply: Reply,
    rate: Option<RateHeaders>,
    retry_after: Option<u64>,
    fault: Option<String>,
}

impl Outcome {
    fn plain(reply: Reply, rate: Option<RateHeaders>) -> Outcome {
        Outcome { reply, rate, retry_after: None, fault: None }
    }
}

fn unauthorized() -> Reply {
    Reply::error(StatusCode::UNAUTHORIZED, "unauthorized", "Key not found")
}

async fn serve_brevo(
    State(sim): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A client that gives up (timeout, reset) drops this future; the request
    // must still run to completion and be recorded, as it would at Brevo.
    let task = tokio::spawn(handle_brevo(sim, method, uri, headers, body));
    match task.await {
        Ok(resp) => resp,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn handle_brevo(sim: Arc<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let class = EndpointClass::of_path(&path);
    let (seq, at) = {
        let mut st = sim.state();
        let seq = st.next_seq;
        st.next_seq += 1;
        (seq, sim.clock.now())
    };
    let outcome = process(&sim, seq, class, &method, &uri, &headers, &body).await;

    let response_body = outcome.reply.body.as_ref().map(Value::to_string).unwrap_or_default();
    sim.state().requests.push(RecordedRequest {
        seq,
        at_us: at.as_micros() as u64,
        method: method.to_string(),
        path,
        query: uri.query().map(str::to_string),
        class,
        status: outcome.reply.status.as_u16(),
        body: String::from_utf8_lossy(&body).into_owned(),
        response: response_body.clone(),
        fault: outcome.fault.clone(),
    });

    let mut resp = match outcome.reply.body {
        Some(_) => {
            (outcome.reply.status, [("content-type", "application/json; charset=utf-8")], response_body).into_response()
        }
        None => outcome.reply.status.into_response(),
    };
    let h = resp.headers_mut();
    if let Some(rate) = outcome.rate {
        h.insert("x-sib-ratelimit-limit", HeaderValue::from(rate.limit));
        h.insert("x-sib-ratelimit-remaining", HeaderValue::from(rate.remaining));
        h.insert("x-sib-ratelimit-reset", HeaderValue::from(rate.reset_secs));
    }
    if let Some(secs) = outcome.retry_after {
        h.insert("retry-after", HeaderValue::from(secs));
    }
    resp
}

async fn process(
    sim: &Shared,
    seq: u64,
    class: EndpointClass,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome {
    let key_ok = headers.get("api-key").and_then(|v| v.to_str().ok()) == Some(sim.api_key.as_str());
    if !key_ok {
        let rate = sim.state().limiters.get_mut(&class).and_then(|l| l.headers(sim.clock.now()));
        return Outcome::plain(unauthorized(), rate);
    }

    let batch_events = method == Method::POST && uri.path() == "/v3/events/batch";
    let fault = sim.state().faults.take(class, batch_events);
    let label = fault.as_ref().map(Fault::label);
    let mut forced_failures = Vec::new();
    if let Some(f) = fault {
        let now = sim.clock.now();
        let rate = sim.state().limiters.get_mut(&class).and_then(|l| l.headers(now));
        let answer = |reply: Reply, rate: Option<RateHeaders>, retry_after: Option<u64>| Outcome {
            reply,
            rate,
            retry_after,
            fault: label.clone(),
        };
        match f.kind {
            FaultKind::ServerError { status } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                // Brevo's 5xx body is undocumented; clients must not rely on it.
                let reply = Reply::error(status, "internal_error", "Simulated server error (injected fault)");
                return answer(reply, rate, None);
            }
            FaultKind::RateLimited { retry_after_secs } => {
                let rate = rate.map(|r| RateHeaders { remaining: 0, reset_secs: retry_after_secs, ..r });
                let reply = Reply::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "Too many requests (injected fault)",
                );
                return answer(reply, rate, Some(retry_after_secs));
            }
            FaultKind::Unauthorized => return answer(unauthorized(), rate, None),
            FaultKind::Delay { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            FaultKind::Stall { ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let reply = Reply::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "internal_error",
                    "Simulated upstream timeout (injected fault)",
                );
                return answer(reply, rate, None);
            }
            FaultKind::PartialFailure { event_indexes } => forced_failures = event_indexes,
        }
    }

    let mut st = sim.state();
    let st = &mut *st;
    let admission = match st.limiters.get_mut(&class) {
        Some(l) => l.admit(sim.clock.now()),
        None => Admission::Admitted(None),
    };
    let rate = match admission {
        Admission::Admitted(rate) => rate,
        Admission::Limited { headers, retry_after_secs, window, limit } => {
            // Brevo's 429 body is unverified (CONTRACTS §5): `{code, message}`.
            let per = if window == "second" { "per second" } else { "per hour" };
            let reply = Reply::error(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("The rate limit of {limit} requests {per} for {} endpoints has been exceeded", class.as_str()),
            );
            return Outcome { reply, rate: headers, retry_after: Some(retry_after_secs), fault: label };
        }
    };
    let cx = api::Ctx {
        account: &mut st.account,
        events: &mut st.accepted,
        seq,
        forced_failures: &forced_failures,
        events_create_contacts: sim.events_create_contacts,
        contacts_batch_max: sim.contacts_batch_max,
    };
    let reply = api::dispatch(method, uri.path(), uri.query(), headers, body, cx);
    Outcome { reply, rate, retry_after: None, fault: label }
}

// ---------------------------------------------------------------- control API

async fn add_faults(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed: Result<Vec<FaultSpec>, String> = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => {
            items.into_iter().map(|i| serde_json::from_value(i).map_err(|e| e.to_string())).collect()
        }
        Ok(one) => serde_json::from_value(one).map(|f| vec![f]).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let faults: Result<Vec<Fault>, String> = parsed.and_then(|specs| specs.into_iter().map(Fault::try_from).collect());
    match faults {
        Ok(fs) => {
            let mut st = sim.state();
            for f in fs {
                st.faults.push(f);
            }
            Json(json!({"pending": st.faults.pending()})).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

async fn list_faults(State(sim): State<Arc<Shared>>) -> Response {
    Json(json!({"pending": sim.state().faults.pending()})).into_response()
}

async fn clear_faults(State(sim): State<Arc<Shared>>) -> StatusCode {
    sim.state().faults.clear();
    StatusCode::NO_CONTENT
}

async fn recorded_json(State(sim): State<Arc<Shared>>) -> Response {
    Json(sim.snapshot_json()).into_response()
}

async fn stats_json(State(sim): State<Arc<Shared>>) -> Response {
    Json(sim.stats()).into_response()
}

async fn advance_clock(State(sim): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let Some(ms) = body.get("ms").and_then(Value::as_u64) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "body must be {\"ms\": <integer>}"}))).into_response();
    };
    if sim.clock.advance(Duration::from_millis(ms)) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::CONFLICT, Json(json!({"error": "the simulator runs on the real clock"}))).into_response()
    }
}

/// Brevo bodies are capped by the endpoints themselves (512 KB for batches,
/// 10 MB for imports) so they can answer in Brevo's error model; this outer
/// cap only protects the process.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

fn router(sim: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sim/faults", post(add_faults).get(list_faults).delete(clear_faults))
        .route("/_sim/recorded", get(recorded_json))
        .route("/_sim/stats", get(stats_json))
        .route("/_sim/clock/advance", post(advance_clock))
        .fallback(serve_brevo)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(sim)
}

// ---------------------------------------------------------------- handle

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Start a simulator on `cfg.listen` (default `127.0.0.1:0`).
pub async fn start(cfg: SimConfig) -> anyhow::Result<SimHandle> {
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(cfg));
    let app = router(shared.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(SimHandle { addr, shared, stop: Some(stop), task: Some(task) })
}

impl SimHandle {
    /// The API root to configure a client with, e.g. `http://127.0.0.1:PORT/v3`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v3", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queue a fault for the next matching requests.
    pub fn inject(&self, fault: Fault) {
        self.shared.state().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }

    /// Faults not yet (fully) consumed.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.shared.state().faults.pending()
    }

    /// Every `/v3` request answered so far, in arrival order.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.shared.recorded()
    }

    /// How many requests of `class` were answered so far: a cheap poll for
    /// waiting loops (it copies nothing).
    pub fn request_count(&self, class: EndpointClass) -> usize {
        self.shared.state().requests.iter().filter(|r| r.class == class).count()
    }

    /// Every event accepted (202/207/204), in acceptance order.
    pub fn accepted_events(&self) -> Vec<AcceptedEvent> {
        self.shared.state().accepted.clone()
    }

    /// The account's contacts, by id.
    pub fn contacts(&self) -> Vec<Contact> {
        self.shared.state().account.contacts()
    }

    /// The contact owning this email (case-insensitive).
    pub fn contact_by_email(&self, email: &str) -> Option<Contact> {
        let st = self.shared.state();
        st.account.find(account::Ident::Email(email)).and_then(|id| st.account.get(id).cloned())
    }

    /// The contact with this `ext_id`.
    pub fn contact_by_ext_id(&self, ext_id: &str) -> Option<Contact> {
        let st = self.shared.state();
        st.account.find(account::Ident::ExtId(ext_id)).and_then(|id| st.account.get(id).cloned())
    }

    /// Lists in the account, by id.
    pub fn lists(&self) -> BTreeMap<u64, String> {
        self.shared.state().account.lists.clone()
    }

    /// Contact ids on a list.
    pub fn list_members(&self, list: u64) -> BTreeSet<u64> {
        self.shared.state().account.members(list).into_iter().collect()
    }

    /// Attributes in the account.
    pub fn attributes(&self) -> BTreeMap<String, AttributeType> {
        self.shared.state().account.attributes.clone()
    }

    /// What each `POST /v3/contacts/import` did.
    pub fn imports(&self) -> Vec<ImportReport> {
        self.shared.state().account.imports.clone()
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Forget recorded requests and accepted events (account state, budgets
    /// and faults stay): to assert on one phase of a test.
    pub fn clear_recording(&self) {
        let mut st = self.shared.state();
        st.requests.clear();
        st.accepted.clear();
    }

    /// Poll (every 10 ms, real time) until `done` holds or `within` passes;
    /// returns whether it held. For tests whose client runs in the background.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&SimHandle) -> bool) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if done(self) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The simulator's clock (advance it when built with [`SimClock::manual`]).
    pub fn clock(&self) -> SimClock {
        self.shared.clock.clone()
    }

    /// Stop accepting connections and wait for in-flight requests.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.context("simulator task panicked")?.context("simulator server")?;
        }
        Ok(())
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Run a simulator until SIGINT/SIGTERM (the `sluice brevo-sim` command).
pub async fn run(cfg: SimConfig) -> anyhow::Result<()> {
    let limits = cfg.limits;
    let sim = start(cfg).await?;
    tracing::info!(
        base_url = %sim.base_url(),
        control = %format!("http://{}/_sim/recorded", sim.addr()),
        limits = ?limits,
        "Brevo simulator listening"
    );
    crate::shutdown_signal().await;
    tracing::info!("Brevo simulator stopping");
    sim.stop().await
}
