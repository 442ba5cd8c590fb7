//! A one-pass JSON reader for the common case of [`RawProps`]: objects
//! read into raw entries, every value the request's own text, validated as
//! it is passed over.
//!
//! It accepts a strict subset of what serde_json accepts and answers `None`
//! for anything else: a syntax error, a key with escapes, control
//! characters, and everything the PostHog decoder's strict check exists for
//! (`\uD800`–`\uDFFF` escapes, exponents, numbers over 300 characters,
//! nesting 100 deep). The caller then reads the same text with serde_json,
//! which decides and words the error, so a `None` costs time, never a
//! different answer. Where it answers `Some`, the result is what the serde
//! path gives (`tests` compare the two on generated and mangled inputs).
//!
//! Why: serde_json's visitor machinery, a second pass to look for what
//! needs the strict check, and per-string setup were most of the PostHog
//! decode (BENCHMARKS.md, "Profile").

use std::borrow::Cow;

use super::{Entries, Nested, RawProps};

/// Nesting at which the reader gives up (the strict check's threshold; serde_json refuses at 128).
const MAX_DEPTH: usize = 100;
/// Longest number the reader passes over (the strict check's threshold for an out-of-range number).
const MAX_NUMBER: usize = 300;

pub(crate) struct Scan<'a> {
    text: &'a str,
    at: usize,
    /// Containers open around the current position.
    depth: usize,
}

impl<'a> Scan<'a> {
    pub fn new(text: &'a str) -> Scan<'a> {
        Scan { text, at: 0, depth: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// Skip JSON whitespace and look at the next byte.
    pub fn peek(&mut self) -> Option<u8> {
        let b = self.bytes();
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(self.at) {
            self.at += 1;
        }
        b.get(self.at).copied()
    }

    /// Only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.at += 1)
    }

    /// Past the string whose opening quote is at the cursor. `Some(true)`
    /// when it had escapes. Inlined for the usual string, a plain run up to
    /// its closing quote; escapes and errors go on in [`Scan::string_rest`].
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        let b = self.bytes();
        let from = (self.at + 1).min(b.len());
        let i = from + plain_run(&b[from..]);
        if b.get(i) == Some(&b'"') {
            self.at = i + 1;
            return Some(false);
        }
        self.string_rest(i)
    }

    /// The rest of a string from `i`, where its first plain run ended
    /// without its closing quote.
    #[cold]
    #[inline(never)]
    fn string_rest(&mut self, mut i: usize) -> Option<bool> {
        let b = self.bytes();
        let mut escaped = false;
        loop {
            match *b.get(i)? {
                b'"' => {
                    self.at = i + 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    match *b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' => {
                            let hex = b.get(i + 2..i + 6)?;
                            let surrogate = matches!(hex[0], b'd' | b'D')
                                && matches!(hex[1], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F');
                            if surrogate || !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            i += 6;
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a control character
            }
            i += plain_run(&b[i.min(b.len())..]);
        }
    }

    /// An object key without escapes, and the colon after it.
    fn key(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at + 1;
        if self.string()? {
            return None;
        }
        let key = &self.text[start..self.at - 1];
        self.eat(b':')?;
        Some(key)
    }

    fn number(&mut self) -> Option<()> {
        let b = self.bytes();
        let start = self.at;
        let mut i = start + usize::from(b[start] == b'-');
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - from
        };
        match *b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => {
                digits(&mut i);
            }
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if digits(&mut i) == 0 {
                return None;
            }
        }
        // A digit after a leading zero is an error; an exponent is left to
        // serde_json's range check.
        if matches!(b.get(i), Some(b'0'..=b'9' | b'e' | b'E')) || i - start > MAX_NUMBER {
            return None;
        }
        self.at = i;
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.bytes()[self.at..].starts_with(word).then(|| self.at += word.len())
    }

    /// Pass over one value, returning its text. A string or a number (most
    /// values) is passed over here; the rest in [`Scan::compound`].
    #[inline]
    pub fn value(&mut self) -> Option<&'a str> {
        let first = self.peek()?;
        let start = self.at;
        match first {
            b'"' => {
                self.string()?;
            }
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return self.compound(),
        }
        Some(&self.text[start..self.at])
    }

    /// [`Scan::value`] for the rest: containers, walked without recursion
    /// (a bit per open container, 1 = object), and literals.
    fn compound(&mut self) -> Option<&'a str> {
        self.peek()?;
        let start = self.at;
        let (mut open, mut n): (u128, usize) = (0, 0);
        loop {
            // A value starts here.
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                c @ (b'{' | b'[') => {
                    self.at += 1;
                    if self.depth + n + 1 >= MAX_DEPTH {
                        return None;
                    }
                    open = open << 1 | u128::from(c == b'{');
                    n += 1;
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek()? != close {
                        if c == b'{' {
                            self.value_key()?;
                        }
                        continue;
                    }
                    self.at += 1;
                    open >>= 1;
                    n -= 1;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value ended: close what ends with it, or go on to the next.
            loop {
                if n == 0 {
                    return Some(&self.text[start..self.at]);
                }
                let in_object = open & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        if in_object {
                            self.value_key()?;
                        }
                        break;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    _ => return None,
                }
                self.at += 1;
                open >>= 1;
                n -= 1;
            }
        }
    }

    /// A key inside a value being passed over (escapes allowed: it is copied, not read).
    fn value_key(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.string()?;
        self.eat(b':')
    }

    /// Walk an object at the cursor, handing each key to `entry`, which
    /// must consume the value.
    pub fn object(&mut self, mut entry: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.container(b'{', b'}', |s| {
            let key = s.key()?;
            entry(s, key)
        })
    }

    /// Walk an array at the cursor, handing each element to `element`.
    pub fn array(&mut self, element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.container(b'[', b']', element)
    }

    /// `open`, items separated by commas, `close`; `item` reads one item.
    fn container(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(open)?;
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return None;
        }
        if self.peek()? != close {
            loop {
                item(self)?;
                match self.peek()? {
                    b',' => self.at += 1,
                    c if c == close => break,
                    _ => return None,
                }
            }
        }
        self.at += 1;
        self.depth -= 1;
        Some(())
    }

    /// An object's entries as raw values, `nested`'s value (the last, if
    /// repeated) read as a [`Nested`] object of raw entries instead: what
    /// [`RawProps::split_entries`] makes of the same text.
    pub fn split_object(&mut self, nested: &str) -> Option<(RawProps<'a>, Nested<'a>)> {
        let mut entries: Entries<'a> = Vec::new();
        let mut inner = Nested::Absent;
        self.object(|s, key| {
            if entries.is_empty() {
                entries.reserve(8);
            }
            if key == nested {
                inner = s.nested()?;
            } else {
                entries.push((Cow::Borrowed(key), Some(s.value()?)));
            }
            Some(())
        })?;
        let mut props = RawProps(entries);
        props.keep_last_of_each_key();
        if let Nested::Object(p) = &mut inner {
            p.keep_last_of_each_key();
        }
        Some((props, inner))
    }

    /// `text` as one object of raw entries, or `None` (then serde_json reads it).
    pub fn whole_object(text: &'a str) -> Option<RawProps<'a>> {
        let mut s = Scan::new(text);
        if s.peek()? != b'{' {
            return None;
        }
        let Nested::Object(mut props) = s.nested()? else { return None };
        if !s.at_end() {
            return None;
        }
        props.keep_last_of_each_key();
        Some(props)
    }

    fn nested(&mut self) -> Option<Nested<'a>> {
        match self.peek()? {
            b'{' => {
                let mut entries: Entries<'a> = Vec::new();
                self.object(|s, key| {
                    if entries.is_empty() {
                        // 24 entries fit in 960 bytes: room for the bench's
                        // 18 properties without a copy to grow, and under
                        // mimalloc's 1 KiB small-block limit (above it an
                        // allocation takes its slower path; measured).
                        entries.reserve(24);
                    }
                    entries.push((Cow::Borrowed(key), Some(s.value()?)));
                    Some(())
                })?;
                Some(Nested::Object(RawProps(entries)))
            }
            b'n' => self.literal(b"null").map(|()| Nested::Null),
            _ => self.value().map(|_| Nested::Other),
        }
    }
}

/// Length of the run of bytes a JSON string holds as they are: up to the
/// first `"`, `\` or control character. Sixteen bytes at a time with SSE2
/// (in every x86-64 processor), then eight at a time in a `u64`: in each
/// of its masks the lowest flagged byte is exact (borrows only run
/// upwards), so the lowest of the three is the first byte that ends the run.
#[inline(always)]
pub(super) fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        while i + 16 <= b.len() {
            // SAFETY: SSE2 is part of the x86_64 baseline, and the
            // unaligned load reads b[i..i + 16], inside the slice.
            let stops = unsafe {
                let v = _mm_loadu_si128(b.as_ptr().add(i).cast());
                let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
                let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
                // Unsigned c <= 0x1f: min(c, 0x1f) is c itself.
                let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
                _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
            };
            if stops != 0 {
                return i + stops.trailing_zeros() as usize;
            }
            i += 16;
        }
    }
    while let Some(chunk) = b.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let hits = (zero_byte(v ^ (ONES * u64::from(b'"')))
            | zero_byte(v ^ (ONES * u64::from(b'\\')))
            | (v.wrapping_sub(ONES * 0x20) & !v))
            & HIGH;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + b[i..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(b.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_runs_stop_at_the_first_quote_backslash_or_control() {
        for len in 0..40 {
            for stop in [b'"', b'\\', b'\n', 0x00, 0x1f] {
                let mut text = vec![b'a'; len];
                text.extend_from_slice("é✓".as_bytes());
                let at = text.len();
                text.push(stop);
                text.extend_from_slice(b"\"\\x");
                assert_eq!(plain_run(&text), at, "len {len} stop {stop:#x}");
            }
            let text = vec![b' '; len];
            assert_eq!(plain_run(&text), len);
            // Bytes just above the thresholds are plain.
            let text = [b'!', b'#', b'[', b']', 0x20, 0x7f, 0x80, 0xff].repeat(len);
            assert_eq!(plain_run(&text), text.len());
        }
    }

    fn split(text: &str) -> Option<String> {
        let mut s = Scan::new(text);
        let got = s.split_object("properties")?;
        s.at_end().then(|| format!("{got:?}"))
    }

    /// The serde path the reader stands in for: PostHog's event, split at
    /// `properties` by [`RawProps::split_entries`].
    fn split_serde(text: &str) -> Option<String> {
        let e: crate::ingress::posthog::RawEvent = serde_json::from_str(text).ok()?;
        Some(format!("{:?}", (e.fields, e.props)))
    }

    /// Where the reader answers, serde_json answers the same.
    fn agrees(text: &str) -> bool {
        match split(text) {
            Some(fast) => {
                assert_eq!(Some(&fast), split_serde(text).as_ref(), "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn reads_what_serde_reads() {
        let read = [
            r#"{}"#,
            r#" { "a" : 1 , "b":[ ] ,"c":{ },"d":"x\"y\\z\/\b\f\n\r\t\u00e9" } "#,
            r#"{"event":"$pageview","properties":{"$set":{"a":[1,2.5,-0,-0.25,true,false,null]},"k":"v"},"x":0}"#,
            r#"{"properties":null}"#,
            r#"{"properties":[1,{"a":{}}]}"#,
            r#"{"properties":"text"}"#,
            r#"{"properties":{"a":1},"properties":{"b":2}}"#,
            r#"{"a":1,"a":2,"b":{"a":3,"a":4}}"#,
            r#"{"é✓":"日本","nested":{"k\"ey":[{"x":[[[]]]}]}}"#,
        ];
        for text in read {
            assert!(agrees(text), "the reader takes {text}");
            let whole = Scan::whole_object(text).map(|p| format!("{p:?}"));
            let serde: RawProps = serde_json::from_str(text).unwrap();
            assert_eq!(whole, Some(format!("{serde:?}")), "{text}");
        }
    }

    #[test]
    fn leaves_to_serde_what_it_does_not_take() {
        let left = [
            r#"{"a\u0041":1}"#,        // an escaped key
            r#"{"a":"\ud83d\ude00"}"#, // a surrogate pair: the strict check decides
            r#"{"a":1e5}"#,            // an exponent
            r#"{"a":01}"#,             // a leading zero
            r#"{"a":1.}"#,             // no fraction digits
            r#"{"a":-}"#,              // no digits
            r#"{"a":"tab	inside"}"#,   // a control character
            r#"{"a":"\x"}"#,           // a bad escape
            r#"{"a":"\u12"}"#,         // a short \u escape
            r#"{"a":1,}"#,             // a trailing comma
            r#"{"a":[1,]}"#,           // a trailing comma inside
            r#"{"a":[1 2]}"#,          // a missing comma
            r#"{"a":{"b" 1}}"#,        // a missing colon
            r#"{"a":tru}"#,            // a cut literal
            r#"{"a":"open}"#,          // an open string
            r#"{"a":[}"#,              // a mismatched bracket
            r#"{"a":1} x"#,            // trailing text
            r#"[1]"#,                  // not an object
        ];
        for text in left {
            assert!(split(text).is_none(), "the reader leaves {text}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(split(&deep).is_none(), "nesting past the strict check's threshold");
        for text in left.iter().chain([" 1 ", "{} {}", ""].iter()) {
            assert!(Scan::whole_object(text).is_none(), "the reader leaves {text}");
        }
        let long = format!("{{\"a\":{}}}", "9".repeat(400));
        assert!(split(&long).is_none(), "a number past the strict check's threshold");
    }

    /// Valid JSON objects made from a seed, then cut and changed byte by
    /// byte: wherever the reader answers, serde_json gives the same.
    #[test]
    fn agrees_with_serde_on_generated_and_mangled_objects() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn value(next: &mut impl FnMut() -> u64, depth: usize, out: &mut String) {
            let pick = next() % if depth > 3 { 6 } else { 8 };
            match pick {
                0 => out.push_str(["true", "false", "null"][(next() % 3) as usize]),
                1 => out.push_str(&format!("{}", next() as i64 % 100_000)),
                2 => out.push_str(&format!("{}.{}", next() % 1000, next() % 100)),
                3..=5 => {
                    let pieces = ["a", "é", "\\n", "\\\"", "\\u00e9", "\\/", " ", "properties", "✓"];
                    out.push('"');
                    for _ in 0..next() % 5 {
                        out.push_str(pieces[(next() % pieces.len() as u64) as usize]);
                    }
                    out.push('"');
                }
                6 => {
                    out.push('[');
                    for i in 0..next() % 4 {
                        if i > 0 {
                            out.push_str(if next() % 2 == 0 { "," } else { " , " });
                        }
                        value(next, depth + 1, out);
                    }
                    out.push(']');
                }
                _ => object(next, depth + 1, out),
            }
        }
        fn object(next: &mut impl FnMut() -> u64, depth: usize, out: &mut String) {
            let keys = ["a", "b", "properties", "event", "é", "$set"];
            out.push('{');
            for i in 0..next() % 5 {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!(" \"{}\" :", keys[(next() % keys.len() as u64) as usize]));
                value(next, depth, out);
            }
            out.push('}');
        }
        let (mut answered, mut total) = (0, 0);
        for _ in 0..3_000 {
            let mut text = String::new();
            object(&mut next, 0, &mut text);
            total += 1;
            assert!(agrees(&text), "a generated object is read: {text}");
            answered += 1;
            let bytes = text.as_bytes();
            for _ in 0..4 {
                let at = (next() % bytes.len() as u64) as usize;
                let mut m = bytes.to_vec();
                match next() % 3 {
                    0 => m.truncate(at),
                    1 => m[at] = b"{}[],:\"\\ 0e-.tx"[(next() % 15) as usize],
                    _ => {
                        m.remove(at);
                    }
                }
                if let Ok(m) = String::from_utf8(m) {
                    total += 1;
                    answered += usize::from(agrees(&m));
                }
            }
        }
        assert!(answered > total / 5, "the reader answered {answered} of {total}");
    }
}
