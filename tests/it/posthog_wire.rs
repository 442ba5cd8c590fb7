//! How the PostHog SDKs put a JSON payload on the wire, for tests and
//! benches: every body encoding Sluice must read, built with independent
//! encoders (flate2, lz-str, base64, url, ruzstd, and a stored-block
//! brotli writer).
#![allow(dead_code)]

use std::io::Write;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;

/// One way of sending a v0 capture payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `application/json` body (posthog-python, posthog-node, mobile).
    Json,
    /// The same JSON as `text/plain` (posthog-js without compression).
    TextPlain,
    /// gzip body, `?compression=gzip-js`, `text/plain` (posthog-js).
    GzipQuery,
    /// gzip body with `Content-Encoding: gzip` (posthog-python `gzip=True`).
    GzipHeader,
    /// gzip body with no hint at all: found by its magic bytes.
    GzipSniffed,
    /// The whole body base64, no hint.
    Base64Body,
    /// base64 body with `?compression=base64`.
    Base64Query,
    /// Form `data=<JSON>`.
    FormJson,
    /// Form `data=<base64 JSON>`, properly percent-encoded.
    FormBase64,
    /// Form `data=<base64 JSON>` with `+` left raw, so form decoding turns
    /// it into a space.
    FormBase64Mangled,
    /// Form `data=<lz-string base64>&compression=lz64` (posthog-js-lite).
    FormLz64,
    /// LZ-string base64 body with `?compression=lz-string`.
    Lz64Query,
    /// GET `?data=<JSON>`.
    GetJson,
    /// GET `?data=<base64 JSON>`.
    GetBase64,
}

impl Wire {
    pub const ALL: [Wire; 14] = [
        Wire::Json,
        Wire::TextPlain,
        Wire::GzipQuery,
        Wire::GzipHeader,
        Wire::GzipSniffed,
        Wire::Base64Body,
        Wire::Base64Query,
        Wire::FormJson,
        Wire::FormBase64,
        Wire::FormBase64Mangled,
        Wire::FormLz64,
        Wire::Lz64Query,
        Wire::GetJson,
        Wire::GetBase64,
    ];
}

/// A request as a client would send it (the path is chosen by the caller).
#[derive(Debug, Clone)]
pub struct Encoded {
    pub method: &'static str,
    /// Query string without `?` (may be empty).
    pub query: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Encoded {
    pub fn header_map(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in &self.headers {
            h.insert(HeaderName::from_static(k), HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    /// `path?query`, or `path` when there is no query.
    pub fn uri(&self, path: &str) -> String {
        if self.query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", self.query)
        }
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("zlib");
    enc.finish().expect("zlib")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// A valid brotli stream (RFC 7932) of stored, uncompressed meta-blocks:
/// no encoder crate needed, and any conforming decoder must read it.
pub fn brotli_stored(data: &[u8]) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        fn put(&mut self, value: u64, count: u32) {
            self.acc |= value << self.n;
            self.n += count;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        fn align(&mut self) {
            if self.n > 0 {
                self.put(0, 8 - self.n);
            }
        }
    }
    let mut b = Bits { out: Vec::new(), acc: 0, n: 0 };
    b.put(0, 1); // WBITS = 16
    for chunk in data.chunks(1 << 16) {
        b.put(0, 1); // ISLAST = 0
        b.put(0, 2); // MNIBBLES = 4
        b.put((chunk.len() - 1) as u64, 16); // MLEN - 1
        b.put(1, 1); // ISUNCOMPRESSED
        b.align();
        b.out.extend_from_slice(chunk);
    }
    b.put(1, 1); // ISLAST
    b.put(1, 1); // ISLASTEMPTY
    b.align();
    b.out
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Put `json` on the wire the way `wire` says.
pub fn encode(json: &[u8], wire: Wire) -> Encoded {
    let text = std::str::from_utf8(json).expect("payload is UTF-8");
    let post = |query: &str, headers: Vec<(&'static str, String)>, body: Vec<u8>| Encoded {
        method: "POST",
        query: query.to_string(),
        headers,
        body,
    };
    let ct = |v: &str| ("content-type", v.to_string());
    match wire {
        Wire::Json => post("", vec![ct("application/json")], json.to_vec()),
        Wire::TextPlain => post("", vec![ct("text/plain")], json.to_vec()),
        Wire::GzipQuery => post("compression=gzip-js&ip=1", vec![ct("text/plain")], gzip(json)),
        Wire::GzipHeader => post("", vec![ct("application/json"), ("content-encoding", "gzip".into())], gzip(json)),
        Wire::GzipSniffed => post("", vec![ct("text/plain")], gzip(json)),
        Wire::Base64Body => post("", vec![ct("text/plain")], b64(json).into_bytes()),
        Wire::Base64Query => post("compression=base64", vec![ct("text/plain")], b64(json).into_bytes()),
        Wire::FormJson => post("", vec![ct(FORM)], form(&[("data", text)])),
        Wire::FormBase64 => post("", vec![ct(FORM)], form(&[("data", &b64(json))])),
        Wire::FormBase64Mangled => {
            // Percent-encode only `/` and `=`, leaving `+` raw as careless
            // clients do; the server's form decoding turns it into a space.
            let raw = b64(json).replace('/', "%2F").replace('=', "%3D");
            post("", vec![ct(FORM)], format!("data={raw}").into_bytes())
        }
        Wire::FormLz64 => {
            post("", vec![ct(FORM)], form(&[("data", &lz_str::compress_to_base64(text)), ("compression", "lz64")]))
        }
        Wire::Lz64Query => {
            post("compression=lz-string", vec![ct("text/plain")], lz_str::compress_to_base64(text).into_bytes())
        }
        Wire::GetJson => Encoded {
            method: "GET",
            query: String::from_utf8(form(&[("data", text)])).expect("ascii"),
            headers: vec![],
            body: vec![],
        },
        Wire::GetBase64 => Encoded {
            method: "GET",
            query: String::from_utf8(form(&[("data", &b64(json)), ("ip", "1")])).expect("ascii"),
            headers: vec![],
            body: vec![],
        },
    }
}
