//! The Brevo simulator over real HTTP: every rule it enforces, its faults,
//! its recording, and its control API.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common;
use sluice::sim::{self, EndpointClass, Fault, RateLimits, SimClock, SimConfig, SimHandle};

const KEY: &str = "xkeysib-test";

struct Client {
    http: reqwest::Client,
    base: String,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<u64> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    }
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

impl Client {
    fn new(sim: &SimHandle) -> Client {
        Client { http: reqwest::Client::new(), base: sim.base_url() }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request reaches the simulator");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON body") };
        Resp { status, headers, body }
    }

    async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(self.http.post(format!("{}{path}", self.base)).header("api-key", KEY).json(body)).await
    }

    async fn post_with_key(&self, path: &str, key: Option<&str>, body: &Value) -> Resp {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(k) = key {
            req = req.header("api-key", k);
        }
        self.send(req).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(self.http.get(format!("{}{path}", self.base)).header("api-key", KEY)).await
    }
}

fn event(i: usize) -> Value {
    json!({
        "event_name": "page_viewed",
        "event_date": "2024-01-24T17:39:57+01:00",
        "identifiers": {"email_id": format!("user{i}@example.com"), "ext_id": format!("u{i}")},
        "contact_properties": {"FIRSTNAME": format!("User{i}")},
        "event_properties": {"path": format!("/p/{i}"), "n": i}
    })
}

fn batch(n: usize) -> Value {
    json!({"events": (0..n).map(event).collect::<Vec<_>>()})
}

async fn unlimited() -> SimHandle {
    sim::start(SimConfig::new(KEY).limits(RateLimits::unlimited())).await.expect("simulator starts")
}

// ------------------------------------------------------------------ auth

#[tokio::test]
async fn missing_or_wrong_api_key_is_401_key_not_found() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    for key in [None, Some("wrong")] {
        let r = c.post_with_key("/events/batch", key, &batch(1)).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.body, json!({"code": "unauthorized", "message": "Key not found"}));
    }
    assert!(sim.accepted_events().is_empty());
    assert_eq!(sim.stats().count(401), 2);
}

// ------------------------------------------------------------------ events

#[tokio::test]
async fn single_event_is_204_and_recorded() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let r = c.post("/events", &event(7)).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.body, Value::Null);
    let accepted = sim.accepted_events();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].event, event(7));
    // The event's contact_properties landed on the contact it created.
    let contact = sim.contact_by_email("user7@example.com").expect("contact created by the event");
    assert_eq!(contact.ext_id.as_deref(), Some("u7"));
    assert_eq!(contact.attributes["FIRSTNAME"], json!("User7"));
}

#[tokio::test]
async fn batch_of_200_is_202_with_count() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let r = c.post("/events/batch", &batch(200)).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["count"], json!(200));
    assert!(r.body["message"].is_string());
    let accepted = sim.accepted_events();
    assert_eq!(accepted.len(), 200);
    assert_eq!(accepted[199].index, 199);
    assert_eq!(accepted[0].request, sim.recorded()[0].seq);
    assert_eq!(sim.request_count(EndpointClass::Events), 1);
    assert_eq!(sim.request_count(EndpointClass::Contacts), 0);
}

#[tokio::test]
async fn batch_limits_are_200_events_and_512_kb() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let r = c.post("/events/batch", &batch(201)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "invalid_parameter");

    // 100 events of ~5.3 KB each: valid one by one, over 512 KB together.
    let big: Vec<Value> = (0..100)
        .map(|i| {
            let mut e = event(i);
            e["event_properties"] = json!({"blob": "x".repeat(5300)});
            e
        })
        .collect();
    let body = json!({"events": big});
    assert!(serde_json::to_vec(&body).unwrap().len() > 512 * 1024);
    let r = c.post("/events/batch", &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "invalid_parameter");

    let r = c.post("/events/batch", &json!({})).await;
    assert_eq!((r.status, r.code()), (400, "missing_parameter"));
    let r = c.post("/events/batch", &json!({"events": []})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_parameter"));
    assert!(sim.accepted_events().is_empty());
}

#[tokio::test]
async fn all_invalid_batch_is_400_with_event_indexes() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let body = json!({"events": [
        {"event_name": "bad name", "identifiers": {"email_id": "a@example.com"}},
        {"event_name": "ok", "identifiers": {}},
        {"event_name": "also bad!", "identifiers": {"ext_id": "x"}},
    ]});
    let r = c.post("/events/batch", &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["total_events"], json!(3));
    assert_eq!(r.body["successful_events"], json!(0));
    assert_eq!(r.body["failed_events"], json!(3));
    assert!(r.body["status"].is_string());
    let errors = r.body["errors"].as_array().expect("errors array");
    // The two bad names share one message, so they share one entry.
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["eventIndex"], json!([0, 2]));
    assert_eq!(errors[1]["eventIndex"], json!([1]));
    assert!(errors.iter().all(|e| e["message"].is_string()));
    assert!(sim.accepted_events().is_empty());
}

#[tokio::test]
async fn some_invalid_is_207_and_the_rest_is_accepted() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let mut body = batch(5);
    body["events"][3]["event_properties"] = json!({"$browser": "Firefox"});
    let r = c.post("/events/batch", &body).await;
    assert_eq!(r.status, 207);
    assert_eq!(r.body["successful_events"], json!(4));
    assert_eq!(r.body["failed_events"], json!(1));
    assert_eq!(r.body["errors"][0]["eventIndex"], json!([3]));
    let indexes: Vec<usize> = sim.accepted_events().iter().map(|e| e.index).collect();
    assert_eq!(indexes, vec![0, 1, 2, 4]);
}

#[tokio::test]
async fn single_event_validation_uses_brevo_codes() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let cases = [
        (json!({"identifiers": {"email_id": "a@example.com"}}), "missing_parameter"),
        (json!({"event_name": "x"}), "missing_parameter"),
        (json!({"event_name": "x", "identifiers": {"email_id": "nope"}}), "invalid_parameter"),
        (json!({"event_name": "x".repeat(256), "identifiers": {"ext_id": "1"}}), "invalid_parameter"),
        (json!({"event_name": "x", "identifiers": {"ext_id": "1"}, "event_date": "yesterday"}), "invalid_parameter"),
        (
            json!({"event_name": "x", "identifiers": {"ext_id": "1"}, "contact_properties": {"A": {"b": 1}}}),
            "invalid_parameter",
        ),
        (
            json!({"event_name": "x", "identifiers": {"ext_id": "1"}, "event_properties": {"k": "v".repeat(51 * 1024)}}),
            "invalid_parameter",
        ),
    ];
    for (body, code) in cases {
        let r = c.post("/events", &body).await;
        assert_eq!((r.status, r.code()), (400, code), "for {body}");
        assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(sim.accepted_events().is_empty());
}

#[tokio::test]
async fn non_json_bodies_are_refused() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let r = c
        .send(
            c.http
                .post(format!("{}/events", c.base))
                .header("api-key", KEY)
                .header("content-type", "text/plain")
                .body(event(1).to_string()),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .send(
            c.http
                .post(format!("{}/events/batch", c.base))
                .header("api-key", KEY)
                .header("content-type", "application/json")
                .body("{\"events\": ["),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(sim.accepted_events().is_empty());
}

// ------------------------------------------------------------------ contacts

#[tokio::test]
async fn contact_upsert_201_then_204_and_duplicate_without_update_enabled() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let body =
        json!({"email": "Jane@Example.com", "ext_id": "u1", "attributes": {"FIRSTNAME": "Jane"}, "listIds": [2]});
    let r = c.post("/contacts", &body).await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_u64().expect("id");

    let r = c.post("/contacts", &json!({"email": "jane@example.com", "attributes": {"LASTNAME": "Doe"}})).await;
    assert_eq!((r.status, r.code()), (400, "duplicate_parameter"));

    let r = c
        .post(
            "/contacts",
            &json!({"email": "jane@example.com", "attributes": {"LASTNAME": "Doe"}, "updateEnabled": true}),
        )
        .await;
    assert_eq!(r.status, 204);

    let jane = sim.contact_by_email("jane@example.com").expect("jane");
    assert_eq!(jane.id, id);
    assert_eq!(jane.attributes["FIRSTNAME"], json!("Jane"));
    assert_eq!(jane.attributes["LASTNAME"], json!("Doe"));
    assert!(jane.list_ids.contains(&2));

    let r = c.get("/contacts/jane%40example.com").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], json!(id));
    assert_eq!(r.body["attributes"]["EXT_ID"], json!("u1"));
    let r = c.get("/contacts/u1?identifierType=ext_id").await;
    assert_eq!(r.body["id"], json!(id));
    let r = c.get("/contacts/nobody%40example.com").await;
    assert_eq!((r.status, r.code()), (404, "document_not_found"));

    let r = c.post("/contacts", &json!({"attributes": {"FIRSTNAME": "X"}})).await;
    assert_eq!((r.status, r.code()), (400, "missing_parameter"));
    let r = c.post("/contacts", &json!({"email": "x@example.com", "listIds": [999]})).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn unknown_attributes_are_ignored_until_created() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let r = c.post("/contacts", &json!({"email": "a@example.com", "attributes": {"PLAN": "pro"}})).await;
    assert_eq!(r.status, 201);
    assert!(!sim.contact_by_email("a@example.com").unwrap().attributes.contains_key("PLAN"));
    assert_eq!(sim.stats().ignored_attributes["PLAN"].unknown, 1);

    let r = c.post("/contacts/attributes/normal/PLAN", &json!({"type": "text"})).await;
    assert_eq!(r.status, 201);
    let r = c.post("/contacts/attributes/normal/PLAN", &json!({"type": "text"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_parameter"));
    let r = c.post("/contacts/attributes/normal/SCORE", &json!({"type": "rainbow"})).await;
    assert_eq!(r.status, 400);

    let r = c
        .post("/contacts", &json!({"email": "a@example.com", "attributes": {"PLAN": "pro"}, "updateEnabled": true}))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(sim.contact_by_email("a@example.com").unwrap().attributes["PLAN"], json!("pro"));
}

#[tokio::test]
async fn import_applies_json_body_and_lists() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    c.post("/contacts", &json!({"email": "old@example.com", "attributes": {"FIRSTNAME": "Old"}})).await;
    let body = json!({
        "jsonBody": [
            {"email": "old@example.com", "attributes": {"FIRSTNAME": "Renamed"}},
            {"email": "new@example.com", "attributes": {"LASTNAME": "New", "EXT_ID": "n1"}},
            {"attributes": {"FIRSTNAME": "no identifier"}}
        ],
        "listIds": [3],
        "updateExistingContacts": true
    });
    let r = c.post("/contacts/import", &body).await;
    assert_eq!(r.status, 202);
    let pid = r.body["processId"].as_u64().expect("processId");
    let report = &sim.imports()[0];
    assert_eq!((report.process_id, report.created, report.updated, report.invalid), (pid, 1, 1, 1));
    assert_eq!(sim.contact_by_email("old@example.com").unwrap().attributes["FIRSTNAME"], json!("Renamed"));
    let new = sim.contact_by_ext_id("n1").expect("imported with its EXT_ID");
    assert_eq!(new.email.as_deref(), Some("new@example.com"));
    assert_eq!(sim.list_members(3).len(), 2);
    assert_eq!(c.get(&format!("/processes/{pid}")).await.status, 200);

    let r = c.post("/contacts/import", &json!({"jsonBody": [{"email": "z@example.com"}]})).await;
    assert_eq!((r.status, r.code()), (400, "missing_parameter"));
    let r = c.post("/contacts/import", &json!({"listIds": [3]})).await;
    assert_eq!((r.status, r.code()), (400, "missing_parameter"));
    let r =
        c.post("/contacts/import", &json!({"fileBody": "EMAIL;FIRSTNAME\ncsv@example.com;Cee", "listIds": [4]})).await;
    assert_eq!(r.status, 202);
    assert_eq!(sim.contact_by_email("csv@example.com").unwrap().attributes["FIRSTNAME"], json!("Cee"));
}

#[tokio::test]
async fn contacts_batch_updates_existing_only_and_fails_whole_on_unknown() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    c.post("/contacts", &json!({"email": "a@example.com"})).await;
    let id_b = c.post("/contacts", &json!({"email": "b@example.com"})).await.body["id"].as_u64().unwrap();

    let r = c
        .post(
            "/contacts/batch",
            &json!({"contacts": [
                {"email": "a@example.com", "attributes": {"FIRSTNAME": "A"}},
                {"email": "ghost@example.com", "attributes": {"FIRSTNAME": "G"}}
            ]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "document_not_found"));
    assert!(!sim.contact_by_email("a@example.com").unwrap().attributes.contains_key("FIRSTNAME"));
    assert!(sim.contact_by_email("ghost@example.com").is_none());

    let r = c
        .post(
            "/contacts/batch",
            &json!({"contacts": [
                {"email": "a@example.com", "attributes": {"FIRSTNAME": "A"}, "listIds": [1]},
                {"id": id_b, "attributes": {"FIRSTNAME": "B"}}
            ]}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(sim.contact_by_email("a@example.com").unwrap().attributes["FIRSTNAME"], json!("A"));
    assert_eq!(sim.contact_by_email("b@example.com").unwrap().attributes["FIRSTNAME"], json!("B"));
    let r = c.post("/contacts/batch", &json!({"contacts": [{"email": "a@example.com", "id": id_b}]})).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn list_add_and_remove_enforce_1_to_150_and_report_success_and_failure() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    c.post("/contacts", &json!({"email": "a@example.com"})).await;
    c.post("/contacts", &json!({"email": "b@example.com", "ext_id": "b"})).await;

    let r = c.post("/contacts/lists/5/contacts/add", &json!({"emails": ["a@example.com", "ghost@example.com"]})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body, json!({"contacts": {"success": ["a@example.com"], "failure": ["ghost@example.com"]}}));
    // Already on the list: a failure.
    let r = c.post("/contacts/lists/5/contacts/add", &json!({"emails": ["a@example.com"]})).await;
    assert_eq!(r.body["contacts"]["failure"], json!(["a@example.com"]));
    let r = c.post("/contacts/lists/5/contacts/add", &json!({"extIds": ["b"]})).await;
    assert_eq!(r.body["contacts"]["success"], json!(["b"]));
    assert_eq!(sim.list_members(5).len(), 2);

    let r = c.post("/contacts/lists/5/contacts/remove", &json!({"emails": ["a@example.com"]})).await;
    assert_eq!((r.status, &r.body["contacts"]["success"]), (201, &json!(["a@example.com"])));
    assert_eq!(sim.list_members(5).len(), 1);

    let too_many: Vec<String> = (0..151).map(|i| format!("u{i}@example.com")).collect();
    let r = c.post("/contacts/lists/5/contacts/add", &json!({"emails": too_many})).await;
    assert_eq!(r.status, 400);
    let r = c.post("/contacts/lists/5/contacts/add", &json!({"emails": []})).await;
    assert_eq!(r.status, 400);
    let r = c.post("/contacts/lists/5/contacts/add", &json!({})).await;
    assert_eq!((r.status, r.code()), (400, "missing_parameter"));
    let r = c.post("/contacts/lists/777/contacts/add", &json!({"emails": ["a@example.com"]})).await;
    assert_eq!((r.status, r.code()), (404, "document_not_found"));

    let r = c.post("/contacts/lists/5/contacts/remove", &json!({"all": true})).await;
    assert_eq!(r.body["contacts"]["total"], json!(1));
    assert!(sim.list_members(5).is_empty());
}

// ------------------------------------------------------------------ rate limits

fn manual(limits: RateLimits) -> SimConfig {
    SimConfig::new(KEY).limits(limits).clock(SimClock::manual())
}

#[tokio::test]
async fn per_second_budget_gives_429_with_headers_and_frees_after_a_second() {
    let sim = sim::start(manual(RateLimits::for_plan(sim::Plan::General))).await.unwrap();
    let c = Client::new(&sim);
    for i in 0..10u64 {
        let r = c.post("/events/batch", &batch(1)).await;
        assert_eq!(r.status, 202);
        assert_eq!(r.header("x-sib-ratelimit-limit"), Some(10));
        assert_eq!(r.header("x-sib-ratelimit-remaining"), Some(9 - i));
        assert_eq!(r.header("x-sib-ratelimit-reset"), Some(1));
    }
    let r = c.post("/events", &event(1)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "too_many_requests");
    assert_eq!(r.header("retry-after"), Some(1));
    assert_eq!(r.header("x-sib-ratelimit-remaining"), Some(0));

    // Contacts have their own budget.
    assert_eq!(c.post("/contacts", &json!({"email": "a@example.com"})).await.status, 201);

    sim.clock().advance(Duration::from_millis(999));
    assert_eq!(c.post("/events", &event(1)).await.status, 429);
    sim.clock().advance(Duration::from_millis(1));
    assert_eq!(c.post("/events", &event(1)).await.status, 204);

    let stats = sim.stats();
    assert_eq!(stats.count(429), 2);
    let events = stats.class(EndpointClass::Events);
    assert_eq!(events.requests, 13);
    // 12 requests arrived in the first (manual) second, 1 later.
    assert_eq!(events.max_in_any_second, 12);
    assert_eq!(stats.class(EndpointClass::Contacts).requests, 1);
}

#[tokio::test]
async fn per_hour_budget_binds_after_the_per_second_one() {
    let limits =
        RateLimits { events: sim::Budget { per_second: Some(10), per_hour: Some(25) }, ..RateLimits::unlimited() };
    let sim = sim::start(manual(limits)).await.unwrap();
    let c = Client::new(&sim);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        for _ in 0..10 {
            statuses.push(c.post("/events", &event(1)).await.status);
        }
        sim.clock().advance(Duration::from_secs(1));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 204).count(), 25);
    let r = c.post("/events", &event(1)).await;
    assert_eq!(r.status, 429);
    // The hour window reports itself: 25 of 25 used, a slot frees ~3596 s on.
    assert_eq!(r.header("x-sib-ratelimit-limit"), Some(25));
    assert!(r.header("retry-after").is_some_and(|s| s > 3500));
}

#[tokio::test]
async fn other_class_has_its_own_hourly_budget() {
    let sim = sim::start(manual(RateLimits::for_plan(sim::Plan::General))).await.unwrap();
    let c = Client::new(&sim);
    for _ in 0..100 {
        assert_eq!(c.get("/account").await.status, 200);
    }
    let r = c.get("/account").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-sib-ratelimit-limit"), Some(100));
    assert_eq!(c.post("/events", &event(1)).await.status, 204);
}

#[tokio::test]
async fn rejected_keys_spend_no_budget() {
    let limits = RateLimits { events: sim::Budget { per_second: Some(2), per_hour: None }, ..RateLimits::unlimited() };
    let sim = sim::start(manual(limits)).await.unwrap();
    let c = Client::new(&sim);
    for _ in 0..5 {
        assert_eq!(c.post_with_key("/events", Some("bad"), &event(1)).await.status, 401);
    }
    assert_eq!(c.post("/events", &event(1)).await.status, 204);
    assert_eq!(c.post("/events", &event(1)).await.status, 204);
    assert_eq!(c.post("/events", &event(1)).await.status, 429);
}

// ------------------------------------------------------------------ faults

#[tokio::test]
async fn injected_5xx_429_and_401_answer_then_clear() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    sim.inject(Fault::server_errors(503, 2).on(EndpointClass::Events));
    sim.inject(Fault::rate_limited(1, 7));
    sim.inject(Fault::unauthorized(1));

    // A contacts request skips the events-only 5xx and takes the 429 storm.
    let r = c.post("/contacts", &json!({"email": "a@example.com"})).await;
    assert_eq!((r.status, r.header("retry-after"), r.code()), (429, Some(7), "too_many_requests"));
    assert_eq!(c.post("/events", &event(1)).await.status, 503);
    assert_eq!(c.post("/events/batch", &batch(2)).await.status, 503);
    let r = c.post("/events", &event(1)).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    assert_eq!(c.post("/events", &event(1)).await.status, 204);
    assert!(sim.pending_faults().is_empty());

    // Faulted requests were not processed.
    assert_eq!(sim.accepted_events().len(), 1);
    assert!(sim.contacts().iter().all(|c| c.email.as_deref() != Some("a@example.com")));
    let faults: Vec<Option<String>> = sim.recorded().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        vec![
            Some("rate_limited:7s".into()),
            Some("server_error:503".into()),
            Some("server_error:503".into()),
            Some("unauthorized".into()),
            None
        ]
    );
}

#[tokio::test]
async fn injected_partial_failure_gives_207_for_chosen_indexes() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    sim.inject(Fault::partial_failure(vec![1, 4]));
    // A single-event request does not take it.
    assert_eq!(c.post("/events", &event(0)).await.status, 204);
    let r = c.post("/events/batch", &batch(6)).await;
    assert_eq!(r.status, 207);
    assert_eq!(r.body["failed_events"], json!(2));
    assert_eq!(r.body["errors"][0]["eventIndex"], json!([1, 4]));
    assert_eq!(sim.accepted_events().len(), 1 + 4);

    sim.inject(Fault::partial_failure(vec![0, 1]));
    let r = c.post("/events/batch", &batch(2)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["successful_events"], json!(0));
}

#[tokio::test]
async fn injected_delay_times_out_a_client_but_the_request_still_lands() {
    let sim = unlimited().await;
    sim.inject(Fault::delay(400, 1));
    let http = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let err = http
        .post(format!("{}/events", sim.base_url()))
        .header("api-key", KEY)
        .json(&event(1))
        .send()
        .await
        .expect_err("the client gives up first");
    assert!(err.is_timeout());
    // The server finishes the request after the delay: a real timeout's
    // ambiguity, which the forwarder must survive without duplicating.
    assert!(sim.wait_until(Duration::from_secs(5), |s| !s.accepted_events().is_empty()).await);
    assert_eq!(sim.accepted_events().len(), 1);
    assert_eq!(sim.recorded()[0].fault.as_deref(), Some("delay:400ms"));
}

// ------------------------------------------------------------------ control API and recording

#[tokio::test]
async fn control_api_injects_faults_and_exposes_the_recording() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let root = format!("http://{}", sim.addr());
    let r = c
        .send(
            c.http
                .post(format!("{root}/_sim/faults"))
                .json(&json!([{"kind": "server_error", "status": 502, "times": 1}])),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["pending"].as_array().map(Vec::len), Some(1));
    let r = c.send(c.http.post(format!("{root}/_sim/faults")).json(&json!({"kind": "server_error", "tims": 1}))).await;
    assert_eq!(r.status, 400);

    assert_eq!(c.post("/events", &event(1)).await.status, 502);
    assert_eq!(c.post("/events/batch", &batch(3)).await.status, 202);

    let rec = c.send(c.http.get(format!("{root}/_sim/recorded"))).await.body;
    let requests = rec["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["status"], json!(502));
    assert_eq!(requests[1]["path"], json!("/v3/events/batch"));
    assert_eq!(requests[1]["class"], json!("events"));
    let sent: Value = serde_json::from_str(requests[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, batch(3));
    assert_eq!(rec["accepted_events"].as_array().map(Vec::len), Some(3));
    assert_eq!(rec["stats"]["by_status"]["202"], json!(1));
    assert_eq!(rec["contacts"].as_array().map(Vec::len), Some(3));

    let stats = c.send(c.http.get(format!("{root}/_sim/stats"))).await.body;
    assert_eq!(stats["classes"]["events"]["requests"], json!(2));

    assert_eq!(c.send(c.http.delete(format!("{root}/_sim/faults"))).await.status, 204);
    let r = c.send(c.http.post(format!("{root}/_sim/clock/advance")).json(&json!({"ms": 5}))).await;
    assert_eq!(r.status, 409, "the default clock is real");
}

#[tokio::test]
async fn recording_keeps_order_bodies_and_can_be_cleared() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    c.post("/events", &event(1)).await;
    c.post("/contacts", &json!({"email": "x@example.com"})).await;
    c.get("/nowhere").await;
    let rec = sim.recorded();
    let seen: Vec<(u64, &str, u16)> = rec.iter().map(|r| (r.seq, r.path.as_str(), r.status)).collect();
    assert_eq!(seen, vec![(1, "/v3/events", 204), (2, "/v3/contacts", 201), (3, "/v3/nowhere", 404)]);
    assert_eq!(rec[0].json(), event(1));
    assert!(rec[1].response.contains("\"id\""));
    assert!(rec.windows(2).all(|w| w[0].at() <= w[1].at()));
    sim.clear_recording();
    assert!(sim.recorded().is_empty());
    assert!(sim.accepted_events().is_empty());
    assert_eq!(sim.contacts().len(), 2, "account state survives clearing the recording");
    sim.stop().await.expect("clean stop");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    let r = c.get("/events/batch").await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    let r = c.post("/smtp/email", &json!({})).await;
    assert_eq!((r.status, r.code()), (404, "document_not_found"));
}

#[tokio::test]
async fn injected_stall_times_out_a_client_and_the_request_is_lost() {
    let sim = unlimited().await;
    sim.inject(Fault::stall(300, 1));
    let http = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let err = http
        .post(format!("{}/events", sim.base_url()))
        .header("api-key", KEY)
        .json(&event(1))
        .send()
        .await
        .expect_err("the client gives up first");
    assert!(err.is_timeout());
    assert!(sim.wait_until(Duration::from_secs(5), |s| !s.recorded().is_empty()).await);
    let rec = sim.recorded();
    assert_eq!((rec.len(), rec[0].status, rec[0].fault.as_deref()), (1, 504, Some("stall:300ms")));
    assert!(sim.accepted_events().is_empty(), "a stalled request is never processed");
    // A retry after the stall is the only copy.
    let r = http.post(format!("{}/events", sim.base_url())).header("api-key", KEY).json(&event(1)).send().await;
    assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(204));
    assert_eq!(sim.accepted_events().len(), 1);
}

// ------------------------------------------------------------------ binary

/// The child process, killed however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sluice_brevo_sim_serves_the_api_and_the_control_endpoints() {
    let port = common::free_port();
    let _child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["brevo-sim", "--listen", &format!("127.0.0.1:{port}"), "--api-key", KEY, "--plan", "professional"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sluice brevo-sim"),
    );
    let http = reqwest::Client::new();
    let root = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..400 {
        if http.get(format!("{root}/_sim/stats")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "brevo-sim did not start listening");
    let r = http.post(format!("{root}/v3/events/batch")).header("api-key", KEY).json(&batch(3)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // The professional preset: 20 per second.
    assert_eq!(r.headers()["x-sib-ratelimit-limit"], "20");
    let r = http.post(format!("{root}/v3/events")).json(&event(1)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let rec: Value = http.get(format!("{root}/_sim/recorded")).send().await.unwrap().json().await.unwrap();
    assert_eq!(rec["accepted_events"].as_array().map(Vec::len), Some(3));
    assert_eq!(rec["stats"]["by_status"], json!({"202": 1, "401": 1}));
}

#[tokio::test]
async fn clashing_identifiers_change_nothing() {
    let sim = unlimited().await;
    let c = Client::new(&sim);
    c.post("/contacts", &json!({"email": "a@example.com", "attributes": {"SMS": "+33600000001"}})).await;
    c.post("/contacts", &json!({"email": "b@example.com", "ext_id": "b"})).await;

    // Upserting b with a's phone: refused, and b keeps its old state.
    let r = c
        .post(
            "/contacts",
            &json!({"email": "b@example.com", "updateEnabled": true, "attributes": {"FIRSTNAME": "B", "SMS": "+33600000001"}}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "duplicate_parameter"));
    assert!(sim.contact_by_email("b@example.com").unwrap().attributes.is_empty());

    // Two batch items taking the same phone: the whole call is undone.
    let r = c
        .post(
            "/contacts/batch",
            &json!({"contacts": [
                {"email": "b@example.com", "attributes": {"FIRSTNAME": "B", "SMS": "+33600000009"}},
                {"email": "a@example.com", "attributes": {"SMS": "+33600000009"}}
            ]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "duplicate_parameter"));
    assert!(sim.contact_by_email("b@example.com").unwrap().attributes.is_empty());
    assert_eq!(sim.contact_by_email("a@example.com").unwrap().attributes["SMS"], json!("+33600000001"));

    // An import row clashing with another contact is skipped, the rest applied.
    let r = c
        .post(
            "/contacts/import",
            &json!({"jsonBody": [
                {"email": "b@example.com", "attributes": {"EXT_ID": "taken", "SMS": "+33600000001"}},
                {"email": "c@example.com", "attributes": {"FIRSTNAME": "C"}}
            ], "listIds": [1]}),
        )
        .await;
    assert_eq!(r.status, 202);
    let report = &sim.imports()[0];
    assert_eq!((report.created, report.updated, report.invalid), (1, 0, 1));
    assert_eq!(sim.contact_by_email("b@example.com").unwrap().ext_id.as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_exceed_the_budget() {
    let limits = RateLimits { events: sim::Budget { per_second: Some(10), per_hour: None }, ..RateLimits::unlimited() };
    let sim = sim::start(manual(limits)).await.unwrap();
    let http = reqwest::Client::new();
    let sends = (0..50).map(|i| {
        let http = http.clone();
        let url = format!("{}/events", sim.base_url());
        tokio::spawn(async move {
            http.post(url).header("api-key", KEY).json(&event(i)).send().await.map(|r| r.status().as_u16())
        })
    });
    let statuses: Vec<u16> = futures::future::join_all(sends).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 204).count(), 10);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 40);
    let stats = sim.stats();
    assert_eq!(stats.class(EndpointClass::Events).max_in_any_second, 50, "the recording counts what was sent");
    assert_eq!(sim.accepted_events().len(), 10);
}
