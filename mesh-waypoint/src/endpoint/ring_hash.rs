//! Envoy's ring hash (`RING_HASH`, a ketama ring): every host is hashed onto a ring of
//! at least `minimumRingSize` points, and a key belongs to the first point at or after
//! its own hash. Adding or removing one of N hosts moves only the keys of the points it
//! gains or loses, about 1/N of them.

use std::net::SocketAddr;

use xxhash_rust::xxh64::xxh64;

/// Istio's and Envoy's default `minimumRingSize`.
pub const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;
/// Envoy's `maximum_ring_size` default and cap: a larger minimum is refused, as Envoy
/// refuses a minimum above its maximum.
pub const MAXIMUM_RING_SIZE: u64 = 8 * 1024 * 1024;

/// The ring: point hashes in ascending order, and the host (index into `hosts`) owning
/// each point.
pub fn build(hosts: &[SocketAddr], minimum_ring_size: u64) -> (Vec<u64>, Vec<u32>) {
    if hosts.is_empty() {
        return (Vec::new(), Vec::new());
    }
    // Envoy's sizing with equal weights: the least-weighted host gets a whole number of
    // points (ceil(min / N)), the total capped at the maximum ring size. The running sums
    // are Envoy's, so a capped ring that does not divide evenly is shared the same way.
    let weight = 1.0 / hosts.len() as f64;
    let scale = ((weight * minimum_ring_size as f64).ceil() / weight).min(MAXIMUM_RING_SIZE as f64);
    let mut points: Vec<(u64, u32)> = Vec::with_capacity(scale.ceil() as usize);
    let (mut current, mut target) = (0.0_f64, 0.0_f64);
    for (index, host) in hosts.iter().enumerate() {
        // Envoy hashes "address:port_i" (`[v6]:port_i` for IPv6) with xxHash64, seed 0.
        let prefix = format!("{host}_");
        target += scale * weight;
        let mut i = 0u64;
        while current < target {
            points.push((xxh64(format!("{prefix}{i}").as_bytes(), 0), index as u32));
            i += 1;
            current += 1.0;
        }
    }
    points.sort_unstable_by_key(|p| p.0);
    points.into_iter().unzip()
}

/// The point a key hash lands on: the first at or after it, wrapping to the first point
/// (Envoy's `chooseHost`).
pub fn start(hashes: &[u64], hash: u64) -> usize {
    let i = hashes.partition_point(|h| *h < hash);
    if i == hashes.len() { 0 } else { i }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::test_addrs as hosts;

    #[test]
    fn every_host_gets_an_equal_share_of_a_ring_of_at_least_the_minimum() {
        let (hashes, owners) = build(&hosts(3), 1024);
        // ceil(1024 / 3) = 342 points each.
        assert_eq!(hashes.len(), 3 * 342);
        assert!(hashes.is_sorted());
        for h in 0..3 {
            assert_eq!(owners.iter().filter(|o| **o == h).count(), 342);
        }
    }

    #[test]
    fn more_hosts_than_the_minimum_get_one_point_each() {
        let (hashes, _) = build(&hosts(20), 8);
        assert_eq!(hashes.len(), 20);
    }

    #[test]
    fn points_are_envoys_xxhash64_of_address_underscore_index() {
        let (hashes, _) = build(&hosts(1), 4);
        let mut want: Vec<u64> = (0..4)
            .map(|i| xxh64(format!("10.0.0.1:8080_{i}").as_bytes(), 0))
            .collect();
        want.sort_unstable();
        assert_eq!(hashes, want);
    }

    #[test]
    fn a_key_lands_on_the_first_point_at_or_after_its_hash_and_wraps() {
        let hashes = [10, 20, 30];
        assert_eq!(start(&hashes, 5), 0);
        assert_eq!(start(&hashes, 20), 1);
        assert_eq!(start(&hashes, 21), 2);
        assert_eq!(start(&hashes, 31), 0);
    }
}
