//! The Bookinfo lab: Istio's Bookinfo sample on the local mesh, as `cargo xtask demo`
//! shows it and as the e2e tests drive it. Two nodes from
//! `samples/bookinfo/platform/topology.yaml`, one `mesh-node` per node, the apps (one
//! `bookinfo` process per pod), the namespace's waypoint in its own pod (HBONE on
//! 15008, certificate from its node daemon) and the ingress gateway in its own pod
//! (`bookinfo-gateway` on 8080), where users' requests enter.

pub mod apps;
pub mod block;
pub mod collector;
pub mod jwt;
pub mod prometheus;
pub mod publish;
pub mod supervise;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Cluster, HarnessError, ProcessGuard, bin_path, wait_for};
use crate::mesh::objects::Namespace;
use crate::mesh::{HttpReply, LocalMesh, MeshError, MeshOptions, http_get_from_pod};

pub const NAMESPACE: &str = "bookinfo";
/// The pod requests come from: not enrolled, like a user outside the mesh.
pub const CLIENT: (&str, &str) = ("outside", "client");
/// The waypoint's pod in the app's namespace.
pub const WAYPOINT_POD: &str = "waypoint";
/// The waypoint's admin port inside its pod.
pub const WAYPOINT_ADMIN: u16 = 15000;
/// The ingress gateway pod and the port its Gateway (`bookinfo-gateway.yaml`) opens.
pub const GATEWAY_POD: (&str, &str) = ("istio-system", "istio-ingressgateway");
pub const GATEWAY_PORT: u16 = 8080;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error("cannot read the Bookinfo samples at {path}: {source}")]
    Samples { path: PathBuf, source: std::io::Error },
    #[error("{what} did not come up within {waited:?}")]
    NotUp { what: String, waited: Duration },
    #[error(transparent)]
    Block(#[from] block::BlockError),
    #[error("demo token issuer: {what}: {message}")]
    Issuer { what: &'static str, message: String },
}

#[derive(Clone, Debug, Default)]
pub struct LabOptions {
    pub mesh: MeshOptions,
    /// Where the processes' logs go (one file each); discarded when `None`.
    pub log_dir: Option<PathBuf>,
    /// Also run Prometheus (see [`prometheus`]), as the demo does.
    pub prometheus: bool,
    /// The waypoint and the gateway export a span per request to this OTLP/gRPC
    /// collector (`--otlp-endpoint`; see [`collector`] for one in the lab).
    pub otlp_endpoint: Option<String>,
    /// Extra `mesh-waypoint run` flags for the waypoint and the gateway.
    pub proxy_args: Vec<String>,
}

/// A running Bookinfo; dropping it stops every process (the cluster is the caller's).
pub struct Lab {
    pub mesh: LocalMesh,
    pub samples: PathBuf,
    log_dir: Option<PathBuf>,
    /// The apps, the waypoint and the gateway, by (namespace, pod).
    pods: BTreeMap<(String, String), ProcessGuard>,
    /// Signs tokens the samples' RequestAuthentication accepts (keys served by the `jwks` pod).
    pub issuer: jwt::Issuer,
    /// The JWKS server (not supervised); `None` once [`Lab::stop_jwks_server`] stopped it.
    jwks_server: Option<ProcessGuard>,
    /// Prometheus, when [`LabOptions::prometheus`] asked for it (not supervised).
    _prometheus: Option<ProcessGuard>,
    /// [`LabOptions::otlp_endpoint`], for restarted proxies.
    otlp_endpoint: Option<String>,
    /// [`LabOptions::proxy_args`], for restarted proxies.
    proxy_args: Vec<String>,
}

/// `samples/bookinfo/` of this workspace.
pub fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join("samples/bookinfo")
}

/// The demo's cluster (namespaces, veths, cgroups) from the sample topology.
pub fn cluster() -> Result<Cluster, LabError> {
    let path = samples_dir().join("platform/topology.yaml");
    let text = std::fs::read_to_string(&path).map_err(|source| LabError::Samples { path, source })?;
    Ok(Cluster::from_yaml(&text)?)
}

impl Lab {
    /// Starts the daemons, the Services, the apps and the waypoint, and waits for all of them.
    pub fn start(cluster: &Cluster, opts: LabOptions) -> Result<Self, LabError> {
        let samples = samples_dir();
        let mut mesh = LocalMesh::start(
            cluster,
            MeshOptions {
                log_dir: opts.log_dir.clone(),
                ..opts.mesh
            },
        )?;
        let services_path = samples.join("platform/services.yaml");
        let services = std::fs::read_to_string(&services_path).map_err(|source| LabError::Samples {
            path: services_path,
            source,
        })?;
        mesh.apply("services", &services)?;
        mesh.wait_ready(cluster, Duration::from_secs(60))?;
        let mut pods = BTreeMap::new();
        for (name, guard) in apps::start(cluster, opts.log_dir.as_deref())? {
            pods.insert((NAMESPACE.to_owned(), name), guard);
        }
        let issuer = jwt::Issuer::generate(&cluster.state_dir().join("jwt"))?;
        let jwks_server = issuer.serve(cluster, opts.log_dir.as_deref())?;
        let extra = ProxyExtras {
            otlp: opts.otlp_endpoint.as_deref(),
            args: &opts.proxy_args,
        };
        let waypoint = spawn_waypoint(cluster, &mut mesh, opts.log_dir.as_deref(), extra)?;
        pods.insert((NAMESPACE.to_owned(), WAYPOINT_POD.to_owned()), waypoint);
        wait_waypoint(cluster)?;
        let gateway_yaml = samples.join("bookinfo-gateway.yaml");
        let text = std::fs::read_to_string(&gateway_yaml).map_err(|source| LabError::Samples {
            path: gateway_yaml.clone(),
            source,
        })?;
        mesh.apply_objects(&gateway_yaml.display().to_string(), &text)?;
        let gateway = spawn_gateway(cluster, &mut mesh, opts.log_dir.as_deref(), extra)?;
        pods.insert((GATEWAY_POD.0.to_owned(), GATEWAY_POD.1.to_owned()), gateway);
        wait_gateway(cluster)?;
        let prometheus = match opts.prometheus {
            true => Some(prometheus::start(cluster, opts.log_dir.as_deref())?),
            false => None,
        };
        let lab = Self {
            mesh,
            samples,
            log_dir: opts.log_dir,
            pods,
            issuer,
            jwks_server: Some(jwks_server),
            _prometheus: prometheus,
            otlp_endpoint: opts.otlp_endpoint.clone(),
            proxy_args: opts.proxy_args.clone(),
        };
        lab.wait_serving(cluster)?;
        Ok(lab)
    }

    /// Applies `samples/bookinfo/<file>` (Istio YAML, unchanged) into the watched
    /// directory, one file per object (replacing same kind/namespace/name), and waits
    /// until the waypoint and the gateway have loaded a configuration holding every
    /// object of it.
    pub fn apply_sample(&self, cluster: &Cluster, file: &str) -> Result<(), LabError> {
        let path = self.samples.join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| LabError::Samples {
            path: path.clone(),
            source,
        })?;
        self.apply_yaml(cluster, &path.display().to_string(), &text)
    }

    /// Like [`Lab::apply_sample`] for YAML that is not one of the samples (`source`
    /// names it in errors).
    pub fn apply_yaml(&self, cluster: &Cluster, source: &str, text: &str) -> Result<(), LabError> {
        let before = self.generations(cluster)?;
        // Like `cargo xtask demo apply`: objects without a namespace go to the app's.
        let ns = Namespace::Default(NAMESPACE.into());
        let changes = self.mesh.apply_kubectl(source, text, &ns)?;
        let names: Vec<String> = changes.iter().map(|c| c.object.to_string()).collect();
        self.wait_loaded(cluster, source, before, |d| names.iter().all(|n| lists(d, n)))
    }

    /// Deletes one object from the watched directory (like `kubectl delete`) and waits
    /// until neither the waypoint nor the gateway has it any more.
    pub fn delete_object(&self, cluster: &Cluster, object: &mesh_common::model::ObjectRef) -> Result<(), LabError> {
        let before = self.generations(cluster)?;
        self.mesh.delete_object(object)?;
        let name = object.to_string();
        self.wait_loaded(cluster, &format!("delete {name}"), before, |d| !lists(d, &name))
    }

    fn generations(&self, cluster: &Cluster) -> Result<(u64, u64), LabError> {
        let g = |d: serde_json::Value| d["generation"].as_u64().unwrap_or(0);
        Ok((g(waypoint_dump(cluster)?), g(gateway_dump(cluster)?)))
    }

    fn wait_loaded(
        &self,
        cluster: &Cluster,
        what: &str,
        (wp, gw): (u64, u64),
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<(), LabError> {
        let newer = |d: &serde_json::Value, before: u64| d["generation"].as_u64().unwrap_or(0) > before;
        self.wait_waypoint_config(cluster, &format!("the waypoint to load {what}"), |d| {
            newer(d, wp) && check(d)
        })?;
        let waited = Duration::from_secs(20);
        wait_for(&format!("the gateway to load {what}"), waited, || {
            gateway_dump(cluster).ok().filter(|d| newer(d, gw) && check(d))
        })
        .map(drop)
        .map_err(|_| LabError::NotUp {
            what: format!("the gateway to load {what}"),
            waited,
        })
    }

    /// Stops the JWKS server (an outage of the issuer's key endpoint).
    pub fn stop_jwks_server(&mut self) {
        self.jwks_server = None;
    }

    /// Waits until the waypoint's config reflects the watched directory (it polls it).
    pub fn wait_waypoint_config(
        &self,
        cluster: &Cluster,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<(), LabError> {
        let waited = Duration::from_secs(20);
        wait_for(what, waited, || waypoint_dump(cluster).ok().filter(|d| check(d)))
            .map(drop)
            .map_err(|_| LabError::NotUp {
                what: what.into(),
                waited,
            })
    }

    /// The entry point users' requests go to.
    pub fn entry(&self, cluster: &Cluster) -> Result<SocketAddr, LabError> {
        entry(cluster)
    }

    /// Blocks `version` of `service` (see [`block`]) and waits for the waypoint to load it.
    pub fn block(&self, cluster: &Cluster, service: &str, version: &str) -> Result<(), LabError> {
        self.reloaded(cluster, &format!("block {service} {version}"), || {
            block::block(self.mesh.config_dir(), NAMESPACE, service, version).map(drop)
        })
    }

    /// Undoes [`Lab::block`] and waits for the waypoint to load it.
    pub fn restore(&self, cluster: &Cluster, service: &str) -> Result<(), LabError> {
        self.reloaded(cluster, &format!("restore {service}"), || {
            block::restore(self.mesh.config_dir(), NAMESPACE, service)
        })
    }

    fn reloaded(
        &self,
        cluster: &Cluster,
        what: &str,
        change: impl FnOnce() -> Result<(), block::BlockError>,
    ) -> Result<(), LabError> {
        let before = waypoint_dump(cluster)?["generation"].as_u64().unwrap_or(0);
        change()?;
        self.wait_waypoint_config(cluster, &format!("the waypoint to load `{what}`"), |d| {
            d["generation"].as_u64().unwrap_or(0) > before
        })
    }

    fn wait_serving(&self, cluster: &Cluster) -> Result<(), LabError> {
        let waited = Duration::from_secs(60);
        let page = || {
            productpage(cluster, &[])
                .ok()
                .filter(|r| r.status == 200 && r.body.contains("Reviews served by"))
        };
        wait_for("productpage to answer through the mesh", waited, page)
            .map(drop)
            .map_err(|_| LabError::NotUp {
                what: "productpage through the mesh".into(),
                waited,
            })
    }
}

/// Where users' requests enter: the ingress gateway's pod, port 8080 of
/// `bookinfo-gateway` (plain HTTP from outside; HBONE from there on).
pub fn entry(cluster: &Cluster) -> Result<SocketAddr, LabError> {
    let gw = cluster.pod(GATEWAY_POD.0, GATEWAY_POD.1)?;
    Ok(SocketAddr::from((gw.ip, GATEWAY_PORT)))
}

/// GET /productpage as a user outside the mesh would (from the `outside` pod).
pub fn productpage(cluster: &Cluster, headers: &[(&str, &str)]) -> Result<HttpReply, LabError> {
    Ok(http_get_from_pod(
        cluster,
        CLIENT,
        entry(cluster)?,
        "/productpage",
        headers,
        Duration::from_secs(30),
    )?)
}

/// One product page request's outcome, as a user sees it.
#[derive(Clone, Debug)]
pub struct Page {
    pub status: u16,
    /// `reviews-v1` ... or `None` when reviews failed.
    pub reviews: Option<String>,
    pub body: String,
    pub took: Duration,
}

impl Page {
    pub fn ok(&self) -> bool {
        self.status == 200 && self.reviews.is_some()
    }
}

/// `n` product pages from `workers` concurrent clients (each request bounded by its
/// own timeout); failures come back as status 0 with the error in `body`.
pub fn pages(cluster: &Cluster, n: usize, workers: usize, headers: &[(&str, &str)]) -> Vec<Page> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                    let started = std::time::Instant::now();
                    let page = match productpage(cluster, headers) {
                        Ok(r) => Page {
                            status: r.status,
                            reviews: reviews_version(&r.body),
                            body: r.body,
                            took: started.elapsed(),
                        },
                        Err(e) => Page {
                            status: 0,
                            reviews: None,
                            body: e.to_string(),
                            took: started.elapsed(),
                        },
                    };
                    out.lock().unwrap_or_else(|p| p.into_inner()).push(page);
                }
            });
        }
    });
    out.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// How many pages each reviews version rendered (`error` for failed ones).
pub fn tally(pages: &[Page]) -> std::collections::BTreeMap<String, usize> {
    let mut t = std::collections::BTreeMap::new();
    for p in pages {
        *t.entry(p.reviews.clone().unwrap_or_else(|| "error".into()))
            .or_default() += 1;
    }
    t
}

/// Which reviews version rendered the page (`reviews-v2`), if any.
pub fn reviews_version(page: &str) -> Option<String> {
    let after = page.split("Reviews served by: <b>").nth(1)?;
    Some(after.split('<').next()?.to_owned())
}

/// The waypoint's `/config_dump`, read inside its pod.
pub fn waypoint_dump(cluster: &Cluster) -> Result<serde_json::Value, LabError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], WAYPOINT_ADMIN));
    let r = http_get_from_pod(
        cluster,
        (NAMESPACE, WAYPOINT_POD),
        addr,
        "/config_dump",
        &[],
        Duration::from_secs(5),
    )?;
    serde_json::from_str(&r.body).map_err(|e| {
        LabError::Harness(HarnessError::sys(
            "parsing the waypoint's config_dump",
            std::io::Error::other(e),
        ))
    })
}

/// True when a config dump lists object `name` (`Kind ns/name`) among those in force.
fn lists(dump: &serde_json::Value, name: &str) -> bool {
    if let Some((ns, svc)) = name.strip_prefix("Service ").and_then(|n| n.split_once('/')) {
        let fqdn = format!("{svc}.{ns}.svc.cluster.local");
        return dump["services"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["fqdn"].as_str() == Some(&fqdn)));
    }
    [
        "virtualServices",
        "destinationRules",
        "authorizationPolicies",
        "requestAuthentications",
        "httpRoutes",
    ]
    .iter()
    .any(|k| {
        dump[*k]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(name)))
    })
}

/// The ingress gateway's `/config_dump`, read inside its pod.
pub fn gateway_dump(cluster: &Cluster) -> Result<serde_json::Value, LabError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], WAYPOINT_ADMIN));
    let r = http_get_from_pod(cluster, GATEWAY_POD, addr, "/config_dump", &[], Duration::from_secs(5))?;
    serde_json::from_str(&r.body).map_err(|e| {
        LabError::Harness(HarnessError::sys(
            "parsing the gateway's config_dump",
            std::io::Error::other(e),
        ))
    })
}

/// The waypoint's and the gateway's stats port (Istio's 15020), on the pod's address.
pub const STATS_PORT: u16 = 15020;
const STATS_ADDR: &str = "0.0.0.0:15020";

/// How often the lab's waypoint and gateway fetch `jwksUri` keys again (short, so the
/// key server outage test sees a failed refresh quickly).
pub const JWKS_REFRESH_SECS: u64 = 2;

/// `mesh-waypoint run --mode gateway` in the ingress gateway pod: serves the Gateways
/// selecting `istio=ingressgateway`, forwards into the mesh over HBONE. Its certificate
/// comes from the mesh CA by CSR, with a token bound to the pod.
fn spawn_gateway(
    cluster: &Cluster,
    mesh: &mut LocalMesh,
    log_dir: Option<&Path>,
    extra: ProxyExtras,
) -> Result<ProcessGuard, LabError> {
    let (ns, name) = GATEWAY_POD;
    let ca_args = mesh.proxy_ca_args(cluster, ns, name)?;
    let mut cmd = Command::new(bin_path("mesh-waypoint")?);
    cmd.arg("run")
        .args([
            "--mode",
            "gateway",
            "--pod-labels",
            "istio=ingressgateway",
            "--namespace",
            ns,
        ])
        .args(["--admin", "127.0.0.1:15000", "--config-poll-ms", "200"])
        .args(["--stats-addr", STATS_ADDR])
        .args(["--jwks-refresh-secs", &JWKS_REFRESH_SECS.to_string()])
        .args(&ca_args)
        .stdin(Stdio::null());
    config_source(&mut cmd, mesh);
    extra.apply(&mut cmd);
    apps::log_to(&mut cmd, log_dir, name);
    Ok(cluster.spawn_in_pod(ns, name, cmd)?)
}

fn wait_gateway(cluster: &Cluster) -> Result<(), LabError> {
    let (ns, name) = GATEWAY_POD;
    let pod = cluster.pod(ns, name)?;
    let waited = Duration::from_secs(60);
    cluster
        .wait_tcp_in_pod(ns, name, SocketAddr::from((pod.ip, GATEWAY_PORT)), waited)
        .map_err(|_| LabError::NotUp {
            what: format!("the ingress gateway (port {GATEWAY_PORT})"),
            waited,
        })
}

/// The waypoint's and gateway's configuration: the mesh's directory, or in Kubernetes
/// mode the test API server (`--kubernetes`, readiness on 15021 in their pod).
fn config_source(cmd: &mut Command, mesh: &LocalMesh) {
    match mesh.kubeconfig() {
        Some(kubeconfig) => cmd.arg("--kubernetes").env("KUBECONFIG", kubeconfig),
        None => cmd.arg("--config-dir").arg(mesh.config_dir()),
    };
}

/// `mesh-waypoint run` in the waypoint pod, with the certificate it obtains from the CA.
fn spawn_waypoint(
    cluster: &Cluster,
    mesh: &mut LocalMesh,
    log_dir: Option<&Path>,
    extra: ProxyExtras,
) -> Result<ProcessGuard, LabError> {
    let ca_args = mesh.proxy_ca_args(cluster, NAMESPACE, WAYPOINT_POD)?;
    let mut cmd = Command::new(bin_path("mesh-waypoint")?);
    cmd.arg("run")
        .args(["--namespace", NAMESPACE, "--listen", "127.0.0.1:15080", "--admin"])
        .arg(format!("127.0.0.1:{WAYPOINT_ADMIN}"))
        .args(&ca_args)
        .args(["--config-poll-ms", "200"])
        .args(["--stats-addr", STATS_ADDR])
        .args(["--jwks-refresh-secs", &JWKS_REFRESH_SECS.to_string()])
        .stdin(Stdio::null());
    config_source(&mut cmd, mesh);
    extra.apply(&mut cmd);
    apps::log_to(&mut cmd, log_dir, WAYPOINT_POD);
    Ok(cluster.spawn_in_pod(NAMESPACE, WAYPOINT_POD, cmd)?)
}

/// What [`LabOptions`] adds to the waypoint's and the gateway's command line.
#[derive(Clone, Copy)]
pub(crate) struct ProxyExtras<'a> {
    otlp: Option<&'a str>,
    args: &'a [String],
}

impl ProxyExtras<'_> {
    /// `--otlp-endpoint` recording every request (`--trace-sampling 1`; the default is
    /// Istio's 1%), with the SDK's batch delay shortened so spans arrive within a
    /// second, then the extra flags.
    fn apply(self, cmd: &mut Command) {
        if let Some(endpoint) = self.otlp {
            cmd.args(["--otlp-endpoint", endpoint, "--trace-sampling", "1"])
                .env("OTEL_BSP_SCHEDULE_DELAY", "200");
        }
        cmd.args(self.args);
    }
}

fn wait_waypoint(cluster: &Cluster) -> Result<(), LabError> {
    let pod = cluster.pod(NAMESPACE, WAYPOINT_POD)?;
    let waited = Duration::from_secs(60);
    cluster
        .wait_tcp_in_pod(NAMESPACE, WAYPOINT_POD, SocketAddr::from((pod.ip, 15008)), waited)
        .map_err(|_| LabError::NotUp {
            what: "the waypoint (HBONE on 15008)".into(),
            waited,
        })
}
