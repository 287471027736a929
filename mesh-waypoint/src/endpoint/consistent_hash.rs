//! Consistent hashing as Envoy does it for Istio's `consistentHash`: a ring hash or a
//! Maglev table built once per endpoint set (per config snapshot), and a lookup per
//! request with the xxHash64 of the request's hash key.
//!
//! The table is built over every endpoint of the backend. Endpoints ejected by outlier
//! detection, or already tried by this request, are skipped by walking on from the
//! key's position to the next usable owner: on the ring that is exactly where the key
//! would land on a ring built without them, and on either table only the keys of the
//! skipped endpoints move.

use std::net::SocketAddr;
use std::sync::Arc;

use xxhash_rust::xxh64::xxh64;

use super::{Endpoint, maglev, ring_hash};

/// `consistentHash.ringHash` / `maglev` (Istio's default, with neither set, is a ring of
/// 1024, or the deprecated `consistentHash.minimumRingSize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    RingHash { minimum_ring_size: u64 },
    Maglev { table_size: u64 },
}

impl Default for HashAlgorithm {
    fn default() -> Self {
        HashAlgorithm::RingHash {
            minimum_ring_size: ring_hash::DEFAULT_MINIMUM_RING_SIZE,
        }
    }
}

#[derive(Debug)]
enum Positions {
    /// Ring point hashes, ascending.
    Ring(Vec<u64>),
    /// Maglev: a key's position is its hash modulo the table size.
    Maglev,
}

/// A built ring or table. `owners[i]` is the host (index into `hosts`) at position `i`.
#[derive(Debug)]
pub struct HashTable {
    algorithm: HashAlgorithm,
    /// Sorted by address, so every waypoint replica builds the same table whatever
    /// order discovery listed the endpoints in.
    hosts: Vec<SocketAddr>,
    positions: Positions,
    owners: Vec<u32>,
}

fn sorted_hosts(endpoints: &[Arc<Endpoint>]) -> Vec<SocketAddr> {
    let mut hosts: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
    hosts.sort_unstable();
    hosts.dedup();
    hosts
}

impl HashTable {
    pub fn build(algorithm: HashAlgorithm, endpoints: &[Arc<Endpoint>]) -> Self {
        let hosts = sorted_hosts(endpoints);
        let (positions, owners) = match algorithm {
            HashAlgorithm::RingHash { minimum_ring_size } => {
                let (hashes, owners) = ring_hash::build(&hosts, minimum_ring_size);
                (Positions::Ring(hashes), owners)
            }
            HashAlgorithm::Maglev { table_size } => (Positions::Maglev, maglev::build(&hosts, table_size)),
        };
        Self {
            algorithm,
            hosts,
            positions,
            owners,
        }
    }

    /// Whether this table is the one `build` would make: a snapshot that changed
    /// neither the algorithm nor the endpoint addresses keeps it (a large ring or table
    /// takes a while to build).
    pub fn is_for(&self, algorithm: HashAlgorithm, endpoints: &[Arc<Endpoint>]) -> bool {
        self.algorithm == algorithm && self.hosts == sorted_hosts(endpoints)
    }

    /// The endpoint of `pool` that owns `key`: the owner of the key's position, or of
    /// the next position whose owner is in `pool`. None when no endpoint of `pool` is in
    /// the table.
    pub fn pick<'a>(&self, key: &str, pool: &[&'a Arc<Endpoint>]) -> Option<&'a Arc<Endpoint>> {
        let mut usable: Vec<Option<&'a Arc<Endpoint>>> = vec![None; self.hosts.len()];
        for e in pool {
            if let Ok(i) = self.hosts.binary_search(&e.addr) {
                usable[i] = Some(*e);
            }
        }
        if usable.iter().all(Option::is_none) {
            return None;
        }
        let len = self.owners.len();
        let start = self.start(xxh64(key.as_bytes(), 0));
        (0..len).find_map(|k| usable[self.owners[(start + k) % len] as usize])
    }

    fn start(&self, hash: u64) -> usize {
        match &self.positions {
            Positions::Ring(hashes) => ring_hash::start(hashes, hash),
            Positions::Maglev => (hash % self.owners.len() as u64) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::endpoint::test_addrs;

    const MAGLEV: HashAlgorithm = HashAlgorithm::Maglev {
        table_size: maglev::DEFAULT_TABLE_SIZE,
    };

    fn eps(n: u8) -> Vec<Arc<Endpoint>> {
        test_addrs(n).into_iter().map(|a| Arc::new(Endpoint::new(a))).collect()
    }

    fn owner(table: &HashTable, endpoints: &[Arc<Endpoint>], key: &str) -> SocketAddr {
        let pool: Vec<&Arc<Endpoint>> = endpoints.iter().collect();
        table.pick(key, &pool).expect("an endpoint").addr
    }

    fn random_keys(n: usize) -> Vec<String> {
        let mut rng = rand::thread_rng();
        (0..n).map(|_| format!("user-{:016x}", rng.r#gen::<u64>())).collect()
    }

    /// Shares of `keys` whose owner differs between `before` and `after`: all of them, and
    /// those whose new owner is `joined`.
    fn moved(
        keys: &[String],
        before: impl Fn(&str) -> SocketAddr,
        after: impl Fn(&str) -> SocketAddr,
        joined: SocketAddr,
    ) -> (f64, f64) {
        let moved: Vec<SocketAddr> = keys
            .iter()
            .filter(|k| before(k) != after(k))
            .map(|k| after(k))
            .collect();
        let to_joined = moved.iter().filter(|a| **a == joined).count();
        let share = |n: usize| n as f64 / keys.len() as f64;
        (share(moved.len()), share(to_joined))
    }

    #[test]
    fn the_same_key_always_gets_the_same_endpoint() {
        for algorithm in [HashAlgorithm::default(), MAGLEV] {
            let endpoints = eps(5);
            let table = HashTable::build(algorithm, &endpoints);
            // Rebuilt from the endpoints in another order: same owners.
            let reversed: Vec<_> = endpoints.iter().rev().cloned().collect();
            let again = HashTable::build(algorithm, &reversed);
            for key in random_keys(200) {
                let first = owner(&table, &endpoints, &key);
                assert_eq!(owner(&table, &endpoints, &key), first);
                assert_eq!(owner(&again, &endpoints, &key), first, "{algorithm:?}");
            }
        }
    }

    #[test]
    fn adding_one_endpoint_to_five_moves_about_a_sixth_of_the_keys_unlike_modulo() {
        let keys = random_keys(10_000);
        let (five, six) = (eps(5), eps(6));
        let joined = six[5].addr;
        let modulo =
            |n: u64| move |k: &str| SocketAddr::from(([10, 0, 0, 1 + (xxh64(k.as_bytes(), 0) % n) as u8], 8080));
        let (naive, _) = moved(&keys, modulo(5), modulo(6), joined);
        // Modulo hashing keeps a key only when h % 5 == h % 6: it moves about 5/6 of them.
        assert!(naive > 0.7, "modulo moved {naive}");
        eprintln!("FIGURE 5 -> 6 endpoints, 10,000 keys: modulo moved {naive:.3}");
        // The ring moves more than 1/6: Envoy gives each endpoint ceil(1024 / N) points, so
        // every old endpoint also drops 34 of its 205 points and some keys change hands
        // between old endpoints. Maglev's table keeps its size.
        for (algorithm, most) in [(HashAlgorithm::default(), 0.30), (MAGLEV, 0.25)] {
            let (t5, t6) = (HashTable::build(algorithm, &five), HashTable::build(algorithm, &six));
            let (all, to_joined) = moved(&keys, |k| owner(&t5, &five, k), |k| owner(&t6, &six, k), joined);
            eprintln!("FIGURE {algorithm:?}: moved {all:.3}, {to_joined:.3} to the new endpoint");
            assert!((0.10..=most).contains(&all), "{algorithm:?} moved {all}");
            assert!(
                (0.12..=0.22).contains(&to_joined),
                "{algorithm:?}: {to_joined} to the new endpoint"
            );
            assert!(all < naive / 2.5, "{algorithm:?} moved {all}, modulo {naive}");
        }
    }

    #[test]
    fn an_unusable_endpoint_only_gives_up_its_own_keys() {
        let endpoints = eps(5);
        for algorithm in [HashAlgorithm::default(), MAGLEV] {
            let table = HashTable::build(algorithm, &endpoints);
            let without: Vec<&Arc<Endpoint>> = endpoints.iter().filter(|e| e.addr != endpoints[2].addr).collect();
            for key in random_keys(500) {
                let before = owner(&table, &endpoints, &key);
                let after = table.pick(&key, &without).expect("an endpoint").addr;
                assert_ne!(after, endpoints[2].addr);
                if before != endpoints[2].addr {
                    assert_eq!(after, before, "{algorithm:?} moved {key}");
                }
            }
            assert!(table.pick("k", &[]).is_none());
        }
    }
}
