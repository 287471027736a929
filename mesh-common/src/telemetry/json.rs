//! A JSON object written field by field into a byte buffer: what an access-log line
//! needs and nothing more (strings, unsigned integers, `null`). Keys are the caller's
//! literals, written as given; values are escaped as serde_json escapes them (`"`,
//! `\`, control characters; other characters, non-ASCII included, as they are), so a
//! line is the text `serde_json::to_writer` would write for the same fields.
//!
//! Why not serde: serde_json's generic serializer, instantiated for each line type,
//! escapes every key and builds in our crate's (debug: opt-level 1) code; this writes
//! a line of ~20 fields in a fraction of that (docs/perf-notes.md, change 9).

/// One JSON object being written into `out`; [`Object::end`] closes it.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    /// Starts an object at the end of `out`.
    pub fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// `"key":`; `key` must need no escaping (a literal field name: not checked here,
    /// per line; the callers' tests parse their lines).
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        string(self.out, [value]);
        self
    }

    /// One string value made of `parts` in order (no concatenation first).
    pub fn concat<'s>(&mut self, key: &str, parts: impl IntoIterator<Item = &'s str>) -> &mut Self {
        self.key(key);
        string(self.out, parts);
        self
    }

    /// A string, or `null` when absent.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => {
                self.key(key);
                self.out.extend_from_slice(b"null");
                self
            }
        }
    }

    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = value;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&digits[at..]);
        self
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push(b'}');
    }
}

/// `"…"` of `parts` concatenated, escaped.
fn string<'s>(out: &mut Vec<u8>, parts: impl IntoIterator<Item = &'s str>) {
    out.push(b'"');
    for part in parts {
        escaped(out, part);
    }
    out.push(b'"');
}

/// Appends `s` escaped as serde_json does: runs of plain bytes copied at once.
/// Eight bytes are checked at a time ([`has_special`]): almost every value of a log
/// line needs no escaping, and a byte-by-byte loop was the line's largest cost
/// (~0.5 µs a line in the debug build, where this crate is built at opt-level 1).
fn escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            if !has_special(u64::from_le_bytes(w)) {
                i += 8;
                continue;
            }
        }
        // A word with a byte to escape, or the last few bytes: one at a time.
        for at in i..bytes.len().min(i + 8) {
            let b = bytes[at];
            let Some(esc) = escape(b) else { continue };
            out.extend_from_slice(&bytes[plain_from..at]);
            plain_from = at + 1;
            match esc {
                Escape::Short(c) => out.extend_from_slice(&[b'\\', c]),
                Escape::Unicode => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
                }
            }
        }
        i += 8;
    }
    out.extend_from_slice(&bytes[plain_from..]);
}

/// Whether any of the eight bytes of `w` is `"`, `\\` or below 0x20 (the classic
/// "has a zero byte" / "has a byte less than n" bit tricks: exact for "any").
fn has_special(w: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let zero = |x: u64| below(x, 1);
    (below(w, 0x20) | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))) != 0
}

enum Escape {
    /// `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`.
    Short(u8),
    /// `\u00XX`, the other control characters.
    Unicode,
}

/// How JSON (as serde_json writes it) escapes byte `b`; `None` when it stays as it is.
/// Bytes of multi-byte UTF-8 characters are all >= 0x80 and stay.
fn escape(b: u8) -> Option<Escape> {
    match b {
        b'"' => Some(Escape::Short(b'"')),
        b'\\' => Some(Escape::Short(b'\\')),
        0x08 => Some(Escape::Short(b'b')),
        0x0c => Some(Escape::Short(b'f')),
        b'\n' => Some(Escape::Short(b'n')),
        b'\r' => Some(Escape::Short(b'r')),
        b'\t' => Some(Escape::Short(b't')),
        0x00..=0x1f => Some(Escape::Unicode),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(fill: impl FnOnce(&mut Object<'_>)) -> String {
        let mut buf = Vec::new();
        let mut o = Object::begin(&mut buf);
        fill(&mut o);
        o.end();
        String::from_utf8(buf).expect("utf-8")
    }

    /// Every string is escaped byte for byte as serde_json escapes it, and parses back
    /// to itself: each control character, quotes, backslashes, non-ASCII, DEL.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u8..0x20).map(|c| format!("a{}b", char::from(c))).collect();
        cases.extend(
            [
                "",
                "plain",
                "\"quoted\"",
                "back\\slash\\",
                "\\\"",
                "tab\there\r\n",
                "caf\u{e9} \u{4e2d}\u{6587} \u{1f600}",
                "\u{7f}del",
                "\u{2028}\u{2029}",
                "</script>",
                "\u{0}",
            ]
            .map(str::to_owned),
        );
        // Each special byte at each position of a word, in strings longer than one.
        for special in ['"', '\\', '\n', '\u{1f}', '\u{0}'] {
            for at in 0..20 {
                let mut s: String = "abcdefghijklmnopqrst".into();
                s.replace_range(at..=at, &special.to_string());
                cases.push(s);
            }
        }
        cases.push("\u{e9}".repeat(30) + "\"" + &"x".repeat(17));
        for s in &cases {
            let ours = written(|o| {
                o.str("v", s);
            });
            let serde = format!("{{\"v\":{}}}", serde_json::to_string(s).expect("serializes"));
            assert_eq!(ours, serde, "{s:?}");
            let parsed: serde_json::Value = serde_json::from_str(&ours).expect("parses");
            assert_eq!(parsed["v"].as_str(), Some(s.as_str()), "{s:?}");
        }
    }

    #[test]
    fn fields_numbers_nulls_and_concatenations() {
        let line = written(|o| {
            o.str("a", "x")
                .u64("zero", 0)
                .u64("max", u64::MAX)
                .u64("n", 1_234_567)
                .opt_str("none", None)
                .opt_str("some", Some("q\""))
                .concat("url", ["spiffe://", "cluster.local/ns/\"x\"", ""]);
        });
        let v: serde_json::Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(v["a"], "x");
        assert_eq!(v["zero"].as_u64(), Some(0));
        assert_eq!(v["max"].as_u64(), Some(u64::MAX));
        assert_eq!(v["n"].as_u64(), Some(1_234_567));
        assert_eq!(v["none"], serde_json::Value::Null);
        assert_eq!(v["some"], "q\"");
        assert_eq!(v["url"], "spiffe://cluster.local/ns/\"x\"");
        assert_eq!(written(|_| {}), "{}");
    }
}
