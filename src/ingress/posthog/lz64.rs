//! LZ-string's base64 form (`compression=lz64`, as posthog-js-lite and old
//! posthog-js send it), decoded with a hard cap on the output.
//!
//! The `lz-str` crate has no output cap, and LZ-string output can grow
//! quadratically with its input (every code may name a dictionary entry one
//! character longer than the last), so a 2 MiB body could ask for terabytes.
//! This decoder stops at `cap` UTF-16 units. It also keeps the dictionary as
//! ranges into the output instead of owned strings: an LZW entry is always
//! "the previous phrase plus the next character", which is a slice of what
//! was already written, so memory stays linear in the output.

/// Why a payload did not decode.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lz64Error {
    /// Not LZ-string base64: a foreign character, a truncated stream or a
    /// code that names no dictionary entry.
    Invalid,
    /// The output would pass the cap.
    TooLarge,
}

/// The value of one base64 character, or None for characters to skip.
/// A space is a `+` that form encoding turned into a space; `=` is padding
/// and contributes zero bits, as in the reference implementation.
fn sextet(c: u8) -> Result<Option<u8>, Lz64Error> {
    Ok(Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b' ' => 62,
        b'/' => 63,
        b'=' => 0,
        b'\r' | b'\n' | b'\t' => return Ok(None),
        _ => return Err(Lz64Error::Invalid),
    }))
}

/// Reads the stream's bits, lowest code bit first, six bits per character
/// taken from the high end, as LZ-string writes them.
struct Bits<'a> {
    input: &'a [u8],
    pos: usize,
    value: u8,
    /// Mask of the next bit to read in `value`; 0 when a new character is due.
    mask: u8,
}

impl<'a> Bits<'a> {
    fn new(input: &'a [u8]) -> Bits<'a> {
        Bits { input, pos: 0, value: 0, mask: 0 }
    }

    fn bit(&mut self) -> Result<bool, Lz64Error> {
        while self.mask == 0 {
            let c = *self.input.get(self.pos).ok_or(Lz64Error::Invalid)?;
            self.pos += 1;
            if let Some(v) = sextet(c)? {
                self.value = v;
                self.mask = 1 << 5;
            }
        }
        let bit = self.value & self.mask != 0;
        self.mask >>= 1;
        Ok(bit)
    }

    fn read(&mut self, n: u32) -> Result<u32, Lz64Error> {
        if n > 31 {
            return Err(Lz64Error::Invalid);
        }
        let mut out = 0u32;
        for i in 0..n {
            if self.bit()? {
                out |= 1 << i;
            }
        }
        Ok(out)
    }
}

/// A dictionary entry: a literal character, or `len` units of the output
/// starting at `start`.
#[derive(Clone, Copy)]
enum Phrase {
    Literal(u16),
    Slice { start: u32, len: u32 },
}

/// Decode LZ-string base64 into UTF-16 units, at most `cap` of them.
pub(super) fn decompress_base64(input: &[u8], cap: usize) -> Result<Vec<u16>, Lz64Error> {
    // The reference implementation answers "" for an empty input.
    if input.iter().all(|c| c.is_ascii_whitespace() || *c == b'=') {
        return Ok(Vec::new());
    }
    // Offsets are stored as u32 to halve the dictionary's memory.
    let cap = cap.min(u32::MAX as usize);
    let mut bits = Bits::new(input);
    let mut out: Vec<u16> = Vec::new();
    // Codes 0, 1 and 2 are control codes, never dictionary lookups.
    let mut dict: Vec<Phrase> = vec![Phrase::Literal(0); 3];

    let first = match bits.read(2)? {
        0 => bits.read(8)? as u16,
        1 => bits.read(16)? as u16,
        2 => return Ok(out),
        _ => return Err(Lz64Error::Invalid),
    };
    if cap == 0 {
        return Err(Lz64Error::TooLarge);
    }
    dict.push(Phrase::Literal(first));
    out.push(first);
    // The previous phrase, as a slice of the output.
    let (mut w_start, mut w_len) = (0usize, 1usize);
    let mut num_bits: u32 = 3;
    let mut enlarge_in: u64 = 4;

    loop {
        let mut code = bits.read(num_bits)? as usize;
        match code {
            0 | 1 => {
                let c = bits.read(if code == 0 { 8 } else { 16 })? as u16;
                dict.push(Phrase::Literal(c));
                code = dict.len() - 1;
                enlarge_in -= 1;
            }
            2 => return Ok(out),
            _ => {}
        }
        if enlarge_in == 0 {
            enlarge_in = 1u64 << num_bits;
            num_bits += 1;
        }

        let start = out.len();
        if code < dict.len() {
            match dict[code] {
                Phrase::Literal(c) => {
                    if out.len() + 1 > cap {
                        return Err(Lz64Error::TooLarge);
                    }
                    out.push(c);
                }
                Phrase::Slice { start, len } => {
                    let (s, l) = (start as usize, len as usize);
                    if out.len() + l > cap {
                        return Err(Lz64Error::TooLarge);
                    }
                    out.extend_from_within(s..s + l);
                }
            }
        } else if code == dict.len() {
            // The phrase being defined right now: previous phrase plus its
            // own first character.
            if out.len() + w_len + 1 > cap {
                return Err(Lz64Error::TooLarge);
            }
            out.extend_from_within(w_start..w_start + w_len);
            out.push(out[w_start]);
        } else {
            return Err(Lz64Error::Invalid);
        }

        // Previous phrase + first character of this one = the output slice
        // starting at the previous phrase, one unit longer.
        dict.push(Phrase::Slice { start: w_start as u32, len: (w_len + 1) as u32 });
        enlarge_in -= 1;
        w_start = start;
        w_len = out.len() - start;

        if enlarge_in == 0 {
            enlarge_in = 1u64 << num_bits;
            num_bits += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &str) {
        let packed = lz_str::compress_to_base64(s);
        let units = decompress_base64(packed.as_bytes(), usize::MAX).expect("decodes");
        assert_eq!(String::from_utf16(&units).unwrap(), s, "input {s:?}");
    }

    #[test]
    fn decodes_what_the_reference_encoder_writes() {
        for s in [
            "",
            "a",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            r#"[{"event":"$pageview","properties":{"token":"phc_x","distinct_id":"u1"}}]"#,
            "héllo wörld ✓ 🦀 \u{10FFFF}",
            "abababababababababababababababab kwkwkwk",
        ] {
            roundtrip(s);
        }
        let long: String = (0..5000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        roundtrip(&long);
    }

    #[test]
    fn known_vector() {
        // "hello" compressed by lz-string 1.5's compressToBase64.
        let units = decompress_base64(b"BYUwNmD2Q===", 100).unwrap();
        assert_eq!(String::from_utf16(&units).unwrap(), "hello");
    }

    #[test]
    fn form_mangled_plus_decodes() {
        let s = r#"{"event":"e","distinct_id":"ü","properties":{"token":"t"}}"#.repeat(20);
        let packed = lz_str::compress_to_base64(&s);
        assert!(packed.contains('+'), "vector must contain a plus: {packed}");
        let mangled = packed.replace('+', " ");
        let units = decompress_base64(mangled.as_bytes(), usize::MAX).unwrap();
        assert_eq!(String::from_utf16(&units).unwrap(), s);
    }

    #[test]
    fn stops_at_the_cap() {
        let packed = lz_str::compress_to_base64(&"A".repeat(100_000));
        assert!(packed.len() < 2_000, "{} bytes", packed.len());
        assert_eq!(decompress_base64(packed.as_bytes(), 1000), Err(Lz64Error::TooLarge));
        assert_eq!(decompress_base64(packed.as_bytes(), 99_999), Err(Lz64Error::TooLarge));
        assert_eq!(decompress_base64(packed.as_bytes(), 100_000).unwrap().len(), 100_000);
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(decompress_base64(b"!!!!", 100), Err(Lz64Error::Invalid));
        // Truncated: the first code promises a 16-bit literal that never comes.
        assert_eq!(decompress_base64(b"g", 100), Err(Lz64Error::Invalid));
    }
}
