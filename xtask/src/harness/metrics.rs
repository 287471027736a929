//! Reading a Prometheus text exposition in tests.

/// The sum of `name`'s samples whose line contains every one of `filters` (e.g.
/// `reporter="source"`), integer-valued counters only.
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
