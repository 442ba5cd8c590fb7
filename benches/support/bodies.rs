//! Request bodies shared by the load generator (`examples/loadgen.rs`) and
//! the allocation report (`benches/envelope.rs`), so both measure the same
//! bytes: a PostHog 10-event batch (~650 bytes per event, posthog-js
//! properties), an Amplitude HTTP V2 batch (Python SDK fields) and a Stripe
//! `invoice.paid` webhook with its `Stripe-Signature`.
//!
//! Bodies are templates: every event carries a fixed-width id slot that
//! [`Template::render`] fills per request, because Sluice deduplicates
//! webhook ids and Amplitude insert_ids, and a load of repeated ids would
//! measure the dedup shortcut instead of the ingress.

#![allow(dead_code)]

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// A body with fixed-width id slots patched per request.
pub struct Template {
    pub bytes: Vec<u8>,
    /// Offsets of 12-hex-digit slots, one per event.
    pub slots: Vec<usize>,
    /// Offsets of [`USER_SLOT`]s: one user per request, the same in each
    /// of its events.
    pub user_slots: Vec<usize>,
    pub events: usize,
}

pub const SLOT: &str = "@@@@@@@@@@@@";

/// A user number of 6 hex digits, filled per request: request `n` is user
/// `n mod 2^24`, so consecutive requests spread over the partitions.
pub const USER_SLOT: &str = "%%%%%%";

/// Write `v`'s low hex digits over all of `dst`, most significant first.
fn hex_into(dst: &mut [u8], v: u64) {
    let width = dst.len();
    for (d, out) in dst.iter_mut().enumerate() {
        *out = b"0123456789abcdef"[((v >> (4 * (width - 1 - d))) & 0xf) as usize];
    }
}

fn offsets(bytes: &[u8], slot: &str) -> Vec<usize> {
    bytes.windows(slot.len()).enumerate().filter(|(_, w)| *w == slot.as_bytes()).map(|(i, _)| i).collect()
}

impl Template {
    pub fn new(text: String, events: usize) -> Template {
        let bytes = text.into_bytes();
        let slots = offsets(&bytes, SLOT);
        assert_eq!(slots.len(), events, "one id slot per event");
        let user_slots = offsets(&bytes, USER_SLOT);
        Template { bytes, slots, user_slots, events }
    }

    /// The body for request number `n`: event `i` gets id digits `n << 8 | i`
    /// (48 bits, unique for 2^40 requests of up to 256 events).
    pub fn render(&self, n: u64) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.bytes.len());
        self.render_into(n, &mut b);
        b
    }

    /// [`Template::render`], appended to `out`.
    pub fn render_into(&self, n: u64, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&self.bytes);
        let b = &mut out[at..];
        for (i, &off) in self.slots.iter().enumerate() {
            hex_into(&mut b[off..off + SLOT.len()], (n << 8) | i as u64);
        }
        for &off in &self.user_slots {
            hex_into(&mut b[off..off + USER_SLOT.len()], n);
        }
    }
}

pub fn rfc3339_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A posthog-js style event, padded to about 650 bytes of JSON.
pub fn posthog_event(run: u16, user: usize, now: &str) -> serde_json::Value {
    json!({
        "event": "$pageview",
        "distinct_id": format!("user-{user:06}"),
        "uuid": format!("0190a5c4-{run:04x}-7000-8000-{SLOT}"),
        "timestamp": now,
        "properties": {
            "$os": "Mac OS X",
            "$browser": "Chrome",
            "$device_type": "Desktop",
            "$current_url": "https://shop.example.com/products/blue-running-shoes?utm_source=newsletter",
            "$host": "shop.example.com",
            "$pathname": "/products/blue-running-shoes",
            "$browser_version": 126,
            "$screen_height": 1080,
            "$screen_width": 1920,
            "$lib": "web",
            "$lib_version": "1.139.0",
            "$insert_id": "k3j4h5g6f7d8s9a0",
            "$time": 1_717_000_000.123,
            "$session_id": "0190a5c4-1111-7000-8000-222222222222",
            "$referrer": "https://mail.example.net/",
            "plan": "pro",
            "cart_value": 129.9,
            "$set": {"email": format!("user-{user:06}@example.com"), "name": "Ada Lovelace"}
        }
    })
}

/// Whose events a PostHog batch carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PosthogUsers {
    /// A server-side SDK's batch: a user per event, the same users in every
    /// request.
    PerEvent,
    /// A browser's (posthog-js): one user per batch, another in each request.
    PerRequest,
}

pub fn posthog_template(token: &str, events: usize, run: u16, users: PosthogUsers) -> Template {
    let now = rfc3339_now();
    let batch: Vec<_> = (0..events)
        .map(|i| {
            let mut e = posthog_event(run, i * 7919 % 100_000, &now);
            if users == PosthogUsers::PerRequest {
                e["distinct_id"] = format!("user-{USER_SLOT}").into();
            }
            e
        })
        .collect();
    let body = json!({"api_key": token, "batch": batch, "sent_at": now});
    Template::new(body.to_string(), events)
}

/// An amplitude-analytics (Python SDK) style event.
pub fn amplitude_event(run: u16, user: usize, time_ms: i64) -> serde_json::Value {
    json!({
        "event_type": "Song Played",
        "user_id": format!("user-{user:06}"),
        "device_id": format!("device-{user:06}-abcdef"),
        "time": time_ms,
        "insert_id": format!("{run:04x}-{SLOT}"),
        "session_id": time_ms - 60_000,
        "platform": "Web",
        "os_name": "Chrome",
        "language": "en-US",
        "ip": "127.0.0.1",
        "library": "amplitude-python/1.1.4",
        "event_properties": {"genre": "jazz", "duration_s": 215, "source": "playlist"},
        "user_properties": {"$set": {"email": format!("user-{user:06}@example.com"), "plan": "premium"}}
    })
}

pub fn amplitude_template(key: &str, events: usize, run: u16) -> Template {
    let now = chrono::Utc::now().timestamp_millis();
    let evs: Vec<_> = (0..events).map(|i| amplitude_event(run, i * 7919 % 100_000, now)).collect();
    let body = json!({"api_key": key, "events": evs});
    Template::new(body.to_string(), events)
}

/// A Stripe `invoice.paid` event (about 1.3 KB).
pub fn stripe_template(run: u16) -> Template {
    let created = chrono::Utc::now().timestamp();
    let line = json!({
        "id": "il_1PXbench000000000000000",
        "object": "line_item",
        "amount": 2900,
        "currency": "usd",
        "description": "1 x Pro plan (at $29.00 / month)",
        "quantity": 1,
        "price": {"id": "price_1PXbench00000000", "unit_amount": 2900, "recurring": {"interval": "month"}}
    });
    let lines = json!({"object": "list", "data": [line], "has_more": false, "total_count": 1});
    let body = json!({
        "id": format!("evt_{run:04x}{SLOT}"),
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "type": "invoice.paid",
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": {
            "id": "in_1PXbench0000000000000000",
            "object": "invoice",
            "amount_due": 2900,
            "amount_paid": 2900,
            "amount_remaining": 0,
            "currency": "usd",
            "customer": "cus_Qbench00000000",
            "customer_email": "ada@example.com",
            "customer_name": "Ada Lovelace",
            "billing_reason": "subscription_cycle",
            "collection_method": "charge_automatically",
            "hosted_invoice_url": "https://invoice.stripe.com/i/acct_bench/test_bench",
            "number": "BENCH-0001",
            "paid": true,
            "period_start": created - 2_592_000,
            "period_end": created,
            "status": "paid",
            "subscription": "sub_1PXbench000000000000000",
            "subtotal": 2900,
            "total": 2900,
            "lines": lines
        }}
    });
    Template::new(body.to_string(), 1)
}

pub fn stripe_signature(secret: &str, t: u64, body: &[u8]) -> String {
    // The key is the whole secret string, `whsec_` included.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    #[allow(unused_imports)] // the harness-less bench including this file drops #[test] items
    use super::{amplitude_template, posthog_template, stripe_signature, PosthogUsers};

    #[test]
    fn stripe_signature_matches_the_contract_vector() {
        let body = br#"{"id":"evt_test","object":"event","type":"payment_intent.succeeded"}"#;
        assert_eq!(
            stripe_signature("whsec_test_secret", 1_700_000_000, body),
            "t=1700000000,v1=f457ee3d89f52f9f02936e1cd1173dd5dfa132cdc78ec55ea964a53098c5a1c0"
        );
    }

    #[test]
    fn templates_get_distinct_ids_per_event_and_request() {
        let t = amplitude_template("key", 100, 7);
        let a: serde_json::Value = serde_json::from_slice(&t.render(1)).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&t.render(2)).unwrap();
        let ids = |v: &serde_json::Value| -> Vec<String> {
            v["events"].as_array().unwrap().iter().map(|e| e["insert_id"].as_str().unwrap().to_string()).collect()
        };
        let mut all = ids(&a);
        all.extend(ids(&b));
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        let p: serde_json::Value =
            serde_json::from_slice(&posthog_template("phc", 10, 7, PosthogUsers::PerEvent).render(3)).unwrap();
        let per_event = p.to_string().len() / 10;
        assert!((550..800).contains(&per_event), "{per_event} bytes per event");
        for e in p["batch"].as_array().unwrap() {
            uuid::Uuid::parse_str(e["uuid"].as_str().unwrap()).unwrap();
        }
    }

    #[test]
    fn browser_batches_hold_one_user_each_and_requests_change_users() {
        let t = posthog_template("phc", 10, 7, PosthogUsers::PerRequest);
        let users = |n: u64| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_slice(&t.render(n)).unwrap();
            v["batch"].as_array().unwrap().iter().map(|e| e["distinct_id"].as_str().unwrap().to_string()).collect()
        };
        assert_eq!(users(0x2a), vec!["user-00002a".to_string(); 10]);
        assert_eq!(users(0x2b), vec!["user-00002b".to_string(); 10]);
        assert_eq!(users((1 << 24) + 0x2a), users(0x2a), "2^24 users, then again");
        // A server-side batch keeps a user per event.
        let v: serde_json::Value =
            serde_json::from_slice(&posthog_template("phc", 10, 7, PosthogUsers::PerEvent).render(5)).unwrap();
        let mut ids: Vec<&str> =
            v["batch"].as_array().unwrap().iter().map(|e| e["distinct_id"].as_str().unwrap()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10);
        // The other events' slots are still filled per event.
        let v: serde_json::Value = serde_json::from_slice(&t.render(5)).unwrap();
        let mut ids: Vec<&str> = v["batch"].as_array().unwrap().iter().map(|e| e["uuid"].as_str().unwrap()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 10);
    }
}
