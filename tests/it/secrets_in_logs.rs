//! Secrets never reach the logs: a full `sluice serve` run with `RUST_LOG=debug`
//! with `log.debug` on (every mapped Brevo request logged) takes PostHog,
//! Amplitude and signed Stripe and Standard Webhooks traffic, including
//! wrong tokens and bad signatures, forwards to the Brevo simulator, and
//! shuts down. Its whole log, and `check-config`'s output, must not contain
//! any configured secret or token.

use crate::common;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::json;
use sluice::config::WebhookScheme;
use sluice::ingress::webhook::signature::SigningKey;
use sluice::sim::{self, SimConfig};

const POSTHOG_TOKEN: &str = "phc_SECRETtoken7Q2w9";
const AMPLITUDE_KEY: &str = "ampSECRETkey0123456789abcdef42";
const STRIPE_SECRET: &str = "whsec_SECRETstripe8k3n";
const STANDARD_KEY: &[u8] = b"SECRETstandardkey-29fj2";
const BREVO_KEY: &str = "xkeysib-SECRETbrevo-77aa";

fn config(brevo_url: &str) -> String {
    let standard = standard_secret(STANDARD_KEY);
    format!(
        r#"server:
  listen: "127.0.0.1:{{port}}"
  shutdown_grace_secs: 10
bus:
  kind: embedded
  path: "{{dir}}/data"
connectors:
  posthog:
    project_tokens: [{POSTHOG_TOKEN}]
  amplitude:
    api_keys: [{AMPLITUDE_KEY}]
  webhooks:
    - name: stripe
      scheme: stripe
      secrets: [{STRIPE_SECRET}]
    - name: svix
      scheme: standard
      secrets: ["{standard}"]
brevo:
  api_key: {BREVO_KEY}
  base_url: {brevo_url}
log:
  level: debug
  format: json
  debug: true
"#
    )
}

fn standard_secret(key: &[u8]) -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// Every configured secret, and the forms it could leak in.
fn secrets() -> Vec<String> {
    let standard_b64 = base64::engine::general_purpose::STANDARD.encode(STANDARD_KEY);
    vec![
        POSTHOG_TOKEN.into(),
        AMPLITUDE_KEY.into(),
        STRIPE_SECRET.into(),
        "SECRETstripe8k3n".into(),
        String::from_utf8(STANDARD_KEY.to_vec()).unwrap(),
        standard_b64,
        BREVO_KEY.into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_debug_run_never_logs_a_secret_or_token() {
    let sim = sim::start(SimConfig::new(BREVO_KEY)).await.expect("simulator");
    let yaml = config(&sim.base_url());
    // Everything at debug: Sluice's own modules and the HTTP and Kafka crates.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sluice = common::start_sluice_env("serve", &yaml, dir, &[("RUST_LOG", "debug")]);
    let http = reqwest::Client::new();
    let base = &sluice.base;
    let mut statuses = Vec::new();

    // PostHog: accepted, then a wrong token.
    for token in [POSTHOG_TOKEN, "phc_wrong"] {
        let ev = json!({"api_key": token, "event": "signed up", "distinct_id": "user-1",
            "properties": {"$set": {"email": "ada@example.com"}}});
        let r = http.post(format!("{base}/i/v0/e/")).json(&ev).send().await.expect("posthog");
        statuses.push(("posthog", token.to_string(), r.status().as_u16()));
    }
    // Amplitude HTTP V2: accepted, then a wrong key.
    for key in [AMPLITUDE_KEY, "amp_wrong_key_00000000000000"] {
        let body = json!({"api_key": key, "events": [{"event_type": "Upgraded", "user_id": "user-1",
            "user_properties": {"$set": {"email": "ada@example.com"}}}]});
        let r = http.post(format!("{base}/2/httpapi")).json(&body).send().await.expect("amplitude");
        statuses.push(("amplitude", key.to_string(), r.status().as_u16()));
    }
    // Stripe: a good signature, then one made with the wrong secret.
    let t = chrono::Utc::now().timestamp();
    let event = json!({"id": "evt_secret_1", "object": "event", "type": "invoice.paid", "created": t,
        "data": {"object": {"object": "invoice", "customer_email": "ada@example.com", "total": 1200}}})
    .to_string();
    for key in [STRIPE_SECRET, "whsec_wrong"] {
        let sig = SigningKey::new(WebhookScheme::Stripe, key).expect("key").stripe_header(t, event.as_bytes());
        let r = http
            .post(format!("{base}/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", sig)
            .body(event.clone())
            .send()
            .await
            .expect("stripe");
        statuses.push(("stripe", key.to_string(), r.status().as_u16()));
    }
    // Standard Webhooks: a good signature, then a wrong one.
    let msg_id = "msg_secret_1";
    let body = json!({"type": "user.created", "data": {"email": "ada@example.com"}}).to_string();
    for key in [STANDARD_KEY, b"wrong-key".as_slice()] {
        let signer = SigningKey::new(WebhookScheme::Standard, &standard_secret(key)).expect("key");
        let sig = signer.standard_signature(msg_id, t, body.as_bytes());
        let r = http
            .post(format!("{base}/webhooks/svix"))
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", t.to_string())
            .header("webhook-signature", sig)
            .body(body.clone())
            .send()
            .await
            .expect("standard");
        statuses.push(("standard", String::from_utf8_lossy(key).into_owned(), r.status().as_u16()));
    }
    let ok: Vec<_> = statuses.iter().filter(|s| (200..300).contains(&s.2)).collect();
    let refused: Vec<_> = statuses.iter().filter(|s| (400..500).contains(&s.2)).collect();
    assert_eq!((ok.len(), refused.len()), (4, 4), "one accepted and one refused per source: {statuses:?}");

    // The forwarder really talked to Brevo with the key.
    let delivered = sim.wait_until(Duration::from_secs(30), |s| s.accepted_events().len() >= 3).await;
    assert!(delivered, "nothing reached the simulator; log:\n{}", sluice.logs());
    let status = sluice.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}");

    let logs = sluice.logs();
    assert!(logs.contains("\"Brevo request\""), "log.debug did not log the Brevo requests:\n{logs}");
    let cfg = common::write_config(sluice.dir.path(), &yaml.replace("{port}", "0").replace("{dir}", "/tmp"));
    let check = Command::new(env!("CARGO_BIN_EXE_sluice")).arg("check-config").arg("--config").arg(&cfg).output();
    let check = check.expect("check-config runs");
    assert!(check.status.success(), "check-config: {}", String::from_utf8_lossy(&check.stderr));
    let printed = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(printed.contains("brevo"), "check-config printed no config: {printed}");

    for s in secrets() {
        let at = logs.find(&s).map(|i| &logs[i.saturating_sub(200)..(i + s.len() + 50).min(logs.len())]);
        assert!(at.is_none(), "the log contains the secret {s:?}: …{}…", at.unwrap_or_default());
        assert!(!printed.contains(&s), "check-config printed the secret {s:?}");
    }
}
