//! Load balancers: ROUND_ROBIN, LEAST_REQUEST (power of two choices), RANDOM,
//! PASSTHROUGH (the address the client asked for) and consistent hashing (Envoy's ring
//! hash or Maglev, [`super::consistent_hash`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderName;
use rand::Rng;

use super::Endpoint;
use super::consistent_hash::{HashAlgorithm, HashTable};

#[derive(Clone, Debug, Default, PartialEq)]
pub enum LbPolicy {
    RoundRobin,
    /// Istio's default (`UNSPECIFIED`, `LEAST_CONN` are aliases).
    #[default]
    LeastRequest,
    Random,
    Passthrough,
    ConsistentHash(HashOn, HashAlgorithm),
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

#[derive(Debug)]
pub struct Balancer {
    next: AtomicUsize,
    /// Consistent hashing: the ring or table over the backend's endpoints, built once.
    table: Option<Arc<HashTable>>,
}

impl Balancer {
    /// A balancer for `policy` over `endpoints` (a consistent-hash policy builds its
    /// table here, once per endpoint set, or keeps `previous`'s when it is the same).
    pub fn new(policy: &LbPolicy, endpoints: &[Arc<Endpoint>], previous: Option<&Balancer>) -> Self {
        let table = match policy {
            LbPolicy::ConsistentHash(_, algorithm) => Some(
                previous
                    .and_then(|p| p.table.as_ref())
                    .filter(|t| t.is_for(*algorithm, endpoints))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(HashTable::build(*algorithm, endpoints))),
            ),
            _ => None,
        };
        Self {
            next: AtomicUsize::new(0),
            table,
        }
    }

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
            // No key (header or cookie absent): any endpoint, as Envoy hashes a random number.
            LbPolicy::ConsistentHash(..) => match cx.hash_key.zip(self.table.as_ref()) {
                Some((key, table)) => table.pick(key, &pool).unwrap_or(pool[rng.gen_range(0..pool.len())]),
                None => pool[rng.gen_range(0..pool.len())],
            },
        };
        Some(chosen.clone())
    }
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
        let e = eps(3);
        let b = Balancer::new(&LbPolicy::RoundRobin, &e, None);
        let picks: Vec<_> = (0..6)
            .map(|_| b.pick(&LbPolicy::RoundRobin, &e, &cx(None, &[])).unwrap().addr)
            .collect();
        assert_eq!(picks[0..3], picks[3..6]);
        assert_ne!(picks[0], picks[1]);
    }

    #[test]
    fn least_request_prefers_idle() {
        let e = eps(2);
        let b = Balancer::new(&LbPolicy::LeastRequest, &e, None);
        e[0].active.store(100, Ordering::Relaxed);
        let idle = (0..200)
            .filter(|_| b.pick(&LbPolicy::LeastRequest, &e, &cx(None, &[])).unwrap().addr == e[1].addr)
            .count();
        assert_eq!(idle, 200);
    }

    #[test]
    fn consistent_hash_is_sticky_and_avoid_works() {
        let e = eps(5);
        let p = LbPolicy::ConsistentHash(HashOn::SourceIp, HashAlgorithm::default());
        let b = Balancer::new(&p, &e, None);
        let first = b.pick(&p, &e, &cx(Some("user-1"), &[])).unwrap().addr;
        assert!((0..50).all(|_| b.pick(&p, &e, &cx(Some("user-1"), &[])).unwrap().addr == first));
        let other = b.pick(&p, &e, &cx(Some("user-1"), &[first])).unwrap().addr;
        assert_ne!(other, first);
        assert!(b.pick(&p, &[], &cx(None, &[])).is_none());
    }

    #[test]
    fn a_snapshot_with_the_same_endpoints_keeps_the_hash_table() {
        let (e, p) = (
            eps(5),
            LbPolicy::ConsistentHash(HashOn::SourceIp, HashAlgorithm::default()),
        );
        let first = Balancer::new(&p, &e, None);
        let table = |b: &Balancer| b.table.clone().expect("a table");
        let reordered: Vec<_> = e.iter().rev().cloned().collect();
        assert!(Arc::ptr_eq(
            &table(&first),
            &table(&Balancer::new(&p, &reordered, Some(&first)))
        ));
        let maglev = LbPolicy::ConsistentHash(HashOn::SourceIp, HashAlgorithm::Maglev { table_size: 251 });
        for (policy, endpoints) in [(&p, eps(4)), (&maglev, eps(5))] {
            let next = Balancer::new(policy, &endpoints, Some(&first));
            assert!(
                !Arc::ptr_eq(&table(&first), &table(&next)),
                "{policy:?} over {}",
                endpoints.len()
            );
        }
    }

    #[test]
    fn passthrough_uses_original_destination() {
        let e = eps(3);
        let b = Balancer::new(&LbPolicy::Passthrough, &e, None);
        let want = e[2].addr;
        let c = PickContext {
            hash_key: None,
            original_dst: Some(want),
            avoid: &[],
        };
        assert!((0..20).all(|_| b.pick(&LbPolicy::Passthrough, &e, &c).unwrap().addr == want));
    }
}
