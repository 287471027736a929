//! Weighted choice among a route's destinations (HTTP and TCP).

use rand::Rng;

use super::{DestinationRef, WeightedDestination};

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
    pub port: Option<u16>,
    pub destinations: Vec<(DestinationRef, u32)>,
}

impl TcpRoute {
    pub fn pick(&self, rng: &mut impl Rng) -> Option<&DestinationRef> {
        pick_by(&self.destinations, |d| d.1, rng).map(|d| &d.0)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn dest(host: &str, weight: u32) -> WeightedDestination {
        let destination = DestinationRef { host: host.into(), subset: None, port: None };
        WeightedDestination { destination, weight, headers: Default::default() }
    }

    #[test]
    fn split_follows_weights() {
        let dests = [dest("a", 95), dest("b", 5)];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = (0..10_000).filter(|_| pick(&dests, &mut rng).unwrap().destination.host == "a").count();
        assert!((9350..=9650).contains(&a), "{a}");
        let zero = [dest("a", 0), dest("b", 100)];
        assert!((0..1000).all(|_| pick(&zero, &mut rng).unwrap().destination.host == "b"));
    }
}
