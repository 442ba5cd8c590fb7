//! From request bytes to the JSON text of a capture payload: where the
//! payload sits (body, form field `data`, query `?data=`), how it is wrapped
//! (gzip, LZ-string base64, plain base64, sometimes several layers), and the
//! hard cap on what it may inflate to.
//!
//! The rules follow what PostHog's capture service accepts from the SDKs
//! in the wild: the `compression` hint comes from the query, then the form,
//! then `Content-Encoding`; gzip is also recognised by its magic bytes
//! because some clients compress without saying so; a body that is entirely
//! base64 is unwrapped, including form bodies whose `+` became spaces.

use std::borrow::Cow;
use std::io::Read;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use super::lz64::{self, Lz64Error};
use super::{RequestFacts, DECOMPRESSED_LIMIT};
use crate::ingress::IngressError;

/// How the sender says its payload is wrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Lz64,
    Base64,
}

impl Compression {
    /// The names SDKs use; unknown names are ignored (PostHog falls back to
    /// sniffing rather than refusing).
    pub fn parse(name: &str) -> Option<Compression> {
        match name.trim().to_ascii_lowercase().as_str() {
            "gzip" | "gzip-js" => Some(Compression::Gzip),
            "lz64" | "lz-string" => Some(Compression::Lz64),
            "base64" | "b64" => Some(Compression::Base64),
            _ => None,
        }
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const FORM_MIME: &str = "application/x-www-form-urlencoded";

/// The JSON text of a v0 capture request.
pub fn payload<'b>(facts: &RequestFacts<'_>, body: &'b [u8]) -> Result<Cow<'b, [u8]>, IngressError> {
    let query_data = facts.query_param("data").filter(|d| !d.is_empty());
    let (raw, from_query): (Cow<'b, [u8]>, bool) = match query_data {
        Some(d) => (Cow::Owned(restore_plus(d).into_bytes()), true),
        None if !body.is_empty() => (Cow::Borrowed(body), false),
        None => return Err(malformed("empty_payload", "the request carries no payload")),
    };

    let query_hint = facts.query_param("compression").and_then(|c| Compression::parse(&c));
    let header_hint = facts.header("content-encoding").and_then(Compression::parse);

    // A whole body in base64 (some clients wrap everything once more). An
    // LZ-string payload is base64 text too, and must stay as it is.
    let lz64_hinted = query_hint.or(header_hint) == Some(Compression::Lz64);
    let raw = if !lz64_hinted && !looks_like_form(&raw) && looks_like_base64(&raw, false) {
        match base64_decode(&raw) {
            Some(bytes) => Cow::Owned(bytes),
            None => raw,
        }
    } else {
        raw
    };

    let mut form_compression = None;
    let raw = if !from_query && facts.mime_type().as_deref() == Some(FORM_MIME) {
        if !looks_like_form(&raw) {
            return Err(malformed("invalid_form", "expected a form body with a data field"));
        }
        let mut data = None;
        for (k, v) in url::form_urlencoded::parse(&raw) {
            match &*k {
                "data" if data.is_none() => data = Some(v.into_owned()),
                "compression" if form_compression.is_none() => form_compression = Compression::parse(&v),
                _ => {}
            }
        }
        match data {
            Some(d) if !d.is_empty() => Cow::Owned(restore_plus(d).into_bytes()),
            _ => return Err(malformed("empty_payload", "the form has no data field")),
        }
    } else {
        raw
    };

    let hint = query_hint.or(form_compression).or(header_hint);

    let compressed_len = raw.len();
    // Whether this step decoded the body: only then is there a ratio to
    // report (a plain body, the request's bytes or the form field's, has none).
    let mut decoded = true;
    let mut text: Cow<'b, [u8]> = match hint {
        Some(Compression::Gzip) => Cow::Owned(gunzip(&raw)?),
        _ if raw.starts_with(&GZIP_MAGIC) => Cow::Owned(gunzip(&raw)?),
        Some(Compression::Lz64) => Cow::Owned(lz64_text(&raw)?.into_bytes()),
        Some(Compression::Base64) if looks_like_base64(&raw, false) => {
            let bytes = base64_decode(&raw).ok_or_else(|| malformed("invalid_base64", "payload is not base64"))?;
            if bytes.starts_with(&GZIP_MAGIC) {
                Cow::Owned(gunzip(&bytes)?)
            } else {
                Cow::Owned(bytes)
            }
        }
        // Base64 already unwrapped by the whole-body step above, or none.
        Some(Compression::Base64) | None => {
            decoded = false;
            raw
        }
    };

    // Still base64 after unwrapping (form `data=` holding base64 JSON, or
    // base64 inside gzip): one more layer. JSON never looks like base64, so
    // this cannot misread a valid payload.
    if looks_like_base64(&text, false) {
        if let Some(bytes) = base64_decode(&text) {
            text = if bytes.starts_with(&GZIP_MAGIC) { Cow::Owned(gunzip(&bytes)?) } else { Cow::Owned(bytes) };
            decoded = true;
        }
    }
    if text.len() > DECOMPRESSED_LIMIT {
        return Err(IngressError::TooLarge { what: "decoded payload", limit: DECOMPRESSED_LIMIT });
    }
    if decoded {
        crate::metrics::decompression("posthog", compressed_len, text.len());
    }
    Ok(text)
}

/// Inflate gzip, refusing (413) before holding more than the cap.
pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, IngressError> {
    inflate(flate2::read::GzDecoder::new(data), "invalid_gzip", "gzip")
}

/// Inflate zlib-wrapped deflate (RFC 1950), as HTTP `Content-Encoding: deflate` means.
pub fn inflate_zlib(data: &[u8]) -> Result<Vec<u8>, IngressError> {
    inflate(flate2::read::ZlibDecoder::new(data), "invalid_deflate", "deflate")
}

/// Read a decoder to its end, stopping one byte past the cap.
pub fn inflate(reader: impl Read, code: &'static str, what: &str) -> Result<Vec<u8>, IngressError> {
    let mut out = Vec::new();
    reader
        .take(DECOMPRESSED_LIMIT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| malformed(code, format!("invalid {what} data: {e}")))?;
    if out.len() > DECOMPRESSED_LIMIT {
        return Err(IngressError::TooLarge { what: "decompressed payload", limit: DECOMPRESSED_LIMIT });
    }
    Ok(out)
}

fn lz64_text(data: &[u8]) -> Result<String, IngressError> {
    // The cap counts UTF-16 units; UTF-8 is never shorter, so nothing that
    // fits in the byte cap is refused here. The byte cap is checked after.
    let units = lz64::decompress_base64(data, DECOMPRESSED_LIMIT).map_err(|e| match e {
        Lz64Error::TooLarge => IngressError::TooLarge { what: "decompressed payload", limit: DECOMPRESSED_LIMIT },
        Lz64Error::Invalid => malformed("invalid_lz64", "payload is not LZ-string base64"),
    })?;
    String::from_utf16(&units).map_err(|_| malformed("invalid_lz64", "LZ-string payload is not valid UTF-16"))
}

/// Does this look like `data=...&compression=...`? Checks the first
/// characters for a field PostHog clients send, like PostHog's capture does.
pub fn looks_like_form(payload: &[u8]) -> bool {
    const FIELDS: [&[u8]; 5] = [b"data=", b"_=", b"ip=", b"compression=", b"ver="];
    let head = &payload[..payload.len().min(128)];
    // A field starts the head or follows an `&` (a JSON body has none there
    // usually: one scan, no window compare per byte).
    std::iter::once(0)
        .chain(memchr::memchr_iter(b'&', head).map(|i| i + 1))
        .any(|start| FIELDS.iter().any(|field| head[start..].starts_with(field)))
}

/// A cheap test for "this is base64": the first 128 bytes are in the
/// alphabet and the length is a multiple of 4. `loose` also allows spaces
/// (a `+` that form decoding turned into a space).
pub fn looks_like_base64(payload: &[u8], loose: bool) -> bool {
    !payload.is_empty()
        && payload.len() % 4 == 0
        && payload
            .iter()
            .take(128)
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') || (loose && *b == b' '))
}

/// Form and query decoding turn `+` into a space; base64 never contains
/// spaces, so a base64-looking value gets its `+` back.
fn restore_plus(value: String) -> String {
    if value.contains(' ') && looks_like_base64(value.as_bytes(), true) {
        value.replace(' ', "+")
    } else {
        value
    }
}

/// Standard or URL-safe base64, padded or not.
pub fn base64_decode(data: &[u8]) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    const LENIENT_URL: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let trimmed = data.trim_ascii();
    LENIENT.decode(trimmed).or_else(|_| LENIENT_URL.decode(trimmed)).ok()
}

fn malformed(code: &'static str, message: impl Into<String>) -> IngressError {
    IngressError::Malformed { code, message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names() {
        assert_eq!(Compression::parse("gzip-js"), Some(Compression::Gzip));
        assert_eq!(Compression::parse("GZIP"), Some(Compression::Gzip));
        assert_eq!(Compression::parse("lz-string"), Some(Compression::Lz64));
        assert_eq!(Compression::parse("lz64"), Some(Compression::Lz64));
        assert_eq!(Compression::parse("b64"), Some(Compression::Base64));
        assert_eq!(Compression::parse("base64"), Some(Compression::Base64));
        assert_eq!(Compression::parse("br"), None);
    }

    #[test]
    fn form_and_base64_sniffing() {
        assert!(looks_like_form(b"data=abc&compression=lz64"));
        assert!(looks_like_form(b"compression=lz64&data=abc"));
        assert!(!looks_like_form(br#"{"data=":1}"#));
        assert!(looks_like_form(b"x=1&ver=2"), "a field after an `&`");
        assert!(!looks_like_form(b"x=1&&version=2&"), "only whole field names count");
        // Only the first 128 bytes are looked at.
        let late = [&[b'x'; 125][..], b"&ip=1"].concat();
        assert!(!looks_like_form(&late));
        let early = [&[b'x'; 122][..], b"&ip=1"].concat();
        assert!(looks_like_form(&early));
        assert!(looks_like_base64(b"eyJhIjoxfQ==", false));
        assert!(!looks_like_base64(br#"{"a":1}"#, false));
        assert!(!looks_like_base64(b"ab c", false));
        assert!(looks_like_base64(b"ab c", true));
        assert_eq!(base64_decode(b"eyJhIjoxfQ").unwrap(), br#"{"a":1}"#);
        assert_eq!(base64_decode(b"-_8=").unwrap(), vec![0xfb, 0xff]);
    }

    #[test]
    fn only_a_decoded_body_records_a_decompression_ratio() {
        use axum::http::HeaderMap;
        use std::io::Write;
        let json =
            br#"{"api_key":"phc_x","batch":[{"event":"e","distinct_id":"u","properties":{"k":"vvvvvvvvvvvvvvvv"}}]}"#;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(json).unwrap();
        let gz = enc.finish().unwrap();
        let form = b"data=eyJhIjoxfQ%3D%3D".to_vec();
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let count = |label: &str| {
            let text = handle.render();
            text.lines()
                .find(|l| l.starts_with(&format!("sluice_ingress_decompression_ratio_{label}")))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .unwrap_or(0.0)
        };
        let plain = HeaderMap::new();
        let mut form_headers = HeaderMap::new();
        form_headers.insert("content-type", FORM_MIME.parse().unwrap());
        let facts = |headers| RequestFacts { path: "/batch/", query: None, headers, peer: None };
        metrics::with_local_recorder(&recorder, || {
            assert_eq!(&*payload(&facts(&plain), json).unwrap(), json);
            assert_eq!(&*payload(&facts(&form_headers), b"data=%7B%22a%22%3A1%7D").unwrap(), br#"{"a":1}"#);
        });
        assert_eq!(count("count"), 0.0, "plain JSON and a plain form field have no ratio:\n{}", handle.render());
        metrics::with_local_recorder(&recorder, || {
            assert_eq!(&*payload(&facts(&plain), &gz).unwrap(), json);
            assert_eq!(&*payload(&facts(&form_headers), &form).unwrap(), br#"{"a":1}"#, "base64 in the form field");
        });
        assert_eq!(count("count"), 2.0, "{}", handle.render());
        let expected = json.len() as f64 / gz.len() as f64 + 7.0 / 12.0;
        assert!((count("sum") - expected).abs() < 1e-9, "sum {} vs {expected}", count("sum"));
    }

    #[test]
    fn gzip_bomb_is_refused_not_inflated() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(DECOMPRESSED_LIMIT >> 20) + 1 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 100_000, "bomb is {} bytes", bomb.len());
        match gunzip(&bomb) {
            Err(IngressError::TooLarge { .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
