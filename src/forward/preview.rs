//! `sluice map --config FILE < events.jsonl`: the Brevo requests a mapping
//! produces, printed instead of sent, so a mapping can be checked before it
//! meets real data.
//!
//! Input: one envelope per line (the bus format, as `sluice dlq list`
//! prints inside each letter's `event`). Output: one JSON object per line:
//! `{"request": {"method","url","events","body"}}` for each Brevo call,
//! `{"skipped": ...}` and `{"dead_letter": ...}` for envelopes that make
//! none, and `{"error": ...}` for lines that are not envelopes. All envelopes
//! go through one lane, so the batching shown is the best case.

use std::io::{BufRead, Write};

use serde_json::json;
use tokio::time::Instant;

use super::batcher::{BatchLimits, Lane};
use super::mapping::{map_event, Mapped};
use crate::config::Config;
use crate::event::Event;

/// Counts of what the preview printed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PreviewSummary {
    pub envelopes: usize,
    pub requests: usize,
    pub skipped: usize,
    pub dead_letters: usize,
    pub errors: usize,
}

/// Map every envelope of `input` and print the resulting requests to `out`.
pub fn run(config: &Config, input: impl BufRead, out: &mut dyn Write) -> anyhow::Result<PreviewSummary> {
    let mut summary = PreviewSummary::default();
    let mut lane = Lane::new(BatchLimits::from_config(&config.brevo));
    // Linger never matters here: everything is flushed at the end.
    let now = Instant::now();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let ev = match Event::from_payload(line.as_bytes()) {
            Ok(ev) => ev,
            Err(e) => {
                summary.errors += 1;
                writeln!(out, "{}", json!({"error": {"line": n, "message": format!("not an envelope: {e}")}}))?;
                continue;
            }
        };
        summary.envelopes += 1;
        match map_event(config, &ev) {
            Mapped::Skip(reason) => {
                summary.skipped += 1;
                writeln!(out, "{}", json!({"skipped": {"line": n, "id": ev.id, "name": ev.name, "reason": reason}}))?;
            }
            Mapped::Dead { reason, detail } => {
                summary.dead_letters += 1;
                writeln!(
                    out,
                    "{}",
                    json!({"dead_letter": {"line": n, "id": ev.id, "reason": reason, "detail": detail}})
                )?;
            }
            Mapped::Ops { user, ops } => match lane.check(&ops) {
                Ok(()) => {
                    lane.push(n as u64, &user, ops, now);
                }
                Err(e) => {
                    summary.dead_letters += 1;
                    writeln!(
                        out,
                        "{}",
                        json!({"dead_letter": {"line": n, "id": ev.id, "reason": "too_large", "detail": e.to_string()}})
                    )?;
                }
            },
        }
    }
    let base = config.brevo.base_url.trim_end_matches('/');
    for batch in lane.take_ready(now, std::time::Duration::ZERO, true) {
        let req = batch.request();
        summary.requests += 1;
        let line = json!({"request": {
            "method": "POST",
            "url": format!("{base}{}", req.path),
            "events": req.events,
            "body": req.body,
        }});
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kind, Source};
    use serde_json::Value;

    fn line(kind: Kind, name: &str, id: &str, email: Option<&str>) -> String {
        let mut e = Event::new(Source::Posthog, "posthog", "phc", kind, name, chrono::Utc::now());
        e.distinct_id = Some(id.into());
        e.email = email.map(Into::into);
        String::from_utf8(e.to_record().payload).unwrap()
    }

    #[test]
    fn prints_batched_requests_skips_dead_letters_and_errors() {
        let cfg =
            Config::from_yaml("connectors:\n  posthog:\n    event_mapping: {signed_up: SignUp}\n", "t.yaml", &|_| None)
                .unwrap();
        let mut input = String::new();
        for i in 0..3 {
            input.push_str(&line(Kind::Track, "signed_up", &format!("u{i}"), Some("a@x.io")));
            input.push('\n');
        }
        input.push_str(&line(Kind::Alias, "$create_alias", "u9", None));
        input.push_str("\n\nnot json\n");
        let mut no_id =
            Event::new(Source::Webhook, "stripe", "stripe", Kind::Webhook, "charge.failed", chrono::Utc::now());
        no_id.distinct_id = None;
        input.push_str(&String::from_utf8(no_id.to_record().payload).unwrap());
        let mut out = Vec::new();
        let summary = run(&cfg, input.as_bytes(), &mut out).unwrap();
        assert_eq!(summary, PreviewSummary { envelopes: 5, requests: 1, skipped: 1, dead_letters: 1, errors: 1 });
        let lines: Vec<Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let req = &lines.last().unwrap()["request"];
        assert_eq!(req["url"], "https://api.brevo.com/v3/events/batch");
        assert_eq!(req["events"], 3);
        assert_eq!(req["body"]["events"][2]["event_name"], "SignUp");
        assert_eq!(req["body"]["events"][2]["identifiers"]["ext_id"], "u2");
        assert!(lines.iter().any(|l| l["skipped"]["reason"] == "unsupported_kind"));
        assert!(lines.iter().any(|l| l["dead_letter"]["reason"] == "no_identifier"));
        assert!(lines.iter().any(|l| l["error"]["line"] == 6));
    }
}
