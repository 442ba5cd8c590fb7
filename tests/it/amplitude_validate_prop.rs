//! Property tests of the Amplitude validator: generated valid events always
//! pass, and any single mutation of one event into an invalid field is
//! reported in the right map, under the right field, at exactly its index.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use sluice::ingress::amplitude::validate::{validate_events, DEFAULT_MIN_ID_LENGTH};
use sluice::ingress::IngressError;

/// Ids Amplitude refuses whatever their length; generated ids avoid them.
const PLACEHOLDERS: &[&str] = &["anonymous", "undefined", "unknown", "lmy47d"];

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._@-]{5,40}"
        .prop_filter("not a placeholder id", |s| !PLACEHOLDERS.iter().any(|p| s.eq_ignore_ascii_case(p)))
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[ -~]{0,60}".prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn properties() -> impl Strategy<Value = Value> {
    let leaf = scalar();
    let nested = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_$]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-z_$]{1,12}", nested, 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
}

prop_compose! {
    fn valid_event()(
        event_type in "[A-Za-z0-9 _$\\[\\]]{1,40}",
        ids in prop_oneof![
            (id(), Just(None)).prop_map(|(u, d)| (Some(u), d)),
            (Just(None), id()).prop_map(|(u, d)| (u, Some(d))),
            (id(), id()).prop_map(|(u, d)| (Some(u), Some(d))),
        ],
        time in prop::option::of(0i64..4_000_000_000_000),
        price in prop::option::of(-1e6f64..1e6),
        quantity in prop::option::of(any::<i64>()),
        session_id in prop::option::of(-1i64..4_000_000_000_000),
        event_id in prop::option::of(0u32..1_000_000),
        event_properties in prop::option::of(properties()),
        user_properties in prop::option::of(properties()),
        insert_id in prop::option::of("[a-f0-9-]{8,36}"),
        extra in prop::option::of(scalar()),
    ) -> Value {
        let mut ev = Map::new();
        ev.insert("event_type".into(), Value::from(event_type));
        let (user, device) = ids;
        let optional: [(&str, Option<Value>); 11] = [
            ("user_id", user.map(Value::from)),
            ("device_id", device.map(Value::from)),
            ("time", time.map(Value::from)),
            ("price", price.map(Value::from)),
            ("quantity", quantity.map(Value::from)),
            ("session_id", session_id.map(Value::from)),
            ("event_id", event_id.map(Value::from)),
            ("event_properties", event_properties),
            ("user_properties", user_properties),
            ("insert_id", insert_id.map(Value::from)),
            ("some_unknown_field", extra),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                ev.insert(k.into(), v);
            }
        }
        Value::Object(ev)
    }
}

/// One way to break one event, and the map/field it must be reported under.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    DropEventType,
    NumericEventType,
    IsoTime,
    FloatTime,
    StringPrice,
    FloatQuantity,
    StringSessionId,
    StringEventProperties,
    LongPropertyValue,
    ShortUserId,
    PlaceholderUserId,
    ZeroUuidDeviceId,
    DropIds,
    NumericInsertId,
}

const MUTATIONS: &[Mutation] = &[
    Mutation::DropEventType,
    Mutation::NumericEventType,
    Mutation::IsoTime,
    Mutation::FloatTime,
    Mutation::StringPrice,
    Mutation::FloatQuantity,
    Mutation::StringSessionId,
    Mutation::StringEventProperties,
    Mutation::LongPropertyValue,
    Mutation::ShortUserId,
    Mutation::PlaceholderUserId,
    Mutation::ZeroUuidDeviceId,
    Mutation::DropIds,
    Mutation::NumericInsertId,
];

impl Mutation {
    /// Apply to `ev`; returns (map, field) the validator must report.
    fn apply(self, ev: &mut Map<String, Value>) -> (&'static str, &'static str) {
        const MISSING: &str = "events_with_missing_fields";
        const INVALID: &str = "events_with_invalid_fields";
        const LENGTHS: &str = "events_with_invalid_id_lengths";
        let mut set = |k: &str, v: Value| {
            ev.insert(k.into(), v);
        };
        match self {
            Mutation::DropEventType => {
                ev.remove("event_type");
                (MISSING, "event_type")
            }
            Mutation::NumericEventType => {
                set("event_type", json!(42));
                (INVALID, "event_type")
            }
            Mutation::IsoTime => {
                set("time", json!("2026-01-01T00:00:00Z"));
                (INVALID, "time")
            }
            Mutation::FloatTime => {
                set("time", json!(1.5));
                (INVALID, "time")
            }
            Mutation::StringPrice => {
                set("price", json!("4.99"));
                (INVALID, "price")
            }
            Mutation::FloatQuantity => {
                set("quantity", json!(2.5));
                (INVALID, "quantity")
            }
            Mutation::StringSessionId => {
                set("session_id", json!("s"));
                (INVALID, "session_id")
            }
            Mutation::StringEventProperties => {
                set("event_properties", json!("not an object"));
                (INVALID, "event_properties")
            }
            Mutation::LongPropertyValue => {
                set("event_properties", json!({"k": "é".repeat(1025)}));
                (INVALID, "event_properties")
            }
            Mutation::ShortUserId => {
                set("user_id", json!("abcd"));
                (LENGTHS, "user_id")
            }
            Mutation::PlaceholderUserId => {
                set("user_id", json!("Undefined"));
                (INVALID, "user_id")
            }
            Mutation::ZeroUuidDeviceId => {
                set("device_id", json!("00000000-0000-0000-0000-000000000000"));
                (INVALID, "device_id")
            }
            Mutation::DropIds => {
                ev.remove("user_id");
                ev.remove("device_id");
                (MISSING, "device_id")
            }
            Mutation::NumericInsertId => {
                set("insert_id", json!(7));
                (INVALID, "insert_id")
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn valid_events_always_pass(events in prop::collection::vec(valid_event(), 0..40)) {
        prop_assert!(validate_events(&events, DEFAULT_MIN_ID_LENGTH).is_ok());
    }

    #[test]
    fn one_mutation_is_reported_at_its_index(
        mut events in prop::collection::vec(valid_event(), 1..40),
        pick in any::<prop::sample::Index>(),
        which in 0..MUTATIONS.len(),
    ) {
        let index = pick.index(events.len());
        let Value::Object(ev) = &mut events[index] else { unreachable!("generated events are objects") };
        let (map, field) = MUTATIONS[which].apply(ev);
        let err = validate_events(&events, DEFAULT_MIN_ID_LENGTH).expect_err("a mutated event must be refused");
        let IngressError::InvalidEvents { details, .. } = err else { panic!("expected InvalidEvents, got {err:?}") };
        prop_assert_eq!(Value::Object(details), json!({ map: { field: [index] } }), "{:?}", MUTATIONS[which]);
    }
}
