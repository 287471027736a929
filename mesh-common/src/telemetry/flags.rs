//! Envoy's response flags.

/// Envoy-style response flags, so operators' habits carry over: the waypoint's local
/// replies and both access logs use the same codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flag {
    /// No route matched (or the host is unknown).
    NoRoute,
    /// Fault injection: delay.
    DelayInjected,
    /// Fault injection: abort.
    FaultInjected,
    /// Circuit breaker overflow.
    Overflow,
    /// No healthy upstream endpoint.
    NoHealthy,
    /// Upstream connect failure.
    ConnectFailure,
    /// Upstream reset.
    Reset,
    /// Per-try or route timeout.
    Timeout,
    /// A retry was wanted but `maxRetries` was reached.
    RetryOverflow,
    /// Refused by an AuthorizationPolicy (Envoy's RBAC filter code).
    Rbac,
    /// A JWT that RequestAuthentication could not verify (401).
    JwtInvalid,
}

impl Flag {
    pub fn code(self) -> &'static str {
        match self {
            Flag::NoRoute => "NR",
            Flag::DelayInjected => "DI",
            Flag::FaultInjected => "FI",
            Flag::Overflow => "UO",
            Flag::NoHealthy => "UH",
            Flag::ConnectFailure => "UF",
            Flag::Reset => "UR",
            Flag::Timeout => "UT",
            Flag::RetryOverflow => "URX",
            Flag::Rbac => "RBAC",
            Flag::JwtInvalid => "JWT",
        }
    }
}

/// Comma-separated codes, `-` when none (Envoy's `%RESPONSE_FLAGS%`).
pub fn flags_text(flags: &[Flag]) -> String {
    flags_parts(flags).collect()
}

/// The pieces of [`flags_text`] in order (codes and commas), for writers that need
/// no `String` of it.
pub fn flags_parts(flags: &[Flag]) -> impl Iterator<Item = &'static str> + '_ {
    let none = flags.is_empty().then_some("-");
    let codes = flags
        .iter()
        .enumerate()
        .flat_map(|(i, f)| [(i > 0).then_some(","), Some(f.code())].into_iter().flatten());
    none.into_iter().chain(codes)
}
