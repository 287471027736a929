//! The demo's kubelet: every process of the lab (node daemons, waypoint, gateway,
//! apps) is watched, and one that exits is started again after an exponential
//! back-off, like the kubelet's CrashLoopBackOff: 1 s after the first exit, doubling
//! per further exit up to [`MAX_BACKOFF`]; a process that ran [`STABLE_AFTER`]
//! without exiting starts again from 1 s. The restart count and state are shown in
//! the demo's status.

use std::fmt;
use std::time::{Duration, Instant};

use super::{GATEWAY_POD, Lab, LabError, NAMESPACE, WAYPOINT_POD, apps};

/// First restart delay.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The delay doubles per exit up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Running this long without exiting resets the delay to [`INITIAL_BACKOFF`].
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// One supervised process of the lab.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    /// `mesh-node` on this node.
    Node(String),
    /// The process of this pod (namespace, name): an app, the waypoint or the gateway.
    Pod(String, String),
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unit::Node(n) => write!(f, "mesh-node {n}"),
            Unit::Pod(ns, name) => write!(f, "{ns}/{name}"),
        }
    }
}

impl Lab {
    /// Every process of the lab: node daemons first, then the pods'.
    pub fn units(&self) -> Vec<Unit> {
        let nodes = self.mesh.nodes().into_iter().map(Unit::Node);
        nodes
            .chain(self.pods.keys().map(|(ns, name)| Unit::Pod(ns.clone(), name.clone())))
            .collect()
    }

    pub fn pid(&self, unit: &Unit) -> Option<u32> {
        match unit {
            Unit::Node(n) => self.mesh.pid(n),
            Unit::Pod(ns, name) => self.pods.get(&(ns.clone(), name.clone())).map(|g| g.pid()),
        }
    }

    /// How the unit's process ended (reaping it), or `None` while it runs.
    pub fn exited(&mut self, unit: &Unit) -> Result<Option<std::process::ExitStatus>, LabError> {
        match unit {
            Unit::Node(n) => Ok(self.mesh.exited(n)?),
            Unit::Pod(ns, name) => match self.pods.get_mut(&(ns.clone(), name.clone())) {
                Some(g) => Ok(g.try_wait()?),
                None => Ok(None),
            },
        }
    }

    /// Starts the unit's process again, the way [`Lab::start`] did (without waiting
    /// for it to serve: the supervisor's caller must not block).
    pub fn respawn(&mut self, cluster: &crate::harness::Cluster, unit: &Unit) -> Result<(), LabError> {
        let (ns, name) = match unit {
            Unit::Node(n) => return Ok(self.mesh.start_node(cluster, n)?),
            Unit::Pod(ns, name) => (ns.as_str(), name.as_str()),
        };
        let log_dir = self.log_dir.as_deref();
        let extra = super::ProxyExtras {
            otlp: self.otlp_endpoint.as_deref(),
            args: &self.proxy_args,
        };
        let guard = if (ns, name) == (NAMESPACE, WAYPOINT_POD) {
            super::spawn_waypoint(cluster, &mut self.mesh, log_dir, extra)?
        } else if (ns, name) == GATEWAY_POD {
            super::spawn_gateway(cluster, &mut self.mesh, log_dir, extra)?
        } else {
            apps::start_one(cluster, &cluster.pod(ns, name)?, log_dir)?
        };
        self.pods.insert((ns.to_owned(), name.to_owned()), guard);
        Ok(())
    }
}

/// What a supervised process is doing now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Running {
        pid: u32,
        since: Instant,
    },
    /// Exited; started again at `until`.
    BackOff {
        until: Instant,
    },
}

/// A unit's state as the status shows it.
#[derive(Clone, Debug)]
pub struct UnitStatus {
    pub unit: Unit,
    pub state: State,
    pub restarts: u32,
    /// How it ended last time (`signal: 9 (SIGKILL)`), or why a restart failed.
    pub last_exit: Option<String>,
    /// The delay the next exit will wait.
    next_delay: Duration,
}

/// Something the supervisor did, for the status's event lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Exited {
        unit: Unit,
        status: String,
        restart_in: Duration,
    },
    Restarted {
        unit: Unit,
        pid: u32,
        restarts: u32,
    },
    RestartFailed {
        unit: Unit,
        error: String,
        retry_in: Duration,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Exited {
                unit,
                status,
                restart_in,
            } => {
                write!(f, "{unit} exited ({status}); restarting in {}", secs(*restart_in))
            }
            Event::Restarted { unit, pid, restarts } => write!(f, "{unit} restarted as pid {pid} (restart {restarts})"),
            Event::RestartFailed { unit, error, retry_in } => {
                write!(f, "{unit}: restart failed ({error}); next try in {}", secs(*retry_in))
            }
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Watches every unit of a lab and restarts those that exit.
pub struct Supervisor {
    units: Vec<UnitStatus>,
}

impl Supervisor {
    /// Starts watching the lab's processes as they run now.
    pub fn new(lab: &Lab) -> Self {
        let now = Instant::now();
        let units = lab
            .units()
            .into_iter()
            .map(|unit| UnitStatus {
                state: State::Running {
                    pid: lab.pid(&unit).unwrap_or(0),
                    since: now,
                },
                unit,
                restarts: 0,
                last_exit: None,
                next_delay: INITIAL_BACKOFF,
            })
            .collect();
        Self { units }
    }

    pub fn status(&self) -> &[UnitStatus] {
        &self.units
    }

    /// Reaps exited processes and starts those whose back-off has passed.
    pub fn tick(&mut self, lab: &mut Lab, cluster: &crate::harness::Cluster, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for u in &mut self.units {
            match u.state {
                State::Running { since, .. } => {
                    let status = match lab.exited(&u.unit) {
                        Ok(Some(s)) => s.to_string(),
                        Ok(None) => continue,
                        Err(e) => format!("cannot wait for it: {e}"),
                    };
                    let delay = u.exited(now.saturating_duration_since(since));
                    u.state = State::BackOff { until: now + delay };
                    u.last_exit = Some(status.clone());
                    events.push(Event::Exited {
                        unit: u.unit.clone(),
                        status,
                        restart_in: delay,
                    });
                }
                State::BackOff { until } if now >= until => match lab.respawn(cluster, &u.unit) {
                    Ok(()) => {
                        let pid = lab.pid(&u.unit).unwrap_or(0);
                        u.restarts += 1;
                        u.state = State::Running { pid, since: now };
                        events.push(Event::Restarted {
                            unit: u.unit.clone(),
                            pid,
                            restarts: u.restarts,
                        });
                    }
                    Err(e) => {
                        let delay = u.exited(Duration::ZERO);
                        u.state = State::BackOff { until: now + delay };
                        u.last_exit = Some(format!("restart failed: {e}"));
                        events.push(Event::RestartFailed {
                            unit: u.unit.clone(),
                            error: e.to_string(),
                            retry_in: delay,
                        });
                    }
                },
                State::BackOff { .. } => {}
            }
        }
        events
    }
}

impl UnitStatus {
    /// The delay before the next start, after a run of `ran`; doubles the one after it.
    fn exited(&mut self, ran: Duration) -> Duration {
        if ran >= STABLE_AFTER {
            self.next_delay = INITIAL_BACKOFF;
        }
        let delay = self.next_delay;
        self.next_delay = (delay * 2).min(MAX_BACKOFF);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> UnitStatus {
        UnitStatus {
            unit: Unit::Node("node1".into()),
            state: State::BackOff { until: Instant::now() },
            restarts: 0,
            last_exit: None,
            next_delay: INITIAL_BACKOFF,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let mut u = unit();
        let delays: Vec<u64> = (0..8).map(|_| u.exited(Duration::from_secs(2)).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(u.exited(STABLE_AFTER), INITIAL_BACKOFF, "a stable run starts over");
        assert_eq!(u.exited(Duration::ZERO), Duration::from_secs(2));
    }

    #[test]
    fn events_read_as_sentences() {
        let e = Event::Exited {
            unit: Unit::Node("node1".into()),
            status: "signal: 9 (SIGKILL)".into(),
            restart_in: Duration::from_secs(1),
        };
        assert_eq!(
            e.to_string(),
            "mesh-node node1 exited (signal: 9 (SIGKILL)); restarting in 1s"
        );
        let e = Event::Restarted {
            unit: Unit::Pod("bookinfo".into(), "waypoint".into()),
            pid: 42,
            restarts: 1,
        };
        assert_eq!(e.to_string(), "bookinfo/waypoint restarted as pid 42 (restart 1)");
    }
}
