//! The Bookinfo-shaped demo application. One binary plays every service and version
//! of Istio's Bookinfo sample, so the demo and the e2e tests need nothing but Rust:
//! productpage → details, productpage → reviews (v1 no stars; v2 black and v3 red
//! stars, both calling ratings). productpage behaves like Istio's for a person in a
//! browser: sign-in form and session (sent on as `end-user`), `/logout`, the JSON API
//! under `/api/v1/products`, a stylesheet under `/static/`. Every response names the
//! version that served it (`x-served-by` header, `"servedBy"` JSON field, and in the page).

mod client;
mod data;
mod page;
mod productpage;
mod server;
mod session;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Service {
    Productpage,
    Details,
    Reviews,
    Ratings,
}

#[derive(Clone, Debug, Parser)]
#[command(name = "bookinfo", about = "Plays one Bookinfo service and version")]
pub struct Args {
    #[arg(long, value_enum)]
    pub service: Service,
    /// Version label this instance serves as (v1, v2, v3 ...).
    #[arg(long, default_value = "v1")]
    pub version: String,
    #[arg(long, default_value = "0.0.0.0:9080")]
    pub listen: SocketAddr,
    /// Where a downstream service lives: NAME=HOST:PORT (repeatable), e.g.
    /// `reviews=198.19.0.12:9080`. Requests carry `Host: NAME:PORT` like Bookinfo's.
    #[arg(long = "upstream", value_parser = parse_upstream)]
    pub upstreams: Vec<(String, SocketAddr)>,
    /// productpage's per-attempt timeout towards details, reviews and ratings, like the real Bookinfo's 3 s.
    #[arg(long, default_value = "3000")]
    pub reviews_timeout_ms: u64,
    /// productpage's attempts towards reviews (the real one retries once more).
    #[arg(long, default_value_t = 3)]
    pub reviews_attempts: u32,
    /// reviews' timeout towards ratings (the real v2/v3 use 10 s).
    #[arg(long, default_value = "10000")]
    pub ratings_timeout_ms: u64,
}

impl Args {
    pub fn upstream(&self, name: &str) -> Option<SocketAddr> {
        self.upstreams.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    pub fn served_by(&self) -> String {
        format!("{}-{}", format!("{:?}", self.service).to_lowercase(), self.version)
    }

    pub fn reviews_timeout(&self) -> Duration {
        Duration::from_millis(self.reviews_timeout_ms)
    }

    pub fn ratings_timeout(&self) -> Duration {
        Duration::from_millis(self.ratings_timeout_ms)
    }
}

fn parse_upstream(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=HOST:PORT, got {s:?}"))?;
    let addr = addr.parse().map_err(|e| format!("{s:?}: bad address: {e}"))?;
    Ok((name.to_owned(), addr))
}

/// Headers Bookinfo forwards on every downstream call (tracing and the test user).
pub const PROPAGATED: &[&str] = &[
    "end-user",
    "x-request-id",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "user-agent",
];

pub type Propagated = BTreeMap<String, String>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    server::run(args).await
}
