//! Envoy's Maglev (`MAGLEV`, Eisenbud et al., NSDI 2016): a lookup table of a prime
//! number of slots that hosts fill in turns, each taking the next free slot of its own
//! permutation of the table. A key belongs to slot `hash % size`. Every host gets
//! the same share (±1 slot), and changing one of N hosts moves about 1/N of the keys.

use std::net::SocketAddr;

use xxhash_rust::xxh64::xxh64;

/// Istio's and Envoy's default `tableSize`.
pub const DEFAULT_TABLE_SIZE: u64 = 65_537;
/// Envoy's limit on `table_size`.
pub const MAXIMUM_TABLE_SIZE: u64 = 5_000_011;

/// Trial division: table sizes are at most [`MAXIMUM_TABLE_SIZE`].
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

/// One host's walk through the table: slot `(offset + skip × next) % size`, with
/// Envoy's 64-bit wrapping arithmetic.
struct Walk {
    offset: u64,
    skip: u64,
    next: u64,
}

impl Walk {
    /// Offset and skip from two xxHash64s of the host's "address:port" (seeds 0 and 1),
    /// as Envoy derives them; skip is never 0, so with a prime size the walk visits
    /// every slot.
    fn new(host: &SocketAddr, size: u64) -> Self {
        let key = host.to_string();
        Self {
            offset: xxh64(key.as_bytes(), 0) % size,
            skip: xxh64(key.as_bytes(), 1) % (size - 1) + 1,
            next: 0,
        }
    }

    fn slot(&self, size: u64) -> usize {
        (self.offset.wrapping_add(self.skip.wrapping_mul(self.next)) % size) as usize
    }
}

const EMPTY: u32 = u32::MAX;

/// The table: the host (index into `hosts`) owning each slot. `size` must be a prime
/// ≥ 2 (validated with the DestinationRule).
pub fn build(hosts: &[SocketAddr], size: u64) -> Vec<u32> {
    if hosts.is_empty() || size < 2 {
        return Vec::new();
    }
    let mut walks: Vec<Walk> = hosts.iter().map(|h| Walk::new(h, size)).collect();
    let mut table = vec![EMPTY; size as usize];
    let mut filled = 0usize;
    // Equal weights: every host takes one slot per round until the table is full.
    while filled < table.len() {
        for (index, walk) in walks.iter_mut().enumerate() {
            if filled == table.len() {
                break;
            }
            let mut slot = walk.slot(size);
            while table[slot] != EMPTY {
                walk.next += 1;
                slot = walk.slot(size);
            }
            table[slot] = index as u32;
            walk.next += 1;
            filled += 1;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::test_addrs as hosts;

    #[test]
    fn primes() {
        let small: Vec<u64> = (0..30).filter(|n| is_prime(*n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(DEFAULT_TABLE_SIZE) && is_prime(MAXIMUM_TABLE_SIZE));
        assert!(!is_prime(65_536) && !is_prime(1_000_000));
    }

    #[test]
    fn each_host_walk_is_a_permutation_of_the_slots() {
        for host in hosts(5) {
            let mut walk = Walk::new(&host, 13);
            let mut seen: Vec<usize> = (0..13)
                .map(|n| {
                    walk.next = n;
                    walk.slot(13)
                })
                .collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..13).collect::<Vec<_>>(), "{host}");
        }
    }

    #[test]
    fn the_table_fills_every_slot_with_equal_shares() {
        let table = build(&hosts(5), DEFAULT_TABLE_SIZE);
        assert_eq!(table.len(), DEFAULT_TABLE_SIZE as usize);
        assert!(!table.contains(&EMPTY));
        let counts: Vec<usize> = (0..5).map(|h| table.iter().filter(|o| **o == h).count()).collect();
        // 65537 = 5 × 13107 + 2: the first two hosts take one more slot.
        assert_eq!(counts, [13108, 13108, 13107, 13107, 13107]);
    }

    #[test]
    fn no_hosts_no_table() {
        assert!(build(&[], DEFAULT_TABLE_SIZE).is_empty());
    }
}
