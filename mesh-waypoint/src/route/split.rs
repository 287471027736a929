//! Weighted choice among a route's destinations (HTTP and TCP).
//!
//! HTTP routes deal from a shuffled deck: every 100 requests (the weights' total)
//! contain exactly `weight` requests for each destination, in random order. The
//! split is as random per request as Envoy's, but its error does not grow with
//! traffic volume, so a 95/5 canary really sends 5 % and no run drifts by chance.

use std::sync::{Arc, Mutex};

use rand::Rng;
use rand::seq::SliceRandom;

use super::WeightedDestination;

/// The destinations of one route, with the deck their picks are dealt from.
#[derive(Clone, Debug)]
pub struct Split {
    pub destinations: Vec<WeightedDestination>,
    deck: Arc<Mutex<Vec<usize>>>,
}

impl Split {
    pub fn new(destinations: Vec<WeightedDestination>) -> Self {
        Self {
            destinations,
            deck: Arc::default(),
        }
    }

    pub fn pick(&self) -> Option<&WeightedDestination> {
        if self.destinations.len() <= 1 {
            return self.destinations.first();
        }
        let Ok(mut deck) = self.deck.lock() else {
            return pick(&self.destinations, &mut rand::thread_rng());
        };
        if deck.is_empty() {
            for (i, d) in self.destinations.iter().enumerate() {
                deck.extend(std::iter::repeat_n(i, d.weight as usize));
            }
            deck.shuffle(&mut rand::thread_rng());
        }
        match deck.pop() {
            Some(i) => self.destinations.get(i),
            None => self.destinations.first(),
        }
    }
}

/// Picks a destination with probability weight/total. Weights were validated
/// (sum 100, or a single destination), so `total` is never 0 for valid routes.
pub fn pick<'a>(dests: &'a [WeightedDestination], rng: &mut impl Rng) -> Option<&'a WeightedDestination> {
    pick_by(dests, |d| d.weight, rng)
}

fn pick_by<'a, T>(items: &'a [T], weight: impl Fn(&T) -> u32, rng: &mut impl Rng) -> Option<&'a T> {
    let total: u32 = items.iter().map(&weight).sum();
    if total == 0 {
        return items.first();
    }
    let mut roll = rng.gen_range(0..total);
    items.iter().find(|item| {
        let w = weight(item);
        if roll < w {
            return true;
        }
        roll -= w;
        false
    })
}

/// A `tcp` route: weighted destinations for non-HTTP ports.
#[derive(Clone, Debug)]
pub struct TcpRoute {
    /// `match[]`: the route applies when one block matches (empty: always).
    pub matches: Vec<super::l4_match::L4Match>,
    pub split: Split,
}

impl TcpRoute {
    pub fn applies_to(&self, stream: &super::l4_match::StreamInfo<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(stream))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::route::DestinationRef;

    fn dest(host: &str, weight: u32) -> WeightedDestination {
        let destination = DestinationRef {
            host: host.into(),
            subset: None,
            port: None,
        };
        WeightedDestination {
            destination,
            weight,
            headers: Default::default(),
        }
    }

    #[test]
    fn deck_gives_exact_shares_per_hundred() {
        let s = Split::new(vec![dest("a", 95), dest("b", 5)]);
        let a = (0..1000).filter(|_| s.pick().unwrap().destination.host == "a").count();
        assert_eq!(a, 950);
        let first: Vec<_> = (0..100).map(|_| s.pick().unwrap().destination.host.clone()).collect();
        let second: Vec<_> = (0..100).map(|_| s.pick().unwrap().destination.host.clone()).collect();
        assert_ne!(first, second, "order is shuffled, not fixed");
    }

    #[test]
    fn split_follows_weights() {
        let dests = [dest("a", 95), dest("b", 5)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = (0..10_000)
            .filter(|_| pick(&dests, &mut rng).unwrap().destination.host == "a")
            .count();
        assert!((9350..=9650).contains(&a), "{a}");
        let zero = [dest("a", 0), dest("b", 100)];
        assert!((0..1000).all(|_| pick(&zero, &mut rng).unwrap().destination.host == "b"));
    }
}
