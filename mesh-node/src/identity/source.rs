//! Where certificates come from: the mesh CA over gRPC ([`CaClient`]); tests plug in
//! an in-process signer.

use std::time::Duration;

use mesh_hbone::BoxFuture;
use mesh_hbone::ca::{CaClient, CaClientError};
use mesh_hbone::cert::Current;

use super::SpiffeId;

pub trait CertSource: Send + Sync {
    /// A certificate for `identity` (requested on behalf of a local pod) with a fresh key.
    fn fetch<'a>(&'a self, identity: &'a SpiffeId, generation: u64) -> BoxFuture<'a, Result<Current, CaClientError>>;
}

/// The node daemon asks for its pods' identities: ztunnel's impersonation.
pub struct RemoteCa {
    pub client: CaClient,
    pub lifetime: Duration,
}

impl CertSource for RemoteCa {
    fn fetch<'a>(&'a self, identity: &'a SpiffeId, generation: u64) -> BoxFuture<'a, Result<Current, CaClientError>> {
        Box::pin(self.client.fetch(identity, true, self.lifetime, generation))
    }
}
