//! The PostHog hot path's envelope writer: [`Event<RawProps>`] straight to
//! JSON bytes, without serde's per-key and per-character escaping calls.
//!
//! It writes exactly what the derived `Serialize` writes (same fields, same
//! skipping, same values; properties last), which the tests check against a
//! fully populated event built with struct literals: a field added to the
//! envelope fails to compile there until it is written here too.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::{Context, Event, Library, RawProps, UserProperties};

/// Write `event` as its bus payload into `out`.
pub(super) fn write_event(event: &Event<RawProps<'_>>, out: &mut Vec<u8>) {
    let mut o = Obj::open(out);
    o.str("schema", &event.schema);
    o.str("id", &event.id);
    o.str("source", event.source.as_str());
    o.str("source_name", &event.source_name);
    o.str("project", &event.project);
    o.str("kind", event.kind.as_str());
    o.str("name", &event.name);
    match &event.distinct_id {
        Some(d) => o.str("distinct_id", d),
        None => o.raw("distinct_id", b"null"),
    }
    if let Some(email) = &event.email {
        o.str("email", email);
    }
    user_properties(o.key("user_properties"), &event.user_properties);
    if let Some(revenue) = &event.revenue {
        o.serde("revenue", revenue);
    }
    o.time("timestamp", &event.timestamp);
    o.time("received_at", &event.received_at);
    context(o.key("context"), &event.context);
    event.properties.write_json(o.key("properties"));
    o.close();
}

fn user_properties(out: &mut Vec<u8>, u: &UserProperties<RawProps<'_>>) {
    let UserProperties { set, set_once, unset, other } = u;
    let mut o = Obj::open(out);
    set.write_json(o.key("set"));
    set_once.write_json(o.key("set_once"));
    o.serde("unset", unset);
    if !other.is_empty() {
        o.map("other", other);
    }
    o.close();
}

fn context(out: &mut Vec<u8>, c: &Context) {
    let Context { ip, user_agent, library, anon_distinct_id, extra } = c;
    let mut o = Obj::open(out);
    if let Some(ip) = ip {
        o.str("ip", ip);
    }
    if let Some(ua) = user_agent {
        o.str("user_agent", ua);
    }
    if let Some(Library { name, version }) = library {
        let mut lib = Obj::open(o.key("library"));
        lib.str("name", name);
        if let Some(v) = version {
            lib.str("version", v);
        }
        lib.close();
    }
    if let Some(anon) = anon_distinct_id {
        o.str("anon_distinct_id", anon);
    }
    if !extra.is_empty() {
        o.map("extra", extra);
    }
    o.close();
}

/// An object being written: keys are this module's own literals, so they
/// are written without escaping.
struct Obj<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Obj<'o> {
    fn open(out: &'o mut Vec<u8>) -> Obj<'o> {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Start the member `name`; the caller writes its value.
    fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn raw(&mut self, name: &str, json: &[u8]) {
        self.key(name).extend_from_slice(json);
    }

    fn str(&mut self, name: &str, value: &str) {
        string(self.key(name), value);
    }

    fn time(&mut self, name: &str, t: &DateTime<Utc>) {
        rfc3339(self.key(name), t);
    }

    fn map(&mut self, name: &str, map: &Map<String, Value>) {
        self.serde(name, map);
    }

    fn serde<T: serde::Serialize + ?Sized>(&mut self, name: &str, value: &T) {
        // Owned JSON types and plain structs cannot fail to serialize.
        let _ = serde_json::to_writer(&mut *self.key(name), value);
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// `t` as a JSON string the way chrono's own `Serialize` writes it (RFC 3339,
/// `Z`, fractional seconds in groups of three digits, only as many as
/// needed). Written digit by digit: chrono's formatter was 3 % of the
/// PostHog decode. Years outside 0–9999 and leap seconds go through chrono.
fn rfc3339(out: &mut Vec<u8>, utc: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    // The naive UTC value: each accessor on a `DateTime` adds its (zero)
    // offset again.
    let t = utc.naive_utc();
    let nanos = t.nanosecond();
    let year = t.year();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        string(out, &utc.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        return;
    }
    let two = |v: u32| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    let y = year as u32;
    let [y0, y1] = two(y / 100);
    let [y2, y3] = two(y % 100);
    let [mo0, mo1] = two(t.month());
    let [d0, d1] = two(t.day());
    let [h0, h1] = two(t.hour());
    let [mi0, mi1] = two(t.minute());
    let [s0, s1] = two(t.second());
    out.extend_from_slice(&[
        b'"', y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1, b'T', h0, h1, b':', mi0, mi1, b':', s0, s1,
    ]);
    let (mut fraction, digits) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if digits > 0 {
        let mut f = [b'.'; 10];
        for at in (1..=digits).rev() {
            f[at] = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        out.extend_from_slice(&f[..=digits]);
    }
    out.extend_from_slice(b"Z\"");
}

/// A JSON string: copied as is when nothing in it needs an escape (the
/// usual case), else escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether any byte is a control character, `"` or `\\`: the reader's
/// plain-run scan (sixteen bytes at a time) stops before the end.
fn needs_escape(s: &[u8]) -> bool {
    super::scan::plain_run(s) != s.len()
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, Revenue, Source};
    use super::*;

    fn time(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Every field set, with struct literals (no `..`): a new field does
    /// not compile here until the writer above handles it.
    fn full(props: RawProps<'_>) -> Event<RawProps<'_>> {
        Event {
            schema: "1".into(),
            id: "0190a5b2-1c3d-7e4f-8a9b-0c1d2e3f0000".into(),
            source: Source::Posthog,
            source_name: "posthog".into(),
            project: "phc_\"quoted\"".into(),
            kind: Kind::Identify,
            name: "line\nbreak \u{e9} \\ tab\t".into(),
            distinct_id: Some("user-1".into()),
            email: Some("a@b.co".into()),
            properties: props,
            user_properties: UserProperties {
                set: serde_json::from_str(r#"{"plan": "pro", "n": 1.5}"#).unwrap(),
                set_once: serde_json::from_str(r#"{"first": "x"}"#).unwrap(),
                unset: vec!["gone".into()],
                other: serde_json::from_str(r#"{"$add": {"n": 1}}"#).unwrap(),
            },
            revenue: Some(Revenue {
                amount: Some(12.5),
                amount_minor: Some(1250),
                currency: Some("eur".into()),
                price: Some(6.25),
                quantity: Some(2),
                product_id: Some("sku".into()),
                revenue_type: Some("sale".into()),
            }),
            timestamp: time("2026-03-01T11:59:58.123456Z"),
            received_at: time("2026-03-01T12:00:00Z"),
            context: Context {
                ip: Some("203.0.113.7".into()),
                user_agent: Some("ua \"x\"".into()),
                library: Some(Library { name: "web".into(), version: Some("1.2.3".into()) }),
                anon_distinct_id: Some("anon".into()),
                extra: serde_json::from_str(r#"{"historical_migration": true}"#).unwrap(),
            },
        }
    }

    fn both(e: &Event<RawProps<'_>>) -> (Vec<u8>, Vec<u8>) {
        let mut fast = Vec::new();
        write_event(e, &mut fast);
        (fast, serde_json::to_vec(e).unwrap())
    }

    fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn writes_what_the_derived_serializer_writes() {
        let text = r#"{"a": 1, "k\"ey": [true, null], "s": "v"}"#;
        let e = full(RawProps::parse(text).unwrap());
        let (fast, slow) = both(&e);
        assert_eq!(value(&fast), value(&slow));
        assert!(Event::from_payload(&fast).is_ok(), "{}", String::from_utf8_lossy(&fast));

        // Everything optional absent or empty.
        let mut sparse = full(RawProps::default());
        (sparse.distinct_id, sparse.email, sparse.revenue) = (None, None, None);
        sparse.user_properties = UserProperties::default();
        sparse.context = Context::default();
        sparse.timestamp = time("2026-03-01T12:00:00.5Z");
        let (fast, slow) = both(&sparse);
        assert_eq!(value(&fast), value(&slow));
        assert_eq!(fast.len(), slow.len(), "same members, same spelling");
    }

    #[test]
    fn times_are_spelled_as_chrono_spells_them() {
        for t in [
            "2026-03-01T12:00:00Z",
            "2026-03-01T12:00:00.1Z",
            "2026-03-01T12:00:00.123Z",
            "2026-03-01T12:00:00.000001Z",
            "2026-03-01T12:00:00.123456789Z",
            "2026-03-01T12:00:00.120000Z",
            "2026-03-01T12:00:00.000100000Z",
            "2026-03-01T12:00:00.999999999Z",
            "2026-12-31T23:59:59.010Z",
            "1970-01-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "0999-09-09T09:09:09.9Z",
            "9999-12-31T23:59:59.999Z",
            "2016-12-31T23:59:60.5Z",
        ]
        .into_iter()
        .map(time)
        .chain([
            DateTime::from_timestamp(253_402_300_800, 7).unwrap(),
            DateTime::from_timestamp(-62_167_219_201, 0).unwrap(),
        ]) {
            let mut o = Vec::new();
            let mut obj = Obj::open(&mut o);
            obj.time("t", &t);
            obj.close();
            assert_eq!(o, serde_json::to_vec(&serde_json::json!({ "t": t })).unwrap());
        }
    }

    #[test]
    fn the_plain_run_test_finds_every_byte_that_needs_an_escape() {
        let slow = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        // Up to 16 + 8 + 7 bytes: the vector, word and byte loops.
        for len in 0..32 {
            for filler in [b'a', b'~', 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xff] {
                let mut s = vec![filler; len];
                assert_eq!(needs_escape(&s), slow(&s), "{s:?}");
                for at in 0..len {
                    for special in (0u8..0x20).chain([b'"', b'\\', b'!', b'#', b'[', 0x7f, 0x80, 0xdc]) {
                        let keep = s[at];
                        s[at] = special;
                        assert_eq!(needs_escape(&s), slow(&s), "{s:?}");
                        s[at] = keep;
                    }
                }
            }
        }
    }

    #[test]
    fn strings_are_escaped_only_when_needed() {
        for s in ["plain", "quote \" here", "back\\slash", "ctl \u{1}", "tab\t", "é ✓", ""] {
            let mut o = Vec::new();
            string(&mut o, s);
            assert_eq!(o, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
