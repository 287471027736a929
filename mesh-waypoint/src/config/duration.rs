//! Istio duration strings ("1.5s", "100ms", "7s", "1m30s") → [`Duration`].

use std::time::Duration;

/// Parses a non-negative duration with units h, m, s, ms, us (µs), ns; several
/// components may be concatenated ("1m30s"), as Go's `time.ParseDuration` accepts.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.starts_with('-') {
        return Err(format!("duration `{text}` must not be negative"));
    }
    if s.is_empty() {
        return Err("duration is empty; write e.g. `1.5s` or `100ms`".into());
    }
    let mut total = 0f64;
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let value: f64 = num.parse().map_err(|_| invalid(text))?;
        total += value * unit_seconds(unit).ok_or_else(|| invalid(text))?;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid(text))
}

fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        "h" => 3600.0,
        "m" => 60.0,
        "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        _ => return None,
    })
}

fn invalid(text: &str) -> String {
    format!("cannot parse duration `{text}`; write a number with a unit (h, m, s, ms, us, ns), e.g. `1.5s` or `100ms`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_forms() {
        let ms = |s| parse(s).unwrap().as_millis();
        assert_eq!(ms("1.5s"), 1500);
        assert_eq!(ms("100ms"), 100);
        assert_eq!(ms("7s"), 7000);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("0s"), 0);
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["-1s", "", "7", "abc", "1.2.3s", "5 parsecs", "s"] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        assert!(parse("-1s").unwrap_err().contains("negative"));
    }
}
