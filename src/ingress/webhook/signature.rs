//! Webhook signature verification: Stripe's `Stripe-Signature` and Standard
//! Webhooks (`webhook-*`, or Svix's `svix-*` names), as one pure function over
//! the scheme, the headers, the exact body bytes, the configured keys, the
//! tolerance and "now" ([`verify`]).
//!
//! * Stripe: `t=<unix>,v1=<hex>[,v1=<hex>...]`; HMAC-SHA256 over `"{t}.{body}"`
//!   keyed with the whole `whsec_...` string. Only `v1` counts: `v0` and any
//!   other scheme are ignored, so a header carrying only those is refused
//!   (downgrade protection). `v1` must be lower-case hex, as Stripe sends it.
//! * Standard: `webhook-id`, `webhook-timestamp`, `webhook-signature` (space
//!   separated `v1,<base64>` entries; `v1a` and other versions are ignored);
//!   HMAC-SHA256 over `"{id}.{timestamp}.{body}"` keyed with the base64-decoded
//!   part of `whsec_<base64>`.
//!
//! A signature is accepted when any candidate matches any key (rotation), the
//! comparison is constant-time and does not stop at the first match, and the
//! number of HMACs computed is the number of keys, whatever the header holds.
//! The signature is checked before the timestamp, so "timestamp out of
//! tolerance" is only ever reported for a genuinely signed request (a replay
//! or a skewed clock), never as a hint to someone guessing signatures. The
//! tolerance applies both ways (Stripe's libraries only refuse old
//! timestamps; refusing far-future ones too is the stricter reading).

use axum::http::HeaderMap;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::config::WebhookScheme;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's header.
pub const STRIPE_SIGNATURE: &str = "stripe-signature";
/// Standard Webhooks' headers, each with the Svix name it replaced.
pub const WEBHOOK_ID: [&str; 2] = ["webhook-id", "svix-id"];
pub const WEBHOOK_TIMESTAMP: [&str; 2] = ["webhook-timestamp", "svix-timestamp"];
pub const WEBHOOK_SIGNATURE: [&str; 2] = ["webhook-signature", "svix-signature"];

/// Longest `webhook-id` accepted: it becomes a dedup key and the envelope id.
pub const MAX_MESSAGE_ID_LEN: usize = 256;

/// Standard Webhooks secrets are base64 with or without padding (the official
/// libraries add the padding themselves before decoding).
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Signatures must be canonical padded base64, as the official libraries
/// decode them: one signature has exactly one accepted spelling.
const SIGNATURE_BASE64: GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One configured secret, ready to verify with: the HMAC state with the key
/// already absorbed, cloned per request.
#[derive(Clone)]
pub struct SigningKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Why a configured secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the secret is empty")]
    Empty,
    #[error("a Standard Webhooks secret must be whsec_<base64>; the part after whsec_ is not base64")]
    NotBase64,
}

impl SigningKey {
    /// The key for `secret` under `scheme`: Stripe uses the whole string as
    /// UTF-8 bytes; Standard Webhooks strips `whsec_` and base64-decodes.
    pub fn new(scheme: WebhookScheme, secret: &str) -> Result<SigningKey, KeyError> {
        let key = match scheme {
            WebhookScheme::Stripe => secret.as_bytes().to_vec(),
            WebhookScheme::Standard => {
                let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
                SECRET_BASE64.decode(b64).map_err(|_| KeyError::NotBase64)?
            }
        };
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        // HMAC accepts keys of any length; this cannot fail.
        let mac = HmacSha256::new_from_slice(&key).map_err(|_| KeyError::Empty)?;
        Ok(SigningKey { mac })
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        #[cfg(test)]
        tests::MACS.with(|n| n.set(n.get() + 1));
        let mut mac = self.mac.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// A `Stripe-Signature` value for `body` at `timestamp`, as Stripe sends it.
    /// For tests, benches and load generators.
    pub fn stripe_header(&self, timestamp: i64, body: &[u8]) -> String {
        format!("t={timestamp},v1={}", hex::encode(self.mac(&[timestamp.to_string().as_bytes(), b".", body])))
    }

    /// A `webhook-signature` entry (`v1,<base64>`) for `body`.
    pub fn standard_signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let sig = self.mac(&[id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body]);
        format!("v1,{}", SIGNATURE_BASE64.encode(sig))
    }
}

/// What a verified request vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed timestamp, Unix seconds.
    pub timestamp: i64,
    /// Standard Webhooks' `webhook-id` (the idempotency key). Stripe carries
    /// its event id in the body instead, so this is `None` for Stripe.
    pub message_id: Option<String>,
}

/// Why a request is not accepted as signed. Messages never name a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is absent or empty (400).
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header is present but cannot be parsed (400).
    #[error("malformed {header} header: {why}")]
    MalformedHeader { header: &'static str, why: &'static str },
    /// No usable signature matches the body for any configured secret (401).
    #[error("signature verification failed: {0}")]
    NoMatch(&'static str),
    /// Genuinely signed, but too old or too far in the future (401).
    #[error(
        "timestamp out of tolerance: signed at {timestamp}, {skew} seconds {direction} the server clock (tolerance {tolerance} seconds)"
    )]
    OutOfTolerance { timestamp: i64, skew: u64, direction: &'static str, tolerance: u64 },
}

impl SignatureError {
    /// Bounded reason label for metrics and the error body's `code`.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader(_) => "missing_signature",
            SignatureError::MalformedHeader { .. } => "malformed_signature",
            SignatureError::NoMatch(_) => "bad_signature",
            SignatureError::OutOfTolerance { .. } => "timestamp_out_of_tolerance",
        }
    }

    /// Missing and malformed headers are the sender's bug (400); the rest is
    /// an authentication failure (401).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, SignatureError::NoMatch(_) | SignatureError::OutOfTolerance { .. })
    }
}

/// Verify a request signed under `scheme` with any of `keys`. `body` must be
/// the exact bytes received; `now` is Unix seconds.
pub fn verify(
    scheme: WebhookScheme,
    headers: &HeaderMap,
    body: &[u8],
    keys: &[SigningKey],
    tolerance_secs: u64,
    now: i64,
) -> Result<Verified, SignatureError> {
    match scheme {
        WebhookScheme::Stripe => {
            let header = header(headers, &[STRIPE_SIGNATURE])?;
            verify_stripe(header, body, keys, tolerance_secs, now)
        }
        WebhookScheme::Standard => {
            let id = header(headers, &WEBHOOK_ID)?;
            let timestamp = header(headers, &WEBHOOK_TIMESTAMP)?;
            let signature = header(headers, &WEBHOOK_SIGNATURE)?;
            verify_standard(id, timestamp, signature, body, keys, tolerance_secs, now)
        }
    }
}

/// The one value of the first of `names` present. Repeated headers are
/// refused rather than guessed between.
fn header<'a>(headers: &'a HeaderMap, names: &[&'static str]) -> Result<&'a str, SignatureError> {
    let Some(&name) = names.iter().find(|n| headers.contains_key(**n)) else {
        return Err(SignatureError::MissingHeader(names[0]));
    };
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(SignatureError::MalformedHeader { header: name, why: "sent more than once" });
    };
    let value =
        value.to_str().map_err(|_| SignatureError::MalformedHeader { header: name, why: "not visible ASCII" })?.trim();
    if value.is_empty() {
        return Err(SignatureError::MissingHeader(name));
    }
    Ok(value)
}

/// Verify a `Stripe-Signature` header value.
pub fn verify_stripe(
    header: &str,
    body: &[u8],
    keys: &[SigningKey],
    tolerance_secs: u64,
    now: i64,
) -> Result<Verified, SignatureError> {
    let malformed = |why| SignatureError::MalformedHeader { header: STRIPE_SIGNATURE, why };
    let mut timestamp = None;
    let mut saw_v1 = false;
    let mut candidates: Vec<[u8; 32]> = Vec::new();
    for item in header.split(',') {
        // Items without `=` carry nothing Stripe defines; like Stripe's own
        // parsers, they are skipped.
        let Some((k, v)) = item.trim().split_once('=') else { continue };
        match k {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed("more than one t="));
                }
                timestamp = Some(parse_timestamp(v).ok_or_else(|| malformed("t= is not a Unix timestamp"))?);
            }
            "v1" => {
                saw_v1 = true;
                if let Some(sig) = decode_lower_hex32(v) {
                    candidates.push(sig);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| malformed("no t= timestamp"))?;
    if candidates.is_empty() {
        return Err(SignatureError::NoMatch(if saw_v1 {
            "no v1 signature is 64 lower-case hex digits"
        } else {
            "no v1 signature (other schemes such as v0 are ignored)"
        }));
    }
    if !any_match(keys, &[timestamp.to_string().as_bytes(), b".", body], &candidates) {
        return Err(SignatureError::NoMatch("no v1 signature matches the body for any configured secret"));
    }
    check_tolerance(timestamp, tolerance_secs, now)?;
    Ok(Verified { timestamp, message_id: None })
}

/// Verify Standard Webhooks header values.
pub fn verify_standard(
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    keys: &[SigningKey],
    tolerance_secs: u64,
    now: i64,
) -> Result<Verified, SignatureError> {
    let malformed = |header, why| SignatureError::MalformedHeader { header, why };
    // The signed content is dot-delimited, so an id with a dot could be
    // re-split; the spec forbids it.
    if id.len() > MAX_MESSAGE_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'.') {
        return Err(malformed(WEBHOOK_ID[0], "must be at most 256 visible ASCII characters without '.'"));
    }
    let ts = parse_timestamp(timestamp).ok_or_else(|| malformed(WEBHOOK_TIMESTAMP[0], "not a Unix timestamp"))?;
    let mut saw_v1 = false;
    let mut candidates: Vec<[u8; 32]> = Vec::new();
    for entry in signature.split_ascii_whitespace() {
        let Some((version, sig)) = entry.split_once(',') else {
            return Err(malformed(WEBHOOK_SIGNATURE[0], "entries must be <version>,<base64>"));
        };
        if version != "v1" {
            continue;
        }
        saw_v1 = true;
        if let Ok(bytes) = SIGNATURE_BASE64.decode(sig) {
            if let Ok(sig) = <[u8; 32]>::try_from(bytes.as_slice()) {
                candidates.push(sig);
            }
        }
    }
    if candidates.is_empty() {
        return Err(SignatureError::NoMatch(if saw_v1 {
            "no v1 signature is a base64 HMAC-SHA256"
        } else {
            "no v1 signature (other versions such as v1a are not supported)"
        }));
    }
    let ts_text = ts.to_string();
    if !any_match(keys, &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body], &candidates) {
        return Err(SignatureError::NoMatch("no v1 signature matches the body for any configured secret"));
    }
    check_tolerance(ts, tolerance_secs, now)?;
    Ok(Verified { timestamp: ts, message_id: Some(id.to_string()) })
}

/// Whether any candidate equals the MAC of `parts` under any key, in time
/// independent of which (if any) matched.
fn any_match(keys: &[SigningKey], parts: &[&[u8]], candidates: &[[u8; 32]]) -> bool {
    let mut matched = Choice::from(0);
    for key in keys {
        let expected = key.mac(parts);
        for c in candidates {
            matched |= expected.ct_eq(c);
        }
    }
    matched.into()
}

/// Unix seconds written as decimal digits only (no sign, no fraction).
fn parse_timestamp(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn decode_lower_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn check_tolerance(timestamp: i64, tolerance_secs: u64, now: i64) -> Result<(), SignatureError> {
    let skew = now.abs_diff(timestamp);
    if skew > tolerance_secs {
        let direction = if timestamp < now { "behind" } else { "ahead of" };
        return Err(SignatureError::OutOfTolerance { timestamp, skew, direction, tolerance: tolerance_secs });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    // CONTRACTS.md §3, checked with the official stripe library.
    const STRIPE_SECRET: &str = "whsec_test_secret";
    const STRIPE_T: i64 = 1_700_000_000;
    const STRIPE_BODY: &[u8] = br#"{"id":"evt_test","object":"event","type":"payment_intent.succeeded"}"#;
    const STRIPE_V1: &str = "f457ee3d89f52f9f02936e1cd1173dd5dfa132cdc78ec55ea964a53098c5a1c0";

    // CONTRACTS.md §4, the Standard Webhooks reference vector.
    const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const STD_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const STD_T: i64 = 1_614_265_330;
    const STD_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const STD_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    thread_local! {
        /// HMACs computed on this thread (counted by `SigningKey::mac`).
        pub(super) static MACS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn macs_for(f: impl FnOnce()) -> usize {
        MACS.with(|n| n.set(0));
        f();
        MACS.with(|n| n.get())
    }

    fn stripe_key(s: &str) -> SigningKey {
        SigningKey::new(WebhookScheme::Stripe, s).unwrap()
    }
    fn std_key(s: &str) -> SigningKey {
        SigningKey::new(WebhookScheme::Standard, s).unwrap()
    }

    fn stripe(header: &str, body: &[u8], keys: &[SigningKey], now: i64) -> Result<Verified, SignatureError> {
        let mut h = HeaderMap::new();
        h.insert("Stripe-Signature", HeaderValue::from_str(header).unwrap());
        verify(WebhookScheme::Stripe, &h, body, keys, 300, now)
    }

    fn standard(id: &str, ts: &str, sig: &str, body: &[u8], keys: &[SigningKey]) -> Result<Verified, SignatureError> {
        verify_standard(id, ts, sig, body, keys, 300, STD_T)
    }

    #[test]
    fn stripe_contract_vector() {
        let key = stripe_key(STRIPE_SECRET);
        assert_eq!(key.stripe_header(STRIPE_T, STRIPE_BODY), format!("t={STRIPE_T},v1={STRIPE_V1}"));
        let ok = stripe(&format!("t={STRIPE_T},v1={STRIPE_V1}"), STRIPE_BODY, &[key], STRIPE_T).unwrap();
        assert_eq!(ok, Verified { timestamp: STRIPE_T, message_id: None });
    }

    #[test]
    fn standard_contract_vector() {
        let key = std_key(STD_SECRET);
        assert_eq!(key.standard_signature(STD_ID, STD_T, STD_BODY), STD_SIG);
        let ok = standard(STD_ID, &STD_T.to_string(), STD_SIG, STD_BODY, &[key]).unwrap();
        assert_eq!(ok, Verified { timestamp: STD_T, message_id: Some(STD_ID.into()) });
    }

    #[test]
    fn standard_headers_and_svix_names() {
        let key = std_key(STD_SECRET);
        for i in 0..2 {
            let mut h = HeaderMap::new();
            h.insert(WEBHOOK_ID[i], HeaderValue::from_static(STD_ID));
            h.insert(WEBHOOK_TIMESTAMP[i], HeaderValue::from_str(&STD_T.to_string()).unwrap());
            h.insert(WEBHOOK_SIGNATURE[i], HeaderValue::from_static(STD_SIG));
            let v = verify(WebhookScheme::Standard, &h, STD_BODY, std::slice::from_ref(&key), 300, STD_T).unwrap();
            assert_eq!(v.message_id.as_deref(), Some(STD_ID), "{}", WEBHOOK_ID[i]);
        }
    }

    /// The comparison is the constant-time one (`subtle`'s `ct_eq` over
    /// every key × candidate): a match on the first key computes exactly as
    /// many HMACs as a match on the last or no match at all, and the refusal
    /// reads the same whether a candidate is close or nowhere near.
    #[test]
    fn verification_work_and_refusal_do_not_depend_on_where_or_how_close_a_match_is() {
        let keys = [stripe_key("whsec_a"), stripe_key("whsec_b"), stripe_key("whsec_c")];
        let good = |k: &SigningKey| k.stripe_header(STRIPE_T, STRIPE_BODY);
        for signer in &keys {
            let header = good(signer);
            let n = macs_for(|| {
                stripe(&header, STRIPE_BODY, &keys, STRIPE_T).unwrap();
            });
            assert_eq!(n, keys.len(), "a match still computes one HMAC per key");
        }
        let valid = good(&keys[0]);
        let hex_sig = valid.rsplit_once('=').unwrap().1.to_string();
        let last_flipped = {
            let mut b = hex_sig.clone().into_bytes();
            b[63] = if b[63] == b'0' { b'1' } else { b'0' };
            String::from_utf8(b).unwrap()
        };
        let first_flipped = {
            let mut b = hex_sig.clone().into_bytes();
            b[0] = if b[0] == b'0' { b'1' } else { b'0' };
            String::from_utf8(b).unwrap()
        };
        let mut refusals = Vec::new();
        for sig in [last_flipped, first_flipped, "0".repeat(64), hex::encode([0xffu8; 32])] {
            let header = format!("t={STRIPE_T},v1={sig}");
            let n = macs_for(|| refusals.push(stripe(&header, STRIPE_BODY, &keys, STRIPE_T).unwrap_err().to_string()));
            assert_eq!(n, keys.len(), "no match computes one HMAC per key too");
        }
        assert!(refusals.windows(2).all(|w| w[0] == w[1]), "a near miss must read like any miss: {refusals:?}");
        // Several candidates: still keys × candidates comparisons, one HMAC per key.
        let many = format!("t={STRIPE_T},v1={},v1={},v1={hex_sig}", "1".repeat(64), "2".repeat(64));
        assert_eq!(macs_for(|| drop(stripe(&many, STRIPE_BODY, &keys, STRIPE_T).unwrap())), keys.len());
    }

    #[test]
    fn rotation_accepts_any_key_and_any_candidate() {
        let old = stripe_key("whsec_old");
        let new = stripe_key("whsec_new");
        let keys = [old.clone(), new.clone()];
        for signer in [&old, &new] {
            stripe(&signer.stripe_header(STRIPE_T, STRIPE_BODY), STRIPE_BODY, &keys, STRIPE_T).unwrap();
        }
        // Stripe signs with both secrets while one is being rolled.
        let both = format!(
            "{},v1={}",
            new.stripe_header(STRIPE_T, STRIPE_BODY),
            old.stripe_header(STRIPE_T, STRIPE_BODY).rsplit_once('=').unwrap().1
        );
        stripe(&both, STRIPE_BODY, std::slice::from_ref(&old), STRIPE_T).unwrap();
        stripe(&both, STRIPE_BODY, std::slice::from_ref(&new), STRIPE_T).unwrap();

        let s_old = std_key("whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA==");
        let s_new = std_key(STD_SECRET);
        let sig = format!(
            "{} {}",
            s_old.standard_signature(STD_ID, STD_T, STD_BODY),
            s_new.standard_signature(STD_ID, STD_T, STD_BODY)
        );
        standard(STD_ID, &STD_T.to_string(), &sig, STD_BODY, std::slice::from_ref(&s_new)).unwrap();
        standard(STD_ID, &STD_T.to_string(), &sig, STD_BODY, &[s_old, s_new]).unwrap();
    }

    #[test]
    fn stripe_rejections() {
        let key = stripe_key(STRIPE_SECRET);
        let keys = [key.clone()];
        let good = format!("t={STRIPE_T},v1={STRIPE_V1}");
        let reason = |h: &str, body: &[u8], now: i64| stripe(h, body, &keys, now).unwrap_err().reason();

        let tampered_body = br#"{"id":"evt_test","object":"event","type":"payment_intent.succeedee"}"#;
        assert_eq!(reason(&good, tampered_body, STRIPE_T), "bad_signature");
        let tampered_t = format!("t={},v1={STRIPE_V1}", STRIPE_T + 1);
        assert_eq!(reason(&tampered_t, STRIPE_BODY, STRIPE_T), "bad_signature");
        let unknown = stripe_key("whsec_someone_else").stripe_header(STRIPE_T, STRIPE_BODY);
        assert_eq!(reason(&unknown, STRIPE_BODY, STRIPE_T), "bad_signature");
        let v0_only = format!("t={STRIPE_T},v0={STRIPE_V1}");
        let err = stripe(&v0_only, STRIPE_BODY, &keys, STRIPE_T).unwrap_err();
        assert_eq!(err.reason(), "bad_signature");
        assert!(err.to_string().contains("v0 are ignored"), "{err}");
        let upper = format!("t={STRIPE_T},v1={}", STRIPE_V1.to_uppercase());
        assert_eq!(reason(&upper, STRIPE_BODY, STRIPE_T), "bad_signature");

        let stale = stripe(&good, STRIPE_BODY, &keys, STRIPE_T + 301).unwrap_err();
        assert_eq!(stale.reason(), "timestamp_out_of_tolerance");
        assert!(stale.to_string().contains("301 seconds behind"), "{stale}");
        let future = stripe(&good, STRIPE_BODY, &keys, STRIPE_T - 301).unwrap_err();
        assert_eq!(future.reason(), "timestamp_out_of_tolerance");
        assert!(future.to_string().contains("ahead of"), "{future}");
        // The boundary itself is inside the tolerance.
        stripe(&good, STRIPE_BODY, &keys, STRIPE_T + 300).unwrap();
        stripe(&good, STRIPE_BODY, &keys, STRIPE_T - 300).unwrap();

        for bad in [
            format!("v1={STRIPE_V1}"),
            format!("t=abc,v1={STRIPE_V1}"),
            format!("t=-5,v1={STRIPE_V1}"),
            format!("t={STRIPE_T},t={STRIPE_T},v1={STRIPE_V1}"),
            "garbage".to_string(),
        ] {
            assert_eq!(reason(&bad, STRIPE_BODY, STRIPE_T), "malformed_signature", "{bad}");
        }
        let err = verify(WebhookScheme::Stripe, &HeaderMap::new(), STRIPE_BODY, &keys, 300, STRIPE_T).unwrap_err();
        assert_eq!(err, SignatureError::MissingHeader(STRIPE_SIGNATURE));
        assert_eq!(reason("  ", STRIPE_BODY, STRIPE_T), "missing_signature");

        let mut twice = HeaderMap::new();
        twice.append(STRIPE_SIGNATURE, HeaderValue::from_str(&good).unwrap());
        twice.append(STRIPE_SIGNATURE, HeaderValue::from_str(&good).unwrap());
        let err = verify(WebhookScheme::Stripe, &twice, STRIPE_BODY, &keys, 300, STRIPE_T).unwrap_err();
        assert_eq!(err.reason(), "malformed_signature");
    }

    #[test]
    fn stripe_ignores_unknown_items_and_spaces() {
        let keys = [stripe_key(STRIPE_SECRET)];
        let h = format!("t={STRIPE_T}, v0=00, v1=nothex, foo, v1={STRIPE_V1}, v2=x");
        stripe(&h, STRIPE_BODY, &keys, STRIPE_T).unwrap();
    }

    #[test]
    fn standard_rejections() {
        let key = std_key(STD_SECRET);
        let keys = [key.clone()];
        let t = STD_T.to_string();
        let reason =
            |id: &str, ts: &str, sig: &str, body: &[u8]| standard(id, ts, sig, body, &keys).unwrap_err().reason();

        assert_eq!(reason(STD_ID, &t, STD_SIG, br#"{"test": 2432232315}"#), "bad_signature");
        assert_eq!(reason(STD_ID, &(STD_T + 1).to_string(), STD_SIG, STD_BODY), "bad_signature");
        assert_eq!(reason("msg_other", &t, STD_SIG, STD_BODY), "bad_signature");
        let unknown = std_key("whsec_c29tZW9uZS1lbHNlLXNvbWVvbmUtZWxzZQ==").standard_signature(STD_ID, STD_T, STD_BODY);
        assert_eq!(reason(STD_ID, &t, &unknown, STD_BODY), "bad_signature");
        let v1a_only = STD_SIG.replacen("v1,", "v1a,", 1);
        assert_eq!(reason(STD_ID, &t, &v1a_only, STD_BODY), "bad_signature");

        let signed_at = |ts: i64| key.standard_signature(STD_ID, ts, STD_BODY);
        let stale =
            verify_standard(STD_ID, &(STD_T - 301).to_string(), &signed_at(STD_T - 301), STD_BODY, &keys, 300, STD_T);
        assert_eq!(stale.unwrap_err().reason(), "timestamp_out_of_tolerance");
        let future =
            verify_standard(STD_ID, &(STD_T + 301).to_string(), &signed_at(STD_T + 301), STD_BODY, &keys, 300, STD_T);
        assert_eq!(future.unwrap_err().reason(), "timestamp_out_of_tolerance");

        assert_eq!(reason(STD_ID, "1614265330.5", STD_SIG, STD_BODY), "malformed_signature");
        assert_eq!(reason(STD_ID, "soon", STD_SIG, STD_BODY), "malformed_signature");
        assert_eq!(reason("msg.with.dots", &t, STD_SIG, STD_BODY), "malformed_signature");
        assert_eq!(reason(&"m".repeat(257), &t, STD_SIG, STD_BODY), "malformed_signature");
        assert_eq!(reason(STD_ID, &t, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", STD_BODY), "malformed_signature");
        // The same bytes without padding are not the canonical spelling.
        assert_eq!(reason(STD_ID, &t, STD_SIG.trim_end_matches('='), STD_BODY), "bad_signature");

        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_static(STD_ID));
        h.insert("webhook-signature", HeaderValue::from_static(STD_SIG));
        let err = verify(WebhookScheme::Standard, &h, STD_BODY, &keys, 300, STD_T).unwrap_err();
        assert_eq!(err, SignatureError::MissingHeader("webhook-timestamp"));
    }

    #[test]
    fn standard_secret_decoding() {
        // Unpadded base64 is what some senders print; both decode alike.
        let padded = std_key("whsec_c2VjcmV0LWtleS0xMg==");
        let bare = std_key("c2VjcmV0LWtleS0xMg");
        assert_eq!(padded.standard_signature("m", 1, b"x"), bare.standard_signature("m", 1, b"x"));
        assert_eq!(SigningKey::new(WebhookScheme::Standard, "whsec_not base64!").unwrap_err(), KeyError::NotBase64);
        assert_eq!(SigningKey::new(WebhookScheme::Standard, "whsec_").unwrap_err(), KeyError::Empty);
        assert_eq!(SigningKey::new(WebhookScheme::Stripe, "").unwrap_err(), KeyError::Empty);
    }

    #[test]
    fn errors_never_name_a_secret() {
        let keys = [stripe_key(STRIPE_SECRET), stripe_key("whsec_second")];
        let err = stripe(&format!("t={STRIPE_T},v1={}", "0".repeat(64)), STRIPE_BODY, &keys, STRIPE_T).unwrap_err();
        let text = format!("{err} {err:?} {:?}", keys[0]);
        assert!(!text.contains("whsec_") && !text.contains("second"), "{text}");
    }

    /// Flip one bit pattern at `index` of `s`, kept as bytes.
    fn flip(s: &[u8], index: usize, mask: u8) -> Vec<u8> {
        let mut out = s.to_vec();
        let i = index % out.len();
        out[i] ^= mask;
        out
    }

    fn header_map(pairs: &[(&'static str, Vec<u8>)]) -> Option<HeaderMap> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_bytes(v).ok()?);
        }
        Some(h)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn stripe_any_flip_fails(
            body in proptest::collection::vec(any::<u8>(), 1..2048),
            t in 1_000_000_000i64..4_000_000_000,
            part in 0usize..3,
            index in any::<usize>(),
            mask in 1u8..=255,
        ) {
            let key = stripe_key(STRIPE_SECRET);
            let header = key.stripe_header(t, &body);
            let (ts, sig) = header.split_once(',').unwrap();
            let (mut ts, mut sig, mut body) = (ts.as_bytes().to_vec(), sig.as_bytes().to_vec(), body);
            match part {
                0 => body = flip(&body, index, mask),
                // Flip inside the values, after `t=` / `v1=`.
                1 => ts = [&ts[..2], &flip(&ts[2..], index, mask)].concat(),
                _ => sig = [&sig[..3], &flip(&sig[3..], index, mask)].concat(),
            }
            let value = [ts, b",".to_vec(), sig].concat();
            if let Some(h) = header_map(&[(STRIPE_SIGNATURE, value)]) {
                prop_assert!(verify(WebhookScheme::Stripe, &h, &body, &[key], 300, t).is_err());
            }
        }

        #[test]
        fn standard_any_flip_fails(
            body in proptest::collection::vec(any::<u8>(), 1..2048),
            t in 1_000_000_000i64..4_000_000_000,
            part in 0usize..4,
            index in any::<usize>(),
            mask in 1u8..=255,
        ) {
            let key = std_key(STD_SECRET);
            let sig = key.standard_signature(STD_ID, t, &body);
            let (mut id, mut ts, mut sig, mut body) =
                (STD_ID.as_bytes().to_vec(), t.to_string().into_bytes(), sig.into_bytes(), body);
            match part {
                0 => body = flip(&body, index, mask),
                1 => ts = flip(&ts, index, mask),
                2 => sig = [&sig[..3], &flip(&sig[3..], index, mask)].concat(),
                _ => id = flip(&id, index, mask),
            }
            let h = header_map(&[("webhook-id", id), ("webhook-timestamp", ts), ("webhook-signature", sig)]);
            if let Some(h) = h {
                prop_assert!(verify(WebhookScheme::Standard, &h, &body, &[key], 300, t).is_err());
            }
        }

        #[test]
        fn random_stripe_header_never_panics(value in proptest::collection::vec(any::<u8>(), 0..512), body in any::<Vec<u8>>()) {
            let keys = [stripe_key(STRIPE_SECRET)];
            if let Some(h) = header_map(&[(STRIPE_SIGNATURE, value)]) {
                prop_assert!(verify(WebhookScheme::Stripe, &h, &body, &keys, 300, STRIPE_T).is_err());
            }
        }

        #[test]
        fn structured_stripe_header_never_panics(
            items in proptest::collection::vec(("[tv01 ]{0,3}", "[=,]?", "[0-9a-f=, -]{0,70}"), 0..6),
        ) {
            let value: String = items.iter().map(|(k, eq, v)| format!("{k}{eq}{v}")).collect::<Vec<_>>().join(",");
            let keys = [stripe_key(STRIPE_SECRET)];
            prop_assert!(verify_stripe(&value, STRIPE_BODY, &keys, 300, STRIPE_T).is_err(), "{} verified", value);
        }

        #[test]
        fn random_standard_headers_never_panic(
            id in "\\PC{0,300}",
            ts in "[0-9.+-]{0,25}",
            sig in "[v1a, ]{0,4}[A-Za-z0-9+/= ,]{0,120}",
            body in any::<Vec<u8>>(),
        ) {
            let keys = [std_key(STD_SECRET)];
            prop_assert!(verify_standard(&id, &ts, &sig, &body, &keys, 300, STD_T).is_err());
        }
    }
}
