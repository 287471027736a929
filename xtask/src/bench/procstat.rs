//! Memory and CPU time of a process, from /proc.

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub rss_mib: f64,
    pub peak_mib: f64,
    pub cpu_secs: f64,
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Some(ProcSample {
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_mib: kib("VmHWM:") / 1024.0,
        cpu_secs: cpu_secs(pid).unwrap_or(f64::NAN),
    })
}

/// utime + stime of all threads, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces), starting at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz.max(1.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_our_own_process() {
        let s = super::sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_mib > 0.0 && s.peak_mib >= s.rss_mib, "{s:?}");
        assert!(s.cpu_secs >= 0.0);
    }
}
