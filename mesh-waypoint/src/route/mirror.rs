//! `mirror` / `mirrors`: copy a share of requests to another destination,
//! fire-and-forget; the copy's authority gets Envoy's `-shadow` suffix.

use super::DestinationRef;
use super::fault::Percentage;

#[derive(Clone, Debug)]
pub struct Mirror {
    pub destination: DestinationRef,
    pub percentage: Percentage,
}

/// `reviews:9080` → `reviews-shadow:9080`.
pub fn shadow_authority(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => format!("{host}-shadow:{port}"),
        _ => format!("{authority}-shadow"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shadow() {
        assert_eq!(super::shadow_authority("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(super::shadow_authority("reviews"), "reviews-shadow");
    }
}
