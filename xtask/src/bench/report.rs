//! Rows of figures, each beside its baseline from the same run, rendered as a Markdown
//! table (stdout), JSON and an SVG chart of the ratios (`target/bench/`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

/// Median of repetitions and their range.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Stat {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Stat {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                n: 0,
            };
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Stat {
            median,
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        }
    }

    /// Spread as ± percent of the median (half the range).
    pub fn spread_pct(&self) -> f64 {
        (self.max - self.min) / 2.0 / self.median.abs().max(1e-12) * 100.0
    }
}

/// How a row is compared with its baseline.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum Better {
    /// Throughput-like: ratio = value / baseline, higher is better.
    Higher,
    /// Latency/cost-like: ratio = value / baseline, lower is better; the delta is printed too.
    Lower,
}

/// A target from docs/architecture.md, printed beside the measured figure (never enforced).
#[derive(Clone, Debug, Serialize)]
pub enum Target {
    /// ratio ≥ x
    RatioAtLeast(f64),
    /// value − baseline ≤ x (same unit as the row)
    DeltaAtMost(f64),
    /// value ≤ x (same unit as the row)
    ValueAtMost(f64),
}

impl Target {
    fn text(&self, unit: &str) -> String {
        match self {
            Target::RatioAtLeast(x) => format!("≥ {x:.2}×"),
            Target::DeltaAtMost(x) => format!("≤ +{x:.0} {unit}"),
            Target::ValueAtMost(x) => format!("≤ {x:.0} {unit}"),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub bench: String,
    pub metric: String,
    pub path: String,
    pub unit: String,
    pub value: Stat,
    pub better: Better,
    pub baseline_name: Option<String>,
    pub baseline: Option<Stat>,
    pub target: Option<Target>,
    pub note: Option<String>,
}

impl Row {
    pub fn new(bench: &str, metric: &str, path: &str, unit: &str, value: Stat, better: Better) -> Row {
        Row {
            bench: bench.into(),
            metric: metric.into(),
            path: path.into(),
            unit: unit.into(),
            value,
            better,
            baseline_name: None,
            baseline: None,
            target: None,
            note: None,
        }
    }

    pub fn vs(mut self, name: &str, baseline: &Stat) -> Row {
        self.baseline_name = Some(name.into());
        self.baseline = Some(baseline.clone());
        self
    }

    pub fn target(mut self, t: Target) -> Row {
        self.target = Some(t);
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Row {
        self.note = Some(n.into());
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        let b = self.baseline.as_ref()?;
        let r = self.value.median / b.median;
        r.is_finite().then_some(r)
    }

    pub fn delta(&self) -> Option<f64> {
        let b = self.baseline.as_ref()?;
        let d = self.value.median - b.median;
        d.is_finite().then_some(d)
    }

    /// Whether the target is met (`None`: no target or nothing measured).
    pub fn met(&self) -> Option<bool> {
        match self.target.as_ref()? {
            Target::RatioAtLeast(x) => self.ratio().map(|r| r >= *x),
            Target::DeltaAtMost(x) => self.delta().map(|d| d <= *x),
            Target::ValueAtMost(x) => self.value.median.is_finite().then_some(self.value.median <= *x),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute figures when the run ended: the machine is
    /// shared, so a ratio means more than an absolute figure, and this says how shared.
    pub load_average: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            cpu,
            kernel,
            load_average: load_average(),
        }
    }
}

/// `/proc/loadavg`'s 1, 5 and 15 minute figures, space-separated (empty if unreadable).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub quick: bool,
    pub binaries: String,
    pub benches: Vec<String>,
    pub duration_secs: f64,
    pub rows: Vec<Row>,
    /// Benchmarks that could not run, with the reason.
    pub skipped: Vec<(String, String)>,
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn fmt_stat(s: &Stat, unit: &str) -> String {
    if s.n == 0 {
        return "–".into();
    }
    if s.n == 1 {
        return format!("{} {unit}", fmt_num(s.median));
    }
    format!("{} {unit} ±{:.0}% (n={})", fmt_num(s.median), s.spread_pct(), s.n)
}

impl Report {
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "Machine: {} × {}, kernel {}, load average {} at the end; binaries: {}; {} mode; {:.0} s.\n\n",
            m.nproc,
            m.cpu,
            m.kernel,
            m.load_average,
            self.binaries,
            if self.quick {
                "quick (1 repetition, short runs)"
            } else {
                "full"
            },
            self.duration_secs
        );
        out += "| bench | metric | path | value (median ±half-range, n) | baseline | baseline value | ratio (Δ) | target | met |\n";
        out += "|---|---|---|---|---|---|---|---|---|\n";
        for r in &self.rows {
            let ratio = match (r.ratio(), r.better) {
                (Some(x), Better::Higher) => format!("{x:.2}×"),
                (Some(x), Better::Lower) => format!("{x:.2}× ({:+.0} {})", r.delta().unwrap_or(f64::NAN), r.unit),
                (None, _) => "–".into(),
            };
            let met = match r.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let path = match &r.note {
                Some(n) => format!("{} ({n})", r.path),
                None => r.path.clone(),
            };
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.bench,
                r.metric,
                path,
                fmt_stat(&r.value, &r.unit),
                r.baseline_name.as_deref().unwrap_or("–"),
                r.baseline
                    .as_ref()
                    .map(|b| fmt_stat(b, &r.unit))
                    .unwrap_or_else(|| "–".into()),
                ratio,
                r.target.as_ref().map(|t| t.text(&r.unit)).unwrap_or_default(),
                met
            );
        }
        for (name, why) in &self.skipped {
            out += &format!("\nNot measured: {name}: {why}\n");
        }
        out
    }

    /// Writes `bench.json` and `bench.svg` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let json = dir.join("bench.json");
        std::fs::write(&json, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("write {}", json.display()))?;
        let svg = dir.join("bench.svg");
        super::chart::ratios(self, &svg)?;
        std::fs::write(dir.join("bench.md"), self.markdown())?;
        Ok((json, svg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = Stat::of(&[3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert!((s.spread_pct() - 50.0).abs() < 1e-9);
        assert_eq!(Stat::of(&[1.0, 2.0]).median, 1.5);
        assert_eq!(Stat::of(&[]).n, 0);
    }

    #[test]
    fn targets_compare_against_the_baseline() {
        let base = Stat::of(&[100.0]);
        let fast = Row::new("t", "m", "p", "µs", Stat::of(&[180.0]), Better::Lower)
            .vs("direct", &base)
            .target(Target::DeltaAtMost(90.0));
        assert_eq!(fast.met(), Some(true));
        let slow = Row::new("t", "m", "p", "Gbit/s", Stat::of(&[4.0]), Better::Higher)
            .vs("direct", &Stat::of(&[10.0]))
            .target(Target::RatioAtLeast(0.55));
        assert_eq!(slow.met(), Some(false));
        assert!((slow.ratio().unwrap() - 0.4).abs() < 1e-9);
        let none = Row::new("t", "m", "p", "MiB", Stat::of(&[]), Better::Lower).target(Target::ValueAtMost(8.0));
        assert_eq!(none.met(), None);
    }
}
