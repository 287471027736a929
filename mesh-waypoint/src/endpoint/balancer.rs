//! Load balancers: ROUND_ROBIN, LEAST_REQUEST (power of two choices), RANDOM,
//! PASSTHROUGH (the address the client asked for) and consistent hashing
//! (rendezvous hashing over healthy endpoints, so removing one endpoint only moves
//! the keys it owned).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderName;
use rand::Rng;

use super::Endpoint;

#[derive(Clone, Debug, Default, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
    /// Istio's default (`UNSPECIFIED`, `LEAST_CONN` are aliases).
    #[default]
    LeastRequest,
    Random,
    Passthrough,
    ConsistentHash(HashOn),
}

#[derive(Clone, Debug, PartialEq)]
pub enum HashOn {
    Header(HeaderName),
    Cookie {
        name: String,
        path: Option<String>,
        ttl: Option<std::time::Duration>,
    },
    SourceIp,
    QueryParameter(String),
}

/// What a pick may use from the request.
pub struct PickContext<'a> {
    /// Hash key for consistent hashing, if the request carries one.
    pub hash_key: Option<&'a str>,
    /// PASSTHROUGH: the address the client addressed.
    pub original_dst: Option<SocketAddr>,
    /// Endpoints already tried by earlier attempts of this request.
    pub avoid: &'a [SocketAddr],
}

#[derive(Debug, Default)]
pub struct Balancer {
    next: AtomicUsize,
}

impl Balancer {
    pub fn pick(&self, policy: &LbPolicy, healthy: &[Arc<Endpoint>], cx: &PickContext<'_>) -> Option<Arc<Endpoint>> {
        let fresh: Vec<&Arc<Endpoint>> = healthy.iter().filter(|e| !cx.avoid.contains(&e.addr)).collect();
        let pool: Vec<&Arc<Endpoint>> = if fresh.is_empty() {
            healthy.iter().collect()
        } else {
            fresh
        };
        if pool.is_empty() {
            return None;
        }
        let mut rng = rand::thread_rng();
        let chosen = match policy {
            LbPolicy::RoundRobin => pool[self.next.fetch_add(1, Ordering::Relaxed) % pool.len()],
            LbPolicy::Random => pool[rng.gen_range(0..pool.len())],
            LbPolicy::LeastRequest => {
                // Two distinct candidates, the less busy wins.
                let i = rng.gen_range(0..pool.len());
                let j = (i + rng.gen_range(1..pool.len().max(2))) % pool.len();
                let (a, b) = (pool[i], pool[j]);
                if b.active() < a.active() { b } else { a }
            }
            LbPolicy::Passthrough => match cx.original_dst.and_then(|d| pool.iter().find(|e| e.addr == d)) {
                Some(e) => e,
                None => pool[rng.gen_range(0..pool.len())],
            },
            LbPolicy::ConsistentHash(_) => match cx.hash_key {
                Some(key) => pool.iter().max_by_key(|e| rendezvous(key, e.addr)).copied()?,
                None => pool[rng.gen_range(0..pool.len())],
            },
        };
        Some(chosen.clone())
    }
}

fn rendezvous(key: &str, addr: SocketAddr) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    addr.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u8) -> Vec<Arc<Endpoint>> {
        (1..=n)
            .map(|i| Arc::new(Endpoint::new(SocketAddr::from(([127, 0, 0, i], 80)))))
            .collect()
    }

    fn cx<'a>(key: Option<&'a str>, avoid: &'a [SocketAddr]) -> PickContext<'a> {
        PickContext {
            hash_key: key,
            original_dst: None,
            avoid,
        }
    }

    #[test]
    fn round_robin_cycles() {
        let (b, e) = (Balancer::default(), eps(3));
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick(&LbPolicy::RoundRobin, &e, &cx(None, &[])).unwrap().addr)
            .collect();
        assert_eq!(picks[0..3], picks[3..6]);
        assert_ne!(picks[0], picks[1]);
    }

    #[test]
    fn least_request_prefers_idle() {
        let (b, e) = (Balancer::default(), eps(2));
        e[0].active.store(100, Ordering::Relaxed);
        let idle = (0..200)
            .filter(|_| b.pick(&LbPolicy::LeastRequest, &e, &cx(None, &[])).unwrap().addr == e[1].addr)
            .count();
        assert_eq!(idle, 200);
    }

    #[test]
    fn consistent_hash_is_sticky_and_avoid_works() {
        let (b, e) = (Balancer::default(), eps(5));
        let p = LbPolicy::ConsistentHash(HashOn::SourceIp);
        let first = b.pick(&p, &e, &cx(Some("user-1"), &[])).unwrap().addr;
        assert!((0..50).all(|_| b.pick(&p, &e, &cx(Some("user-1"), &[])).unwrap().addr == first));
        let other = b.pick(&p, &e, &cx(Some("user-1"), &[first])).unwrap().addr;
        assert_ne!(other, first);
        assert!(b.pick(&p, &[], &cx(None, &[])).is_none());
    }

    #[test]
    fn passthrough_uses_original_destination() {
        let (b, e) = (Balancer::default(), eps(3));
        let want = e[2].addr;
        let c = PickContext {
            hash_key: None,
            original_dst: Some(want),
            avoid: &[],
        };
        assert!((0..20).all(|_| b.pick(&LbPolicy::Passthrough, &e, &c).unwrap().addr == want));
    }
}
