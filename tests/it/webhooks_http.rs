//! Signed webhooks end to end: headers produced by the official `stripe` and
//! `standardwebhooks` libraries (tests/sdk/webhook_sign.py), sent to the real
//! `sluice` binary; accepted events read back from the real broker.

use crate::common;

use std::time::Duration;

use serde_json::{json, Value};

const STRIPE_OLD: &str = "whsec_rotating_out_0123456789";
const STRIPE_NEW: &str = "whsec_rotating_in_9876543210";
const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STD_OTHER: &str = "whsec_c29tZW9uZS1lbHNlLXNvbWVvbmUtZWxzZQ==";

fn sources_yaml() -> String {
    format!(
        r#"connectors:
  webhooks:
    - name: stripe
      scheme: stripe
      secrets: ["{STRIPE_OLD}", "{STRIPE_NEW}"]
      max_body_bytes: 65536
    - name: app
      scheme: standard
      secrets: ["{STD_SECRET}"]
      pointers: {{distinct_id: /data/user_id}}
"#
    )
}

fn embedded_yaml() -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:{{port}}\"\nbus:\n  kind: embedded\n  path: \"{{dir}}/data\"\n{}",
        sources_yaml()
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One signing job for tests/sdk/webhook_sign.py.
fn stripe_job(secret: &str, t: i64, body: &str) -> Value {
    json!({"scheme": "stripe", "secret": secret, "timestamp": t, "body": body})
}
fn standard_job(secret: &str, id: &str, t: i64, body: &str) -> Value {
    json!({"scheme": "standard", "secret": secret, "id": id, "timestamp": t, "body": body})
}

/// Headers for every job, from the vendors' libraries, in one Python run.
fn sign(python: &str, jobs: &[Value]) -> Vec<Vec<(String, String)>> {
    let out = common::run_python(python, "webhook_sign.py", &[&Value::from(jobs.to_vec()).to_string()], &[]);
    let list: Vec<serde_json::Map<String, Value>> = serde_json::from_str(out.trim()).expect("signer output is JSON");
    list.into_iter()
        .map(|m| m.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string())).collect())
        .collect()
}

async fn post(base: &str, path: &str, headers: &[(String, String)], body: &str) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req =
        client.post(format!("{base}{path}")).header("content-type", "application/json").body(body.to_string());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn stripe_event(id: &str, amount: i64) -> String {
    // Deliberately not compact: the signature covers these exact bytes.
    format!(
        r#"{{
  "id": "{id}",
  "object": "event",
  "type": "invoice.paid",
  "created": 1700000000,
  "livemode": false,
  "api_version": "2024-06-20",
  "data": {{"object": {{"id": "in_{id}", "object": "invoice", "customer": "cus_same", "customer_email": "ada@example.com", "total": {amount}, "currency": "usd", "status": "paid"}}}}
}}"#
    )
}

fn standard_event(kind: &str) -> String {
    format!(
        r#"{{"type":"{kind}","timestamp":"2024-01-02T03:04:05Z","data":{{"user_id":"u_1","email":"u1@example.com"}}}}"#
    )
}

#[tokio::test]
async fn sdk_signed_events_are_published_once_on_the_broker() {
    let (Some(brokers), Some(python)) = (common::kafka_brokers(), common::python()) else { return };
    let (yaml, topic) = common::kafka_config(&brokers, &sources_yaml());
    let sluice = common::Sluice::start("ingress", &yaml);
    let t = now();
    let (e1, e2) = (stripe_event("evt_one", 1999), stripe_event("evt_two", 500));
    let (s1, s2) = (standard_event("user.created"), standard_event("user.upgraded"));
    let headers = sign(
        &python,
        &[
            stripe_job(STRIPE_OLD, t, &e1),
            // Stripe's retry of evt_one: new timestamp, signed after the rotation.
            stripe_job(STRIPE_NEW, t + 1, &e1),
            stripe_job(STRIPE_NEW, t, &e2),
            standard_job(STD_SECRET, "msg_one", t, &s1),
            standard_job(STD_SECRET, "msg_one", t + 1, &s1),
            standard_job(STD_SECRET, "msg_two", t, &s2),
        ],
    );
    let sends = [
        ("/webhooks/stripe", &e1, "ok"),
        ("/webhooks/stripe", &e1, "duplicate"),
        ("/webhooks/stripe", &e2, "ok"),
        ("/webhooks/app", &s1, "ok"),
        ("/webhooks/app", &s1, "duplicate"),
        ("/webhooks/app", &s2, "ok"),
    ];
    for ((path, body, want), h) in sends.iter().zip(&headers) {
        let (status, resp) = post(&sluice.base, path, h, body).await;
        assert_eq!((status, resp["status"].as_str()), (200, Some(*want)), "{path}: {resp}\n{}", sluice.logs());
    }

    // Each source's events share one partition key, so they are in send
    // order on one partition: a published duplicate would show up within the
    // first four envelopes.
    let events = common::read_events(&brokers, &topic, 4, Duration::from_secs(30)).await;
    let ids = |source: &str| -> Vec<String> {
        events.iter().filter(|e| e.source_name == source).map(|e| e.id.clone()).collect()
    };
    assert_eq!(ids("stripe"), ["evt_one", "evt_two"], "{events:#?}");
    assert_eq!(ids("app"), ["msg_one", "msg_two"], "{events:#?}");

    let one = events.iter().find(|e| e.id == "evt_one").unwrap();
    assert_eq!((one.name.as_str(), one.project.as_str()), ("invoice.paid", "stripe"));
    assert_eq!((one.email.as_deref(), one.distinct_id.as_deref()), (Some("ada@example.com"), Some("cus_same")));
    let rev = one.revenue.as_ref().unwrap();
    assert_eq!((rev.amount, rev.amount_minor, rev.currency.as_deref()), (Some(19.99), Some(1999), Some("usd")));
    assert_eq!(one.timestamp.timestamp(), 1_700_000_000);
    let msg = events.iter().find(|e| e.id == "msg_one").unwrap();
    assert_eq!((msg.name.as_str(), msg.distinct_id.as_deref()), ("user.created", Some("u_1")));
    assert_eq!(msg.email.as_deref(), Some("u1@example.com"));
}

#[tokio::test]
async fn sdk_signed_requests_are_refused_for_the_right_reason() {
    let Some(python) = common::python() else { return };
    let sluice = common::Sluice::start("ingress", &embedded_yaml());
    let t = now();
    let body = stripe_event("evt_r", 100);
    let sbody = standard_event("user.created");
    let h = sign(
        &python,
        &[
            stripe_job(STRIPE_NEW, t, &body),
            stripe_job("whsec_not_configured", t, &body),
            stripe_job(STRIPE_OLD, t - 400, &body),
            stripe_job(STRIPE_OLD, t + 400, &body),
            standard_job(STD_SECRET, "msg_r", t, &sbody),
            standard_job(STD_OTHER, "msg_r", t, &sbody),
            standard_job(STD_SECRET, "msg_r", t - 400, &sbody),
        ],
    );
    let genuine = h[0][0].1.clone();
    let with = |v: String| vec![("Stripe-Signature".to_string(), v)];
    let tampered_body = body.replace("\"total\": 100", "\"total\": 1");
    let tampered_sbody = sbody.replace("u_1", "u_2");
    // Just over the source's 64 KiB, so the client finishes sending before the 413.
    let too_large = " ".repeat(65537);
    let svix_names: Vec<(String, String)> =
        h[4].iter().map(|(k, v)| (k.replace("webhook-", "svix-"), v.clone())).collect();
    // (what, path, headers, body, status, reason code)
    type Case<'a> = (&'a str, &'a str, Vec<(String, String)>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("tampered body", "/webhooks/stripe", with(genuine.clone()), &tampered_body, 401, "bad_signature"),
        (
            "tampered timestamp",
            "/webhooks/stripe",
            with(genuine.replacen(&format!("t={t}"), &format!("t={}", t + 1), 1)),
            &body,
            401,
            "bad_signature",
        ),
        ("unknown secret", "/webhooks/stripe", h[1].clone(), &body, 401, "bad_signature"),
        ("v0 only", "/webhooks/stripe", with(genuine.replace("v1=", "v0=")), &body, 401, "bad_signature"),
        ("stale", "/webhooks/stripe", h[2].clone(), &body, 401, "timestamp_out_of_tolerance"),
        ("future", "/webhooks/stripe", h[3].clone(), &body, 401, "timestamp_out_of_tolerance"),
        (
            "malformed header",
            "/webhooks/stripe",
            with(genuine.replacen(&format!("t={t}"), "t=yesterday", 1)),
            &body,
            400,
            "malformed_signature",
        ),
        ("missing header", "/webhooks/stripe", vec![], &body, 400, "missing_signature"),
        ("unknown source", "/webhooks/paypal", with(genuine.clone()), &body, 404, "unknown_source"),
        ("too large", "/webhooks/stripe", with(genuine.clone()), &too_large, 413, "too_large"),
        ("standard tampered body", "/webhooks/app", h[4].clone(), &tampered_sbody, 401, "bad_signature"),
        ("standard unknown secret", "/webhooks/app", h[5].clone(), &sbody, 401, "bad_signature"),
        ("standard stale", "/webhooks/app", h[6].clone(), &sbody, 401, "timestamp_out_of_tolerance"),
        ("standard missing header", "/webhooks/app", h[4][..2].to_vec(), &sbody, 400, "missing_signature"),
    ];
    for (what, path, headers, body, want_status, want_code) in cases {
        let (status, resp) = post(&sluice.base, path, &headers, body).await;
        assert_eq!((status, resp["code"].as_str()), (want_status, Some(want_code)), "{what}: {resp}");
        let text = resp.to_string();
        assert!(!text.contains("whsec_"), "{what}: a secret leaked: {text}");
    }
    // The genuine ones still pass after all that, including under Svix's header names.
    let (status, resp) = post(&sluice.base, "/webhooks/stripe", &with(genuine), &body).await;
    assert_eq!((status, resp["status"].as_str()), (200, Some("ok")), "{resp}");
    let (status, resp) = post(&sluice.base, "/webhooks/app", &svix_names, &sbody).await;
    assert_eq!((status, resp["status"].as_str()), (200, Some("ok")), "{resp}");

    let metrics = reqwest::get(format!("{}/metrics", sluice.base)).await.unwrap().text().await.unwrap();
    for (reason, n) in [
        ("bad_signature", 6),
        ("timestamp_out_of_tolerance", 3),
        ("malformed_signature", 1),
        ("missing_signature", 2),
        ("unknown_source", 1),
        ("too_large", 1),
    ] {
        let line = format!("sluice_events_rejected_total{{source=\"webhook\",reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "{line} missing from /metrics:\n{metrics}");
    }
}

#[tokio::test]
async fn the_dedup_window_survives_a_restart_on_the_embedded_bus() {
    let Some(python) = common::python() else { return };
    let mut sluice = common::Sluice::start("ingress", &embedded_yaml());
    let t = now();
    let body = stripe_event("evt_restart", 700);
    let h = sign(&python, &[stripe_job(STRIPE_OLD, t, &body), stripe_job(STRIPE_OLD, t + 1, &body)]);
    let (status, resp) = post(&sluice.base, "/webhooks/stripe", &h[0], &body).await;
    assert_eq!((status, resp["status"].as_str()), (200, Some("ok")), "{resp}");
    assert!(sluice.terminate(Duration::from_secs(30)).success(), "{}", sluice.logs());
    let dir = std::mem::replace(&mut sluice.dir, tempfile::tempdir().unwrap());
    let sluice = common::Sluice::start_in("ingress", &embedded_yaml(), dir);
    let (status, resp) = post(&sluice.base, "/webhooks/stripe", &h[1], &body).await;
    assert_eq!((status, resp["status"].as_str()), (200, Some("duplicate")), "{resp}\n{}", sluice.logs());
}
