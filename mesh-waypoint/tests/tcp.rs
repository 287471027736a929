//! `tcp` routes: opaque streams split by weight between subsets, spliced both ways.

mod support;

use std::net::SocketAddr;

use mesh_waypoint::proxy::tcp::TcpOrigin;
use support::{Lab, NS};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Echoes each line back prefixed with `version:`.
async fn line_echo(addr: SocketAddr, version: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if w.write_all(format!("{version}:{line}\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_route_splits_streams_by_weight() {
    let lab = Lab::bookinfo().await;
    let a = line_echo(SocketAddr::new(lab.ip(70), 0), "v1").await;
    line_echo(SocketAddr::new(lab.ip(71), a.port()), "v2").await;
    lab.apply(
        "echo.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: {NS}}}\nspec: {{selector: {{app: echo}}, ports: [{{name: tcp-echo, port: 7000, targetPort: {port}}}]}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: echo-v1, namespace: {NS}, labels: {{app: echo, version: v1}}}}\nstatus: {{podIP: {}}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: echo-v2, namespace: {NS}, labels: {{app: echo, version: v2}}}}\nstatus: {{podIP: {}}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: echo, namespace: {NS}}}\nspec: {{host: echo, subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: echo, namespace: {NS}}}\nspec:\n  hosts: [echo]\n  tcp:\n  - match: [{{port: 7000}}]\n    route:\n    - {{destination: {{host: echo, subset: v1}}, weight: 80}}\n    - {{destination: {{host: echo, subset: v2}}, weight: 20}}\n",
            lab.ip(70),
            lab.ip(71),
            port = a.port()
        ),
    );
    assert!(
        lab.waypoint.config.load().rejected.is_empty(),
        "{:?}",
        lab.waypoint.config.load().rejected
    );
    // Streams arrive the way the HBONE server will hand them over: an accepted
    // connection plus the CONNECT target.
    let entry = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let entry_addr = entry.local_addr().expect("addr");
    let proxy = lab.waypoint.proxy.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = entry.accept().await {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let origin = TcpOrigin {
                    target: "echo:7000",
                    peer,
                    identity: None,
                };
                proxy.serve_tcp(stream, origin).await
            });
        }
    });
    let mut v1 = 0;
    for i in 0..100 {
        let stream = tokio::net::TcpStream::connect(entry_addr).await.expect("connect");
        let (r, mut w) = stream.into_split();
        w.write_all(format!("hello {i}\n").as_bytes()).await.expect("write");
        let mut line = String::new();
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            BufReader::new(r).read_line(&mut line),
        )
        .await
        .expect("reply in time")
        .expect("read");
        assert!(n > 0, "stream {i} closed without a reply");
        assert!(
            line == format!("v1:hello {i}\n") || line == format!("v2:hello {i}\n"),
            "{line:?}"
        );
        v1 += usize::from(line.starts_with("v1:"));
    }
    assert_eq!(v1, 80, "80/20 split over 100 streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_to_unknown_host_is_refused_with_reason() {
    let lab = Lab::bookinfo().await;
    let (client, server) = tokio::io::duplex(64);
    drop(client);
    let err = lab
        .waypoint
        .proxy
        .serve_tcp(
            server,
            TcpOrigin {
                target: "nowhere:7000",
                peer: "127.0.0.1:1".parse().expect("addr"),
                identity: None,
            },
        )
        .await
        .expect_err("no route");
    assert!(err.to_string().contains("nowhere.bookinfo.svc.cluster.local"), "{err}");
}
