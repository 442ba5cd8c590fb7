//! The acceptance run through the real binary: `sluice serve` on the embedded
//! bus, 1,500 PostHog events posted to `/batch/`, an Amplitude identify on
//! `/identify`, a Stripe-signed `invoice.paid` on `/webhooks/stripe`, and the
//! Brevo simulator (in this process) as Brevo.

use crate::common;

use std::time::Duration;

use common::Sluice;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use sluice::sim::{self, EndpointClass, SimConfig};

const KEY: &str = "xkeysib-e2e";

const CONFIG: &str = r#"
server:
  listen: "127.0.0.1:{port}"
  shutdown_grace_secs: 10
bus:
  kind: embedded
  path: "{dir}/data"
connectors:
  posthog:
    project_tokens: [phc_e2e]
    property_mapping: {name: FIRSTNAME}
  amplitude:
    api_keys: [amp_e2e_key_0123456789abcdef]
    property_mapping: {first_name: FIRSTNAME, last_name: LASTNAME, newsletter: OPT_IN}
    lists:
      - {id: 2, name: newsletter, when_property: newsletter}
  webhooks:
    - name: stripe
      scheme: stripe
      secrets: [whsec_e2e]
      event_mapping: {invoice.paid: InvoicePaid}
brevo:
  api_key: BREVO_KEY
  base_url: BREVO_URL
"#;

/// Stripe's scheme: HMAC-SHA256 of `{t}.{body}` under the endpoint secret.
fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn posthog_event(user: usize, n: usize) -> Value {
    let mut props = json!({
        "$current_url": format!("https://app.example.com/page/{n}"),
        "$browser": "Firefox",
        "$lib": "posthog-python",
        "n": n,
        "$set": {"email": format!("user{user}@example.com")},
    });
    if n == 0 {
        props["$set"]["name"] = json!(format!("User {user}"));
    }
    json!({
        "event": if n % 3 == 0 { "$pageview" } else { "clicked button" },
        "distinct_id": format!("user-{user}"),
        "uuid": uuid::Uuid::new_v4().to_string(),
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "properties": props,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posthog_amplitude_and_stripe_over_http_reach_brevo_batched_within_budget() {
    let sim = sim::start(SimConfig::new(KEY)).await.unwrap();
    let yaml = CONFIG.replace("BREVO_KEY", KEY).replace("BREVO_URL", &sim.base_url());
    let sluice = Sluice::start("serve", &yaml);
    let http = reqwest::Client::new();

    // 1,500 PostHog events: 15 rounds of one event for each of 100 users,
    // 100 events per /batch/ request, rounds in order.
    for n in 0..15 {
        let batch: Vec<Value> = (0..100).map(|u| posthog_event(u, n)).collect();
        let resp = http
            .post(format!("{}/batch/", sluice.base))
            .json(&json!({"api_key": "phc_e2e", "batch": batch, "sent_at": chrono::Utc::now().to_rfc3339()}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
        if n == 7 {
            let identification = json!([{
                "user_id": "amp-user-1",
                "user_properties": {"$set": {
                    "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace", "newsletter": true,
                }},
            }]);
            let resp = http
                .post(format!("{}/identify", sluice.base))
                .form(&[("api_key", "amp_e2e_key_0123456789abcdef"), ("identification", &identification.to_string())])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
        }
    }
    let t = chrono::Utc::now().timestamp();
    let invoice = json!({
        "id": "evt_1QxYzE2eZvKYlo2C", "object": "event", "type": "invoice.paid", "created": t,
        "api_version": "2024-06-20", "livemode": false,
        "data": {"object": {
            "id": "in_1QxYz", "object": "invoice", "customer": "cus_R2d2", "customer_email": "billing@example.com",
            "customer_name": "Bill Payer", "total": 1200, "currency": "usd", "status": "paid",
        }},
    })
    .to_string();
    let resp = http
        .post(format!("{}/webhooks/stripe", sluice.base))
        .header("content-type", "application/json")
        .header("stripe-signature", stripe_signature("whsec_e2e", t, &invoice))
        .body(invoice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());

    let done = sim
        .wait_until(Duration::from_secs(40), |s| {
            s.accepted_events().len() >= 1501
                && s.contact_by_email("ada@example.com").is_some_and(|c| c.list_ids.contains(&2))
        })
        .await;
    assert!(done, "accepted {} events; stats {:?}\n{}", sim.accepted_events().len(), sim.stats(), sluice.logs());
    // Anything still in flight would show up as a late request.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Every PostHog event exactly once, each user's in order.
    let mut accepted = sim.accepted_events();
    accepted.sort_by_key(|a| (a.request, a.index));
    assert_eq!(accepted.len(), 1501, "1,500 PostHog events and one Stripe event, nothing twice");
    let mut last: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for a in &accepted {
        let Some(n) = a.event.pointer("/event_properties/n").and_then(Value::as_u64) else { continue };
        let user = a.event["identifiers"]["ext_id"].as_str().unwrap().to_string();
        if let Some(prev) = last.insert(user.clone(), n) {
            assert!(n > prev, "{user}: {n} after {prev}");
        }
    }
    assert_eq!(last.len(), 100);

    // As mapped: identifiers, names, contact properties.
    let first = accepted.iter().find(|a| a.event["identifiers"]["ext_id"] == "user-42").unwrap();
    assert_eq!(first.event["event_name"], "_pageview");
    assert_eq!(first.event["identifiers"]["email_id"], "user42@example.com");
    assert_eq!(first.event["contact_properties"], json!({"FIRSTNAME": "User 42"}));
    let stripe = accepted.iter().find(|a| a.event["event_name"] == "InvoicePaid").expect("the Stripe event");
    assert_eq!(stripe.event["identifiers"], json!({"email_id": "billing@example.com", "ext_id": "cus_R2d2"}));
    assert_eq!(stripe.event["event_properties"]["revenue"], 12.0);
    let ada = sim.contact_by_email("ada@example.com").unwrap();
    assert_eq!(ada.ext_id.as_deref(), Some("amp-user-1"));
    assert_eq!(ada.attributes.get("FIRSTNAME"), Some(&json!("Ada")));
    assert_eq!(ada.attributes.get("LASTNAME"), Some(&json!("Lovelace")));
    assert_eq!(ada.attributes.get("OPT_IN"), Some(&json!(true)));

    // ≤ 1/20 as many requests as events, within the budget, nothing refused.
    let recorded = sim.recorded();
    eprintln!("{} Brevo requests for 1,502 events", recorded.len());
    assert!(recorded.len() * 20 <= 1502, "{} requests", recorded.len());
    assert!(recorded.iter().all(|r| (200..300).contains(&r.status)), "{recorded:?}");
    let stats = sim.stats();
    assert_eq!(stats.count(429), 0);
    assert!(stats.class(EndpointClass::Events).max_in_any_second <= 10, "{stats:?}");
    assert!(stats.class(EndpointClass::Contacts).max_in_any_second <= 10, "{stats:?}");
    assert!(stats.ignored_attributes.is_empty(), "{:?}", stats.ignored_attributes);
}
