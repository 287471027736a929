//! The binary as an operator runs it: `mesh-waypoint run --config-dir DIR ...`,
//! config edits picked up by polling, HTTP/1.1 and h2 (prior knowledge) clients.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{Backend, bookinfo_yaml, eventually, fresh_block, ip, reviews_vs};

/// Kills the child (by its PID, through the handle) even when the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path) -> (Proc, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-waypoint"))
        .args([
            "run",
            "--namespace",
            "bookinfo",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--config-poll-ms",
            "50",
            "--config-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mesh-waypoint starts");
    let stdout = child.stderr.take().expect("stderr");
    let proc = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    // Bounded: the first lines are config and listener logs.
    for _ in 0..50 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("waypoint listening").nth(1) {
            let addr = rest
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("addr="))
                .expect("addr field");
            std::thread::spawn(move || lines.for_each(drop));
            return (proc, addr.parse().expect("socket address"));
        }
    }
    panic!("mesh-waypoint did not report its listening address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_h1_and_h2_and_reloads_edited_files() {
    let block = fresh_block();
    let v1 = Backend::start(std::net::SocketAddr::new(ip(block, 2), 0), "v1").await;
    let port = v1.addr.port();
    let _v2 = Backend::start(std::net::SocketAddr::new(ip(block, 3), port), "v2").await;
    let _v3 = Backend::start(std::net::SocketAddr::new(ip(block, 4), port), "v3").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("platform.yaml"), bookinfo_yaml(block, port)).expect("write");
    std::fs::write(
        dir.path().join("vs.yaml"),
        reviews_vs("  - route: [{destination: {host: reviews, subset: v1}}]\n"),
    )
    .expect("write");
    let (_proc, addr) = start(dir.path());

    let h1: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let version = |client: Client<_, Full<Bytes>>| async move {
        let req = http::Request::get(format!("http://{addr}/"))
            .header("host", "reviews:9080")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = client.request(req).await.expect("answer");
        let v = resp
            .headers()
            .get("x-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let _ = resp.into_body().collect().await;
        v
    };
    assert_eq!(version(h1.clone()).await, "v1");
    assert_eq!(h2_version(addr).await, "v1", "h2 prior knowledge is served too");

    std::fs::write(
        dir.path().join("vs.yaml"),
        reviews_vs("  - route: [{destination: {host: reviews, subset: v3}}]\n"),
    )
    .expect("write");
    let applied = eventually(Duration::from_secs(5), || {
        let h1 = h1.clone();
        async move { version(h1).await == "v3" }
    });
    assert!(applied.await, "edited file applied by the poller");
}

/// h2 with prior knowledge, `:authority` naming the service (as a real h2 client would).
async fn h2_version(addr: std::net::SocketAddr) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get("http://reviews:9080/")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = sender.send_request(req).await.expect("answer");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    resp.headers()
        .get("x-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

#[test]
fn check_accepts_the_bookinfo_samples_and_flags_bad_input() {
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/bookinfo");
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-waypoint"))
        .args(["check", "--namespace", "bookinfo", "--config-dir"])
        .arg(&samples)
        .output()
        .expect("runs");
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    // The tree holds both the VirtualService and the HTTPRoute versions of the reviews
    // shifts; the only warning allowed is the one saying the HTTPRoutes win.
    let other_warnings: Vec<&serde_json::Value> = dump["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|w| !w.as_str().is_some_and(|w| w.contains("is also routed by HTTPRoutes")))
        .collect();
    assert!(
        dump["rejected"] == serde_json::json!([]) && other_warnings.is_empty(),
        "rejected {} warnings {:?}",
        dump["rejected"],
        other_warnings
    );
    assert!(dump["virtualServices"].as_array().is_some_and(|v| !v.is_empty()));

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.yaml"),
        reviews_vs("  - match: [{uri: {regex: '(x'}}]\n    route: [{destination: {host: reviews}}]\n"),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-waypoint"))
        .args(["check", "--namespace", "bookinfo", "--config-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(
        dump["rejected"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("VirtualService bookinfo/reviews: spec.http[0].match[0].uri.regex:")),
        "{dump}"
    );
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-waypoint"))
        .args(["run", "--help"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config-dir",
        "--namespace",
        "--listen",
        "--admin",
        "--gateway",
        "--config-poll-ms",
        "--header-read-timeout-ms",
        "--tls-handshake-timeout-ms",
        "--hbone-max-concurrent-streams",
        "--hbone-max-header-list-size",
        "--hbone-max-handshakes-per-peer",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
}

/// Indices written `[]`: `spec.subsets[0].trafficPolicy` → `spec.subsets[].trafficPolicy`.
fn pattern_of(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

#[test]
fn check_reports_every_accepted_but_unenforced_field_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/unsupported-fields.yaml");
    std::fs::copy(&sample, dir.path().join("unsupported-fields.yaml")).expect("copy sample");
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-waypoint"))
        .args(["check", "--namespace", "bookinfo", "--config-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(!out.status.success(), "check exits 1 when something is ignored: {dump}");
    assert_eq!(
        dump["rejected"],
        serde_json::json!([]),
        "the sample is valid Istio YAML"
    );
    let reported: std::collections::BTreeSet<(String, String)> = dump["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w.as_str())
        .filter(|w| w.contains(": not supported, ignored: "))
        .filter_map(|w| {
            let (object, rest) = w.split_once(": ")?;
            let (path, _) = rest.split_once(": ")?;
            let kind = object.split(' ').next()?;
            Some((kind.to_owned(), pattern_of(path)))
        })
        .collect();
    let missing: Vec<_> = mesh_common::model::istio::unsupported::patterns()
        .into_iter()
        .map(|(kind, p)| (kind.to_owned(), p))
        .filter(|k| !reported.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "not reported: {missing:?}\nwarnings: {:#}",
        dump["warnings"]
    );
    eprintln!("FIGURE check reported {} unenforced field patterns", reported.len());
}
