//! The capture object in the kernel: loading it with every map pinned under
//! `<bpffs>/maps/` (a restarted daemon re-opens the same maps instead of creating new
//! ones), attaching programs per pod through pinned bpf links, and typed map access.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, SockHash};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, ProgramError};
use aya::{Ebpf, EbpfLoader};
use mesh_common::abi::{self, Counter, DaemonConnect, GlobalConfig, OrigDst, PodConfig, TupleKey, map};

use crate::cli::CaptureArgs;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "cannot load the capture programs with maps pinned under {dir} (root, kernel >= 5.7 with BTF, bpffs mounted?): {source}"
    )]
    Load { dir: PathBuf, source: Box<aya::EbpfError> },
    #[error("the eBPF object has no program {0} (daemon and object out of sync)")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map {0} (daemon and object out of sync)")]
    MissingMap(&'static str),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: Box<ProgramError>,
    },
    #[error("eBPF map {name}: {source}")]
    Map { name: &'static str, source: Box<MapError> },
    #[error("eBPF program {name}: cannot take its link: {source}")]
    Link {
        name: &'static str,
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("cannot open {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot pin link {path}: {source}")]
    Pin {
        path: PathBuf,
        source: Box<aya::pin::PinError>,
    },
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Cgroup,
    Netns,
}

/// Every program of the object with its pin file name, in attach order.
pub const PROGRAMS: [(&str, Target); 6] = [
    ("capture_connect4", Target::Cgroup),
    ("capture_connect6", Target::Cgroup),
    ("restore_getpeername4", Target::Cgroup),
    ("restore_getpeername6", Target::Cgroup),
    ("track_sockops", Target::Cgroup),
    ("steer_inbound", Target::Netns),
];

/// Read side shared with the accept loops and the admin/metrics views.
pub struct Lookups {
    orig_by_tuple: HashMap<MapData, TupleKey, OrigDst>,
    counters: PerCpuArray<MapData, u64>,
}

impl Lookups {
    pub fn orig_dst(&self, netns_cookie: u64, peer_ip: Ipv4Addr, peer_port: u16) -> Option<OrigDst> {
        let key = TupleKey {
            netns_cookie,
            ip: u32::from(peer_ip).to_be(),
            port: peer_port,
            _pad: 0,
        };
        self.orig_by_tuple.get(&key, 0).ok()
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.counters.get(&(c as u32), 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL.iter().map(|c| (c.name(), self.counter(*c))).collect()
    }
}

pub struct CaptureBpf {
    ebpf: Ebpf,
    pod_self: HashMap<MapData, u64, PodConfig>,
    listeners: SockHash<MapData, u32>,
    daemon_connects: Option<HashMap<MapData, DaemonConnect, u8>>,
    pub lookups: Arc<Lookups>,
    /// Kernel program id → whether it runs our instructions. Adopted links of one
    /// predecessor share its program, so the kernel's program list is walked once per
    /// predecessor, not once per pod.
    current_by_id: std::collections::HashMap<u32, bool>,
}

pub fn maps_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("maps")
}

impl CaptureBpf {
    /// Loads (or re-opens, when pinned) the maps and loads the programs.
    pub fn load(bpffs: &Path, args: &CaptureArgs) -> Result<Self, BpfError> {
        let dir = maps_dir(bpffs);
        std::fs::create_dir_all(&dir).map_err(|source| BpfError::Open {
            what: "bpffs directory",
            path: dir.clone(),
            source,
        })?;
        let paths: Vec<(&str, PathBuf)> = map::ALL.iter().map(|m| (*m, dir.join(m))).collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader
            .map_max_entries(map::ORIG_BY_COOKIE, args.capture_conn_entries)
            .map_max_entries(map::ORIG_BY_TUPLE, args.capture_conn_entries)
            .map_max_entries(map::DAEMON_CONNECTS, args.capture_conn_entries)
            .map_max_entries(map::POD_SELF, args.capture_pod_entries)
            .map_max_entries(map::INBOUND_LISTENERS, args.capture_pod_entries)
            .map_max_entries(map::EXCLUDED_PORTS, args.capture_exclude_entries)
            .map_max_entries(map::EXCLUDED_CIDRS, args.capture_exclude_entries);
        let mut ebpf = loader.load(crate::ebpf::OBJECT).map_err(|source| BpfError::Load {
            dir: dir.clone(),
            source: Box::new(source),
        })?;
        crate::ebpf::forward_logs(&mut ebpf).ok();
        load_programs(&mut ebpf)?;
        let mut this = Self {
            pod_self: take(&mut ebpf, map::POD_SELF)?,
            listeners: take(&mut ebpf, map::INBOUND_LISTENERS)?,
            daemon_connects: Some(take(&mut ebpf, map::DAEMON_CONNECTS)?),
            lookups: Arc::new(Lookups {
                orig_by_tuple: take(&mut ebpf, map::ORIG_BY_TUPLE)?,
                counters: take(&mut ebpf, map::COUNTERS)?,
            }),
            current_by_id: Default::default(),
            ebpf,
        };
        this.write_exclusions(args)?;
        Ok(this)
    }

    /// Re-writes the excluded ports/CIDRs and the global switches from the flags
    /// (the maps are pinned, so stale entries from a previous run are removed first).
    fn write_exclusions(&mut self, args: &CaptureArgs) -> Result<(), BpfError> {
        let merr = |name| {
            move |source| BpfError::Map {
                name,
                source: Box::new(source),
            }
        };
        let mut ports: HashMap<&mut MapData, u32, u8> = typed(&mut self.ebpf, map::EXCLUDED_PORTS)?;
        let old: Vec<u32> = ports.keys().filter_map(Result::ok).collect();
        for k in old {
            ports.remove(&k).map_err(merr(map::EXCLUDED_PORTS))?;
        }
        for p in &args.capture_exclude_ports {
            ports.insert(u32::from(*p), 1, 0).map_err(merr(map::EXCLUDED_PORTS))?;
        }
        let mut cidrs: LpmTrie<&mut MapData, u32, u8> = typed(&mut self.ebpf, map::EXCLUDED_CIDRS)?;
        let old: Vec<Key<u32>> = cidrs.keys().filter_map(Result::ok).collect();
        for k in old {
            cidrs.remove(&k).map_err(merr(map::EXCLUDED_CIDRS))?;
        }
        for c in &args.capture_exclude_cidrs {
            cidrs
                .insert(&Key::new(u32::from(c.prefix_len), u32::from(c.addr).to_be()), 1, 0)
                .map_err(merr(map::EXCLUDED_CIDRS))?;
        }
        let mut config: Array<&mut MapData, GlobalConfig> = typed(&mut self.ebpf, map::CONFIG)?;
        let flags = if args.inbound_strict_on_miss {
            abi::CONFIG_STRICT_ON_MISS
        } else {
            0
        };
        config
            .set(0, GlobalConfig { flags, _pad: 0 }, 0)
            .map_err(merr(map::CONFIG))?;
        Ok(())
    }

    /// The map the client-IP connects register in (taken once, by [`super::client_ip`]).
    pub fn take_daemon_connects(&mut self) -> Option<HashMap<MapData, DaemonConnect, u8>> {
        self.daemon_connects.take()
    }

    pub fn set_pod(&mut self, netns_cookie: u64, ip: Ipv4Addr) -> Result<(), BpfError> {
        let v = PodConfig {
            ip: u32::from(ip).to_be(),
            flags: 0,
        };
        self.pod_self
            .insert(netns_cookie, v, 0)
            .map_err(|source| BpfError::Map {
                name: map::POD_SELF,
                source: Box::new(source),
            })
    }

    pub fn remove_pod(&mut self, netns_cookie: u64, ip: Ipv4Addr) {
        let _ = self.pod_self.remove(&netns_cookie);
        let _ = self.listeners.remove(&u32::from(ip).to_be());
    }

    pub fn pod_cookies(&self) -> Vec<(u64, Ipv4Addr)> {
        self.pod_self
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, Ipv4Addr::from(u32::from_be(v.ip))))
            .collect()
    }

    pub fn listener_ips(&self) -> Vec<Ipv4Addr> {
        self.listeners
            .keys()
            .filter_map(Result::ok)
            .map(|k| Ipv4Addr::from(u32::from_be(k)))
            .collect()
    }

    pub fn register_listener(&mut self, ip: Ipv4Addr, fd: &impl AsRawFd) -> Result<(), BpfError> {
        self.listeners
            .insert(u32::from(ip).to_be(), fd.as_raw_fd(), 0)
            .map_err(|source| BpfError::Map {
                name: map::INBOUND_LISTENERS,
                source: Box::new(source),
            })
    }

    /// Whether the link pinned at `pin`, if any, runs this daemon's `prog` (same
    /// instructions, hence the same kernel tag). A link adopted from an older daemon keeps
    /// running that daemon's program, so a feature the older program lacks must stay off
    /// for the pod. Nothing pinned: the link will be attached with ours.
    pub fn pinned_runs_current(&mut self, prog: &'static str, pin: &Path) -> bool {
        let Ok(link) = PinnedLink::from_pin(pin) else {
            return true;
        };
        let Ok(info) = FdLink::from(link).info() else {
            return false;
        };
        let id = info.program_id();
        if let Some(known) = self.current_by_id.get(&id) {
            return *known;
        }
        let ours = self.ebpf.program(prog).and_then(|p| p.info().ok()).map(|i| i.tag());
        let theirs = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .map(|p| p.tag());
        let current = ours.is_some() && ours == theirs;
        self.current_by_id.insert(id, current);
        current
    }

    /// Attaches `prog` to the pod's cgroup or netns and pins the link at `pin`, unless a
    /// link is already pinned there (a previous daemon attached it): then it is adopted.
    /// Returns whether it was adopted.
    pub fn attach_pinned(
        &mut self,
        prog: &'static str,
        target: Target,
        at: &Path,
        pin: &Path,
    ) -> Result<bool, BpfError> {
        if PinnedLink::from_pin(pin).is_ok() {
            return Ok(true);
        }
        let what = if target == Target::Cgroup { "cgroup" } else { "netns" };
        let file = File::open(at).map_err(|source| BpfError::Open {
            what,
            path: at.to_owned(),
            source,
        })?;
        let perr = |source| BpfError::Program {
            name: prog,
            source: Box::new(source),
        };
        let p = self.ebpf.program_mut(prog).ok_or(BpfError::MissingProgram(prog))?;
        let link: FdLink = match p {
            aya::programs::Program::CgroupSockAddr(p) => {
                let id = p.attach(&file, CgroupAttachMode::Single).map_err(perr)?;
                p.take_link(id)
                    .map_err(perr)?
                    .try_into()
                    .map_err(|source| BpfError::Link {
                        name: prog,
                        source: Box::new(source),
                    })?
            }
            aya::programs::Program::SockOps(p) => {
                let id = p.attach(&file, CgroupAttachMode::Single).map_err(perr)?;
                p.take_link(id)
                    .map_err(perr)?
                    .try_into()
                    .map_err(|source| BpfError::Link {
                        name: prog,
                        source: Box::new(source),
                    })?
            }
            aya::programs::Program::SkLookup(p) => {
                let id = p.attach(&file).map_err(perr)?;
                p.take_link(id).map_err(perr)?.into()
            }
            _ => return Err(BpfError::MissingProgram(prog)),
        };
        // The pin keeps it attached; our fd closes here (no fd per link kept open).
        link.pin(pin).map_err(|source| BpfError::Pin {
            path: pin.to_owned(),
            source: Box::new(source),
        })?;
        Ok(false)
    }
}

fn load_programs(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    for (name, _) in PROGRAMS {
        let perr = |source| BpfError::Program {
            name,
            source: Box::new(source),
        };
        match ebpf.program_mut(name).ok_or(BpfError::MissingProgram(name))? {
            aya::programs::Program::CgroupSockAddr(p) => p.load().map_err(perr)?,
            aya::programs::Program::SockOps(p) => p.load().map_err(perr)?,
            aya::programs::Program::SkLookup(p) => p.load().map_err(perr)?,
            _ => return Err(BpfError::MissingProgram(name)),
        }
    }
    Ok(())
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let m = ebpf.take_map(name).ok_or(BpfError::MissingMap(name))?;
    T::try_from(m).map_err(|source| BpfError::Map {
        name,
        source: Box::new(source),
    })
}

fn typed<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
{
    let m = ebpf.map_mut(name).ok_or(BpfError::MissingMap(name))?;
    T::try_from(m).map_err(|source| BpfError::Map {
        name,
        source: Box::new(source),
    })
}
