//! Route compilation's text parsers, the parts of a VirtualService that are
//! languages of their own: `StringMatch` regexes (anchored, matched against a
//! request value), durations (`timeout`, `perTryTimeout`, `fixedDelay`), `retryOn`
//! and percentages. Input: a selector byte, then `pattern\nvalue`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_waypoint::config::duration;
use mesh_waypoint::route::fault::Percentage;
use mesh_waypoint::route::retry::RetryOn;
use mesh_waypoint::route::string_match::{StrMatch, compile_regex};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let (pattern, value) = text.split_once('\n').unwrap_or((text, ""));
    match selector % 4 {
        0 => regex(pattern, value),
        1 => {
            if let Ok(d) = duration::parse(pattern) {
                assert!(
                    !pattern.trim().starts_with('-'),
                    "negative duration {pattern:?} accepted as {d:?}"
                );
            }
        }
        2 => {
            if let Ok(on) = RetryOn::parse(pattern) {
                assert!(on.status_codes.iter().all(|c| (100..=599).contains(c)), "{on:?}");
            }
        }
        _ => {
            if let Ok(v) = pattern.trim().parse::<f64>()
                && let Ok(p) = Percentage::new(v)
            {
                assert!((0.0..=100.0).contains(&p.value()), "{v}");
            }
        }
    }
});

/// An accepted regex is one regex on its own (the anchoring the compiler adds cannot
/// be escaped by the pattern), and every match kind is total on any request value.
fn regex(pattern: &str, value: &str) {
    if let Ok(re) = compile_regex(pattern) {
        assert!(
            regex::Regex::new(pattern).is_ok(),
            "{pattern:?} is not a regex by itself, yet compiled as {re}"
        );
        let m = StrMatch::Regex(re);
        let _ = (m.matches(value), m.matches_ignore_case(value));
    }
    for m in [
        StrMatch::Exact(pattern.to_owned()),
        StrMatch::Prefix(pattern.to_owned()),
    ] {
        assert!(m.matches_ignore_case(value) || !m.matches(value), "{m:?} {value:?}");
    }
}
