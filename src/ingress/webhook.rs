//! Signed webhooks: `POST /webhooks/{name}` for each `connectors.webhooks`
//! source, signed with `Stripe-Signature` or Standard Webhooks headers.
//!
//! One request carries one event. In order:
//! 1. find the source (unknown name → 404) and read the body within its
//!    `max_body_bytes` (413);
//! 2. verify the signature over the exact bytes received, before any JSON
//!    parsing ([`signature::verify`]): a missing or malformed header → 400, no
//!    signature matching any configured secret or a timestamp out of tolerance
//!    → 401, the body saying which of the two (never which secret);
//! 3. parse and normalize into one [`Event`];
//! 4. an event id already published within the source's `dedup_window_secs`
//!    is answered 200 `{"status":"duplicate"}` and not published again;
//!    otherwise publish, and answer 200 `{"status":"ok"}` only once the bus
//!    acknowledged. The id is remembered only after that, so a refused
//!    publish (503) is retried by the sender and not mistaken for a duplicate.
//!
//! Every refusal goes through [`refuse`] and is counted by reason
//! (`unknown_source`, `too_large`, `missing_signature`, `malformed_signature`,
//! `bad_signature`, `timestamp_out_of_tolerance`, `invalid_payload`,
//! `missing_event_type`, `invalid_event_id`, `bus_unavailable`).
//!
//! ## Deduplication
//! Ids are the Stripe event `id` and the Standard `webhook-id` header. Each
//! source has its own [`DedupStore`] (bounded by `dedup_max_entries`),
//! persisted beside the embedded log and in memory only over Kafka. Two
//! deliveries of one id racing each other, or landing on different ingress
//! replicas, can both be published; the forwarder's envelope-id dedup (the
//! envelope id is the event id) suppresses the second.
//!
//! ## Normalization
//! Every event: `kind: webhook`, `source: webhook`, `source_name` and
//! `project` = the source name, `context.extra.signed_at` = the signed
//! timestamp (Unix seconds).
//!
//! Stripe (`data.object` is the object the event is about):
//! * `id` = event `id`, `name` = event `type`, `timestamp` = `created` (Unix
//!   seconds, or RFC 3339 text for v2 events), else the signed `t`.
//! * `email`: the first non-empty of `customer_email`, `receipt_email`,
//!   `billing_details.email`, `email`, `customer_details.email`.
//! * `distinct_id`: the Stripe customer id: `customer` (an id, or an
//!   expanded object's `id`), or the object's own `id` when it is a customer.
//! * `user_properties.set.name`: `customer_name`, `billing_details.name`,
//!   `customer_details.name`, or a customer's `name`, when present.
//! * `revenue` for invoice, charge, payment_intent and checkout.session
//!   objects: `amount_minor` = `total` (invoice), `amount` (charge,
//!   payment_intent) or `amount_total` (checkout.session), `currency` as sent,
//!   and `amount` in major units: minor / 100, except Stripe's zero-decimal
//!   currencies (bif, clp, djf, gnf, jpy, kmf, krw, mga, pyg, rwf, ugx, vnd,
//!   vuv, xaf, xof, xpf: minor = major) and three-decimal ones (bhd, jod,
//!   kwd, omr, tnd: / 1000). isk, huf and twd are two-decimal in Stripe's API.
//! * `properties` (bounded, flat): `livemode`, `api_version`, `account`,
//!   `object_id`, `object_type`, `status`, `billing_reason`, `mode`,
//!   `payment_status`, `subscription`, `invoice`, `payment_intent`, and up to
//!   [`MAX_METADATA`] entries of the object's `metadata` as `metadata_<key>`.
//!
//! Standard Webhooks (JSON pointers from `pointers`, see the config):
//! * `name` at `pointers.type` (default `/type`; required, else 400).
//! * `id` at `pointers.id` when set and usable, else `webhook-id`.
//! * `timestamp` at `pointers.timestamp` (default `/timestamp`: RFC 3339 or
//!   Unix seconds), else `webhook-timestamp`.
//! * `email` at `pointers.email` (default `/data/email`), `distinct_id` at
//!   `pointers.distinct_id` (text or number; unset by default).
//! * `properties`: the scalar (string, number, boolean) members of `data` when
//!   it is an object, else of the top-level object; at most
//!   [`MAX_PROPERTIES`], strings of at most [`MAX_PROPERTY_CHARS`] characters.
//!   `context.extra.webhook_id` keeps the `webhook-id`.
//!
//! A body that is not a JSON object, after a valid signature, is refused
//! with 400 `invalid_payload`: Sluice relays events, not opaque payloads.

pub mod signature;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tracing::Instrument;

use super::{publish, refuse, AppState, Dialect, IngressError, RawRequest};
use crate::config::{Config, WebhookPointers, WebhookScheme};
use crate::dedup::DedupStore;
use crate::event::{Event, Kind, Revenue, Source};
use signature::{SignatureError, SigningKey, Verified};

const SOURCE: &str = "webhook";

/// Longest event id accepted from a body: it becomes a dedup key and the
/// envelope id.
pub const MAX_EVENT_ID_LEN: usize = 256;
/// Bound on `properties` taken from a Standard Webhooks body.
pub const MAX_PROPERTIES: usize = 50;
/// Bound on Stripe `metadata` entries copied into `properties` (Stripe
/// itself allows 50 keys).
pub const MAX_METADATA: usize = 20;
/// Longer string values are left out of `properties`.
pub const MAX_PROPERTY_CHARS: usize = 1024;

/// Every configured webhook source, by name.
pub struct WebhookState {
    sources: HashMap<String, Arc<SignedSource>>,
}

/// One configured source, ready to verify and normalize.
struct SignedSource {
    name: String,
    scheme: WebhookScheme,
    /// Every configured secret: a signature matching any of them is accepted,
    /// which is what makes rotation zero-downtime.
    keys: Vec<SigningKey>,
    tolerance_secs: u64,
    max_body_bytes: usize,
    pointers: WebhookPointers,
    /// Event ids published within the source's window.
    published: DedupStore,
}

impl WebhookState {
    /// Prepare every source's keys and dedup store; `data_dir` persists the
    /// stores (embedded bus), `None` keeps them in memory.
    pub fn new(cfg: &Config, data_dir: Option<&Path>) -> anyhow::Result<WebhookState> {
        let mut sources = HashMap::new();
        for (i, w) in cfg.connectors.webhooks.iter().enumerate() {
            let keys = w
                .secrets
                .iter()
                .enumerate()
                .map(|(j, s)| {
                    SigningKey::new(w.scheme, s.expose())
                        .map_err(|e| anyhow::anyhow!("connectors.webhooks[{i}].secrets[{j}]: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let published = DedupStore::open(
                format!("webhook_{}", w.name),
                Duration::from_secs(w.dedup_window_secs),
                w.dedup_max_entries,
                data_dir,
            )
            .map_err(|e| anyhow::anyhow!("opening the dedup store of webhook source {:?}: {e:#}", w.name))?;
            let source = SignedSource {
                name: w.name.clone(),
                scheme: w.scheme,
                keys,
                tolerance_secs: w.tolerance_secs,
                max_body_bytes: w.max_body_bytes,
                pointers: w.pointers.clone(),
                published,
            };
            sources.insert(w.name.clone(), Arc::new(source));
        }
        Ok(WebhookState { sources })
    }
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/webhooks/{name}", post(receive)).route("/webhooks/{name}/", post(receive))
}

async fn receive(State(state): State<AppState>, req: Request) -> Response {
    // Taken from the path itself so that even an undecodable name is refused
    // through `refuse` (and counted) rather than by an extractor.
    let name = req.uri().path().strip_prefix("/webhooks/").unwrap_or_default().trim_end_matches('/').to_string();
    let Some(source) = state.webhooks.sources.get(&name).cloned() else {
        return refuse(SOURCE, Dialect::Webhook, IngressError::UnknownSource, 1);
    };
    let span = tracing::info_span!("webhook", source = %source.name);
    async move {
        let raw = match RawRequest::read(req, source.max_body_bytes).await {
            Ok(raw) => raw,
            Err(e) => return refuse(SOURCE, Dialect::Webhook, e, 1),
        };
        match deliver(&state, &source, &raw).await {
            Ok(resp) => resp,
            Err(e) => refuse(SOURCE, Dialect::Webhook, e, 1),
        }
    }
    .instrument(span)
    .await
}

/// Verify, normalize, dedup, publish.
async fn deliver(state: &AppState, source: &SignedSource, raw: &RawRequest) -> Result<Response, IngressError> {
    let now = state.clock.now();
    let verified =
        signature::verify(source.scheme, &raw.headers, &raw.body, &source.keys, source.tolerance_secs, now.timestamp())
            .map_err(refusal)?;
    state.meters.request_size(SOURCE, raw.body.len(), 1);
    let body: Value =
        serde_json::from_slice(&raw.body).map_err(|e| invalid_payload(format!("the signed body is not JSON: {e}")))?;
    let (event, dedup_key) = match source.scheme {
        WebhookScheme::Stripe => {
            let ev = normalize_stripe(source, &body, verified.timestamp, now)?;
            let key = ev.id.clone();
            (ev, key)
        }
        WebhookScheme::Standard => {
            let ev = normalize_standard(source, &body, &verified, now)?;
            // `verify` always returns the id for this scheme; an empty key
            // would make every later event a "duplicate".
            let key = verified.message_id.filter(|id| !id.is_empty());
            (ev, key.ok_or_else(|| IngressError::Internal("verified standard webhook without an id".into()))?)
        }
    };
    if source.published.seen(&dedup_key) {
        tracing::debug!(id = %dedup_key, "redelivery of a published event");
        return Ok(answer("duplicate", &event.id));
    }
    let id = event.id.clone();
    publish(state, SOURCE, vec![event]).await?;
    source.published.remember([dedup_key.as_str()]);
    Ok(answer("ok", &id))
}

fn answer(status: &str, id: &str) -> Response {
    axum::Json(json!({"status": status, "id": id})).into_response()
}

fn refusal(e: SignatureError) -> IngressError {
    let (code, message) = (e.reason(), e.to_string());
    if e.is_unauthorized() {
        IngressError::Unauthorized { code, message }
    } else {
        IngressError::Malformed { code, message }
    }
}

fn invalid_payload(message: String) -> IngressError {
    IngressError::Malformed { code: "invalid_payload", message }
}

fn missing_event_type(message: String) -> IngressError {
    IngressError::Malformed { code: "missing_event_type", message }
}

fn new_event(source: &SignedSource, name: &str, id: String, now: DateTime<Utc>, signed_at: i64) -> Event {
    let mut ev = Event::new(Source::Webhook, &source.name, &source.name, Kind::Webhook, name, now);
    ev.id = id;
    ev.timestamp = DateTime::from_timestamp(signed_at, 0).unwrap_or(now);
    ev.context.extra.insert("signed_at".into(), Value::from(signed_at));
    ev
}

// ---- Stripe ----

/// Where Stripe objects keep an email, most specific first.
const STRIPE_EMAIL: [&str; 5] =
    ["/customer_email", "/receipt_email", "/billing_details/email", "/email", "/customer_details/email"];
const STRIPE_NAME: [&str; 3] = ["/customer_name", "/billing_details/name", "/customer_details/name"];
/// Object fields copied into `properties` as they are (scalars) or by id
/// (expandable references).
const STRIPE_SCALARS: [&str; 4] = ["status", "billing_reason", "mode", "payment_status"];
const STRIPE_REFERENCES: [&str; 3] = ["subscription", "invoice", "payment_intent"];

fn normalize_stripe(
    source: &SignedSource,
    body: &Value,
    signed_at: i64,
    now: DateTime<Utc>,
) -> Result<Event, IngressError> {
    if !body.is_object() {
        return Err(invalid_payload("a Stripe event is a JSON object".into()));
    }
    let id =
        body.get("id").and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= MAX_EVENT_ID_LEN).ok_or_else(
            || IngressError::Malformed {
                code: "invalid_event_id",
                message: format!("a Stripe event needs an \"id\" string of 1 to {MAX_EVENT_ID_LEN} bytes"),
            },
        )?;
    let name = non_empty_str(body.get("type"))
        .ok_or_else(|| missing_event_type("a Stripe event needs a \"type\" string".into()))?;
    let mut ev = new_event(source, name, id.to_string(), now, signed_at);
    if let Some(t) = body.get("created").and_then(time_value) {
        ev.timestamp = t;
    }
    for key in ["livemode", "api_version", "account"] {
        if let Some(v) = body.get(key) {
            put_scalar(&mut ev.properties, key, v);
        }
    }
    let Some(obj) = body.pointer("/data/object").filter(|o| o.is_object()) else {
        return Ok(ev);
    };
    let object_type = obj.get("object").and_then(Value::as_str);
    let is_customer = object_type == Some("customer");
    ev.email = STRIPE_EMAIL.iter().find_map(|p| non_empty_str(obj.pointer(p))).map(str::to_string);
    ev.distinct_id =
        if is_customer { obj.get("id").and_then(stripe_id) } else { obj.get("customer").and_then(stripe_id) };
    let name_at = if is_customer { &["/name"][..] } else { &STRIPE_NAME[..] };
    if let Some(n) = name_at.iter().find_map(|p| non_empty_str(obj.pointer(p))) {
        ev.user_properties.set.insert("name".into(), Value::from(n));
    }
    ev.revenue = stripe_revenue(obj, object_type);
    if let Some(v) = obj.get("id") {
        put_scalar(&mut ev.properties, "object_id", v);
    }
    if let Some(t) = object_type {
        ev.properties.insert("object_type".into(), Value::from(t));
    }
    for key in STRIPE_SCALARS {
        if let Some(v) = obj.get(key) {
            put_scalar(&mut ev.properties, key, v);
        }
    }
    for key in STRIPE_REFERENCES {
        if let Some(id) = obj.get(key).and_then(stripe_id) {
            ev.properties.insert(key.into(), Value::from(id));
        }
    }
    if let Some(Value::Object(meta)) = obj.get("metadata") {
        for (k, v) in meta.iter().take(MAX_METADATA) {
            put_scalar(&mut ev.properties, &format!("metadata_{k}"), v);
        }
    }
    Ok(ev)
}

/// An expandable Stripe reference: the id string, or an expanded object's id.
fn stripe_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => non_empty_str(o.get("id")).map(str::to_string),
        _ => None,
    }
}

fn stripe_revenue(obj: &Value, object_type: Option<&str>) -> Option<Revenue> {
    let fields: &[&str] = match object_type? {
        "invoice" => &["total", "amount_due"],
        "charge" | "payment_intent" => &["amount"],
        "checkout.session" => &["amount_total"],
        _ => return None,
    };
    let minor = fields.iter().find_map(|f| obj.get(*f).and_then(Value::as_i64));
    let currency = non_empty_str(obj.get("currency")).map(str::to_string);
    if minor.is_none() && currency.is_none() {
        return None;
    }
    let amount = match (minor, &currency) {
        (Some(m), Some(c)) => Some(m as f64 / 10f64.powi(minor_unit_exponent(c))),
        _ => None,
    };
    Some(Revenue { amount, amount_minor: minor, currency, ..Revenue::default() })
}

/// Decimal places of a currency's minor unit in Stripe's API.
fn minor_unit_exponent(currency: &str) -> i32 {
    const ZERO: [&str; 16] = [
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    ];
    const THREE: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];
    let c = currency.to_ascii_lowercase();
    if ZERO.contains(&c.as_str()) {
        0
    } else if THREE.contains(&c.as_str()) {
        3
    } else {
        2
    }
}

// ---- Standard Webhooks ----

fn normalize_standard(
    source: &SignedSource,
    body: &Value,
    verified: &Verified,
    now: DateTime<Utc>,
) -> Result<Event, IngressError> {
    if !body.is_object() {
        return Err(invalid_payload("the event is not a JSON object".into()));
    }
    let p = &source.pointers;
    let name = non_empty_str(at(body, &p.r#type)).ok_or_else(|| {
        missing_event_type(format!("no event type (a non-empty string) at JSON pointer {:?}", p.r#type))
    })?;
    let message_id = verified.message_id.clone().unwrap_or_default();
    let id =
        at(body, &p.id).and_then(text).filter(|s| s.len() <= MAX_EVENT_ID_LEN).unwrap_or_else(|| message_id.clone());
    let mut ev = new_event(source, name, id, now, verified.timestamp);
    if let Some(t) = at(body, &p.timestamp).and_then(time_value) {
        ev.timestamp = t;
    }
    ev.email = non_empty_str(at(body, &p.email)).map(str::to_string);
    ev.distinct_id = at(body, &p.distinct_id).and_then(text);
    let members = match body.get("data") {
        Some(Value::Object(data)) => Some(data),
        _ => body.as_object(),
    };
    for (k, v) in members.into_iter().flatten() {
        if ev.properties.len() >= MAX_PROPERTIES {
            break;
        }
        put_scalar(&mut ev.properties, k, v);
    }
    ev.context.extra.insert("webhook_id".into(), Value::from(message_id));
    Ok(ev)
}

/// The value at a configured pointer; an empty pointer is "not configured"
/// (RFC 6901 would read it as the whole document).
fn at<'a>(body: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        None
    } else {
        body.pointer(pointer)
    }
}

// ---- shared value helpers ----

fn non_empty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Ids may be text or numbers; both become text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Unix seconds (integer or fractional) or RFC 3339 text.
fn time_value(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(secs) => DateTime::from_timestamp(secs, 0),
            None => n.as_f64().and_then(|f| DateTime::from_timestamp_millis((f * 1000.0) as i64)),
        },
        Value::String(s) => DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc)),
        _ => None,
    }
}

/// Copy a scalar into `properties`; objects, arrays, nulls and long strings
/// stay out so the envelope stays small and flat.
fn put_scalar(props: &mut Map<String, Value>, key: &str, v: &Value) {
    let keep = match v {
        Value::Bool(_) | Value::Number(_) => true,
        Value::String(s) => s.chars().count() <= MAX_PROPERTY_CHARS,
        _ => false,
    };
    if keep {
        props.insert(key.to_string(), v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryBus;
    use crate::bus::{BusError, Topic};
    use crate::ingress::{router, FixedClock};
    use axum::body::Body;
    use axum::http::{Request as HttpRequest, StatusCode};
    use tower::ServiceExt;

    const NOW: i64 = 1_700_000_000;
    const STRIPE_OLD: &str = "whsec_old_secret";
    const STRIPE_NEW: &str = "whsec_new_secret";
    const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn config() -> Config {
        let yaml = format!(
            r#"
connectors:
  webhooks:
    - name: stripe
      scheme: stripe
      secrets: ["{STRIPE_OLD}", "{STRIPE_NEW}"]
      max_body_bytes: 4096
    - name: svix
      scheme: standard
      secrets: ["{STD_SECRET}"]
    - name: custom
      scheme: standard
      secrets: ["{STD_SECRET}"]
      pointers: {{type: /event/name, id: /event/uuid, timestamp: /event/at, email: /user/mail, distinct_id: /user/id}}
"#
        );
        Config::from_yaml(&yaml, "t.yaml", &|_| None).unwrap()
    }

    struct App {
        router: Router,
        bus: MemoryBus,
    }

    fn app_in(dir: Option<&Path>) -> App {
        let bus = MemoryBus::new();
        let clock = FixedClock(DateTime::from_timestamp(NOW, 0).unwrap());
        let state = AppState::new(Arc::new(config()), Arc::new(bus.clone()), Arc::new(clock), None, dir).unwrap();
        App { router: router(state), bus }
    }

    fn app() -> App {
        app_in(None)
    }

    impl App {
        async fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> (StatusCode, Value) {
            let mut req = HttpRequest::post(path);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let resp = self.router.clone().oneshot(req.body(Body::from(body.to_vec())).unwrap()).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        }

        fn published(&self) -> Vec<Event> {
            self.bus.records(Topic::Events).iter().map(|r| Event::from_payload(&r.payload).unwrap()).collect()
        }
    }

    fn stripe_sig(secret: &str, t: i64, body: &[u8]) -> Vec<(&'static str, String)> {
        let key = SigningKey::new(WebhookScheme::Stripe, secret).unwrap();
        vec![("Stripe-Signature", key.stripe_header(t, body))]
    }

    fn std_sig(id: &str, t: i64, body: &[u8]) -> Vec<(&'static str, String)> {
        let key = SigningKey::new(WebhookScheme::Standard, STD_SECRET).unwrap();
        vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", t.to_string()),
            ("webhook-signature", key.standard_signature(id, t, body)),
        ]
    }

    fn invoice_paid(id: &str) -> Vec<u8> {
        json!({
            "id": id, "object": "event", "type": "invoice.paid", "created": 1_699_999_000,
            "livemode": false, "api_version": "2024-06-20", "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "data": {"object": {
                "id": "in_1", "object": "invoice", "customer": "cus_42", "customer_email": "ada@example.com",
                "customer_name": "Ada Lovelace", "total": 1234, "amount_due": 1234, "amount_paid": 1234,
                "currency": "eur", "status": "paid", "billing_reason": "subscription_cycle",
                "subscription": "sub_9", "payment_intent": {"id": "pi_3", "object": "payment_intent"},
                "lines": {"object": "list", "data": [{"id": "il_1"}]},
                "metadata": {"plan": "pro", "seats": "5"}
            }}
        })
        .to_string()
        .into_bytes()
    }

    #[tokio::test]
    async fn stripe_invoice_paid_is_normalized() {
        let app = app();
        let body = invoice_paid("evt_1");
        let (status, resp) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_NEW, NOW, &body), &body).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        assert_eq!(resp, json!({"status": "ok", "id": "evt_1"}));
        let events = app.published();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.kind, e.source), (Kind::Webhook, Source::Webhook));
        assert_eq!((e.source_name.as_str(), e.project.as_str()), ("stripe", "stripe"));
        assert_eq!((e.id.as_str(), e.name.as_str()), ("evt_1", "invoice.paid"));
        assert_eq!(e.timestamp, DateTime::from_timestamp(1_699_999_000, 0).unwrap());
        assert_eq!(e.received_at, DateTime::from_timestamp(NOW, 0).unwrap());
        assert_eq!(e.email.as_deref(), Some("ada@example.com"));
        assert_eq!(e.distinct_id.as_deref(), Some("cus_42"));
        assert_eq!(e.user_properties.set.get("name"), Some(&json!("Ada Lovelace")));
        let rev = e.revenue.as_ref().unwrap();
        assert_eq!((rev.amount, rev.amount_minor, rev.currency.as_deref()), (Some(12.34), Some(1234), Some("eur")));
        assert_eq!(
            Value::Object(e.properties.clone()),
            json!({
                "livemode": false, "api_version": "2024-06-20", "object_id": "in_1", "object_type": "invoice",
                "status": "paid", "billing_reason": "subscription_cycle", "subscription": "sub_9",
                "payment_intent": "pi_3", "metadata_plan": "pro", "metadata_seats": "5"
            })
        );
        assert_eq!(e.context.extra.get("signed_at"), Some(&json!(NOW)));
        assert_eq!(e.partition_key(), "stripe:stripe:cus_42");
    }

    #[tokio::test]
    async fn a_trailing_slash_names_the_same_source() {
        let app = app();
        let body = invoice_paid("evt_slash");
        let (status, resp) = app.post("/webhooks/stripe/", &stripe_sig(STRIPE_OLD, NOW, &body), &body).await;
        assert_eq!((status, resp["status"].as_str()), (StatusCode::OK, Some("ok")));
        assert_eq!(app.published()[0].source_name, "stripe");
    }

    #[tokio::test]
    async fn stripe_identity_and_revenue_across_objects() {
        let app = app();
        let cases = [
            // checkout.session: customer_details.email, zero-decimal yen.
            (
                json!({"id": "cs_1", "object": "checkout.session", "customer": null, "amount_total": 5000,
                       "currency": "jpy", "customer_details": {"email": "jp@example.com", "name": "Jun"},
                       "mode": "payment", "payment_status": "paid"}),
                (None, Some("jp@example.com"), Some((5000.0, 5000, "jpy")), Some("Jun")),
            ),
            // charge: billing_details.email, expanded customer, three-decimal dinar.
            (
                json!({"id": "ch_1", "object": "charge", "customer": {"id": "cus_7", "object": "customer"},
                       "amount": 12340, "currency": "kwd", "receipt_email": null,
                       "billing_details": {"email": "kw@example.com", "name": null}}),
                (Some("cus_7"), Some("kw@example.com"), Some((12.34, 12340, "kwd")), None),
            ),
            // payment_intent: receipt_email.
            (
                json!({"id": "pi_1", "object": "payment_intent", "customer": "cus_8", "amount": 999,
                       "currency": "usd", "receipt_email": "us@example.com"}),
                (Some("cus_8"), Some("us@example.com"), Some((9.99, 999, "usd")), None),
            ),
            // A customer is its own distinct_id; no revenue.
            (
                json!({"id": "cus_9", "object": "customer", "email": "c@example.com", "name": "Cy"}),
                (Some("cus_9"), Some("c@example.com"), None, Some("Cy")),
            ),
            // A dispute (charge.dispute.*) carries an amount but is not revenue.
            (json!({"id": "dp_1", "object": "dispute", "amount": 100, "currency": "usd"}), (None, None, None, None)),
        ];
        for (i, (object, (distinct, email, revenue, name))) in cases.into_iter().enumerate() {
            let id = format!("evt_case_{i}");
            let body = json!({"id": id, "object": "event", "type": "x.y", "created": NOW, "data": {"object": object}})
                .to_string()
                .into_bytes();
            let (status, resp) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_OLD, NOW, &body), &body).await;
            assert_eq!(status, StatusCode::OK, "{resp}");
            let e = app.published().pop().unwrap();
            assert_eq!(e.id, id);
            assert_eq!(e.distinct_id.as_deref(), distinct, "case {i}");
            assert_eq!(e.email.as_deref(), email, "case {i}");
            let got =
                e.revenue.as_ref().map(|r| (r.amount.unwrap(), r.amount_minor.unwrap(), r.currency.clone().unwrap()));
            assert_eq!(got, revenue.map(|(a, m, c)| (a, m, c.to_string())), "case {i}");
            assert_eq!(e.user_properties.set.get("name").and_then(Value::as_str), name, "case {i}");
        }
    }

    #[tokio::test]
    async fn redelivery_is_acknowledged_and_not_published_again() {
        let app = app();
        let body = invoice_paid("evt_dup");
        let (s1, r1) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_OLD, NOW, &body), &body).await;
        // Stripe re-signs a retry with a new timestamp (and possibly the new secret).
        let (s2, r2) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_NEW, NOW + 60, &body), &body).await;
        assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
        assert_eq!(r1["status"], "ok");
        assert_eq!(r2, json!({"status": "duplicate", "id": "evt_dup"}));
        assert_eq!(app.published().len(), 1);

        let std_body = br#"{"type":"user.created","data":{"email":"a@b.co"}}"#;
        for t in [NOW, NOW + 5] {
            let (s, _) = app.post("/webhooks/svix", &std_sig("msg_dup", t, std_body), std_body).await;
            assert_eq!(s, StatusCode::OK);
        }
        assert_eq!(app.published().len(), 2, "one Stripe event, one Standard event");
    }

    #[tokio::test]
    async fn no_2xx_before_the_bus_acknowledged_and_a_refused_publish_is_retried() {
        let app = app();
        let body = invoice_paid("evt_retry");
        app.bus.refuse(Some(|| BusError::Unavailable("broker down".into())));
        let (status, resp) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_NEW, NOW, &body), &body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{resp}");
        assert_eq!(resp["code"], "bus_unavailable");
        assert!(app.published().is_empty());
        app.bus.refuse(None);
        let (status, resp) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_NEW, NOW + 30, &body), &body).await;
        assert_eq!((status, resp["status"].as_str()), (StatusCode::OK, Some("ok")), "not mistaken for a duplicate");
        assert_eq!(app.published().len(), 1);
    }

    #[tokio::test]
    async fn refusals_have_the_documented_status_and_reason() {
        let app = app();
        let body = invoice_paid("evt_r");
        let good = stripe_sig(STRIPE_NEW, NOW, &body);
        // (path, headers, body, status, reason code)
        type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, StatusCode, &'a str);
        let cases: Vec<Case> = vec![
            ("/webhooks/nope", good.clone(), body.clone(), StatusCode::NOT_FOUND, "unknown_source"),
            ("/webhooks/stripe", vec![], body.clone(), StatusCode::BAD_REQUEST, "missing_signature"),
            (
                "/webhooks/stripe",
                vec![("Stripe-Signature", "v1=abc".into())],
                body.clone(),
                StatusCode::BAD_REQUEST,
                "malformed_signature",
            ),
            ("/webhooks/stripe", good.clone(), invoice_paid("evt_s"), StatusCode::UNAUTHORIZED, "bad_signature"),
            (
                "/webhooks/stripe",
                stripe_sig(STRIPE_NEW, NOW - 301, &body),
                body.clone(),
                StatusCode::UNAUTHORIZED,
                "timestamp_out_of_tolerance",
            ),
            (
                "/webhooks/stripe",
                stripe_sig(STRIPE_NEW, NOW + 301, &body),
                body.clone(),
                StatusCode::UNAUTHORIZED,
                "timestamp_out_of_tolerance",
            ),
            ("/webhooks/stripe", good.clone(), vec![b' '; 5000], StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ("/webhooks/svix", vec![], b"{}".to_vec(), StatusCode::BAD_REQUEST, "missing_signature"),
        ];
        for (path, headers, body, want_status, want_code) in cases {
            let (status, resp) = app.post(path, &headers, &body).await;
            assert_eq!((status, resp["code"].as_str()), (want_status, Some(want_code)), "{path} {resp}");
            let text = resp.to_string();
            assert!(!text.contains(STRIPE_NEW) && !text.contains(STRIPE_OLD), "{text}");
        }
        assert!(app.published().is_empty());
    }

    #[tokio::test]
    async fn the_401_body_says_which_check_failed() {
        let app = app();
        let body = invoice_paid("evt_w");
        let (_, bad) = app.post("/webhooks/stripe", &stripe_sig("whsec_unknown", NOW, &body), &body).await;
        assert_eq!(bad["type"], "authentication_error");
        assert!(bad["detail"].as_str().unwrap().contains("no v1 signature matches"), "{bad}");
        let (_, stale) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_OLD, NOW - 900, &body), &body).await;
        assert!(stale["detail"].as_str().unwrap().contains("timestamp out of tolerance"), "{stale}");
    }

    #[tokio::test]
    async fn verification_comes_before_parsing() {
        let app = app();
        let junk = b"not json at all";
        let (status, resp) = app.post("/webhooks/stripe", &stripe_sig("whsec_x", NOW, junk), junk).await;
        assert_eq!((status, resp["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("bad_signature")));
        let (status, resp) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_OLD, NOW, junk), junk).await;
        assert_eq!((status, resp["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")));
        // Parsing and re-serializing would change these bytes and break the signature.
        let spaced = b"{ \"id\" : \"evt_sp\",\n \"type\":\"a.b\", \"data\": {\"object\": {}} }";
        let (status, _) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_OLD, NOW, spaced), spaced).await;
        assert_eq!(status, StatusCode::OK);
        let no_id = br#"{"type":"a.b"}"#;
        let (status, resp) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_OLD, NOW, no_id), no_id).await;
        assert_eq!((status, resp["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_event_id")));
    }

    #[tokio::test]
    async fn standard_webhook_with_default_pointers() {
        let app = app();
        let body = br#"{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z","data":{"id":"c_1","email":"x@y.z","plan":"pro","seats":3,"trial":true,"nested":{"a":1},"tags":["a"]}}"#;
        let (status, resp) = app.post("/webhooks/svix", &std_sig("msg_1", NOW, body), body).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        assert_eq!(resp, json!({"status": "ok", "id": "msg_1"}));
        let e = app.published().pop().unwrap();
        assert_eq!((e.id.as_str(), e.name.as_str(), e.source_name.as_str()), ("msg_1", "contact.created", "svix"));
        assert_eq!(e.timestamp, DateTime::parse_from_rfc3339("2022-11-03T20:26:10.344522Z").unwrap());
        assert_eq!(e.email.as_deref(), Some("x@y.z"));
        assert_eq!(e.distinct_id, None);
        assert_eq!(
            Value::Object(e.properties.clone()),
            json!({"id": "c_1", "email": "x@y.z", "plan": "pro", "seats": 3, "trial": true})
        );
        assert_eq!(e.context.extra.get("webhook_id"), Some(&json!("msg_1")));

        // Without a timestamp in the body, the signed one is used.
        let body = br#"{"type":"ping"}"#;
        let (status, _) = app.post("/webhooks/svix", &std_sig("msg_2", NOW - 10, body), body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(app.published().pop().unwrap().timestamp, DateTime::from_timestamp(NOW - 10, 0).unwrap());

        let body = br#"{"data":{"email":"x@y.z"}}"#;
        let (status, resp) = app.post("/webhooks/svix", &std_sig("msg_3", NOW, body), body).await;
        assert_eq!((status, resp["code"].as_str()), (StatusCode::BAD_REQUEST, Some("missing_event_type")));
        let body = b"[1,2]";
        let (status, resp) = app.post("/webhooks/svix", &std_sig("msg_4", NOW, body), body).await;
        assert_eq!((status, resp["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payload")));
    }

    #[tokio::test]
    async fn standard_webhook_with_configured_pointers() {
        let app = app();
        let body = br#"{"event":{"name":"order.placed","uuid":"ord-77","at":1699990000},"user":{"id":12345,"mail":"p@q.r"},"total":10}"#;
        let (status, resp) = app.post("/webhooks/custom", &std_sig("msg_c", NOW, body), body).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        let e = app.published().pop().unwrap();
        assert_eq!((e.id.as_str(), e.name.as_str()), ("ord-77", "order.placed"));
        assert_eq!(e.distinct_id.as_deref(), Some("12345"));
        assert_eq!(e.email.as_deref(), Some("p@q.r"));
        assert_eq!(e.timestamp, DateTime::from_timestamp(1_699_990_000, 0).unwrap());
        assert_eq!(Value::Object(e.properties.clone()), json!({"total": 10}), "no data object: top-level scalars");
        assert_eq!(e.context.extra.get("webhook_id"), Some(&json!("msg_c")));
    }

    #[tokio::test]
    async fn standard_properties_are_bounded() {
        let app = app();
        let mut data = Map::new();
        for i in 0..80 {
            data.insert(format!("k{i:02}"), json!(i));
        }
        data.insert("long".into(), json!("x".repeat(MAX_PROPERTY_CHARS + 1)));
        let body = json!({"type": "big", "data": data}).to_string().into_bytes();
        let (status, _) = app.post("/webhooks/svix", &std_sig("msg_big", NOW, &body), &body).await;
        assert_eq!(status, StatusCode::OK);
        let e = app.published().pop().unwrap();
        assert_eq!(e.properties.len(), MAX_PROPERTIES);
        assert!(!e.properties.contains_key("long"));
    }

    #[tokio::test]
    async fn the_window_survives_a_restart_with_a_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let body = invoice_paid("evt_persist");
        {
            let app = app_in(Some(dir.path()));
            let (s, r) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_OLD, NOW, &body), &body).await;
            assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some("ok")));
        }
        let app = app_in(Some(dir.path()));
        let (s, r) = app.post("/webhooks/stripe", &stripe_sig(STRIPE_OLD, NOW, &body), &body).await;
        assert_eq!((s, r["status"].as_str()), (StatusCode::OK, Some("duplicate")));
        assert!(app.published().is_empty());
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let app = app();
                let body = invoice_paid("evt_m");
                app.post("/webhooks/stripe", &stripe_sig("whsec_x", NOW, &body), &body).await;
                app.post("/webhooks/stripe", &stripe_sig(STRIPE_OLD, NOW - 1000, &body), &body).await;
                app.post("/webhooks/stripe", &[], &body).await;
                app.post("/webhooks/stripe", &[("Stripe-Signature", "t=x".into())], &body).await;
            });
        });
        let text = handle.render();
        for reason in ["bad_signature", "timestamp_out_of_tolerance", "missing_signature", "malformed_signature"] {
            let line = format!("sluice_events_rejected_total{{source=\"webhook\",reason=\"{reason}\"}} 1");
            assert!(text.contains(&line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn minor_units() {
        assert_eq!(minor_unit_exponent("usd"), 2);
        assert_eq!(minor_unit_exponent("JPY"), 0);
        assert_eq!(minor_unit_exponent("tnd"), 3);
        assert_eq!(minor_unit_exponent("isk"), 2);
    }
}
