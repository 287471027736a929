//! `traceparent` on CONNECT, as ztunnel sends it: a fresh W3C trace context per
//! tunneled connection, not sampled. No span is exported for it; the id ties the two
//! node daemons' log lines about one connection together, and an application span
//! can later be correlated with it.

use std::fmt;

use rand::Rng;

pub const TRACEPARENT: &str = "traceparent";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    /// W3C trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// A new trace (ids never zero, which W3C reserves as invalid), not sampled.
    pub fn random() -> Self {
        let mut rng = rand::thread_rng();
        Self {
            trace_id: rng.gen_range(1..=u128::MAX),
            span_id: rng.gen_range(1..=u64::MAX),
            flags: 0,
        }
    }

    /// Version 00 only; `None` for anything malformed or with a zero id. Every field is
    /// lowercase hex of its exact length (W3C's HEXDIGLC): `from_str_radix` alone would
    /// also take a sign (`+1`), so what is logged and forwarded would not be what was sent.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ![trace, span, flags].into_iter().all(lower_hex) {
            return None;
        }
        let tp = Self {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(span, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (tp.trace_id != 0 && tp.span_id != 0).then_some(tp)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_bad_values_are_refused() {
        let tp = TraceParent::random();
        let text = tp.to_string();
        assert_eq!(text.len(), 55);
        assert!(text.ends_with("-00"), "not sampled: {text}");
        assert_eq!(TraceParent::parse(&text), Some(tp));
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            // Found by fuzz/fuzz_targets/hbone_connect.rs: a sign passed from_str_radix.
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-+1",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-+7ad6b7169203331-01",
            // Uppercase hex is not W3C's HEXDIGLC.
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
