//! Which limits a registry gets, by its host name. The name only picks the tighter ECR Public
//! limits: every other host, recognised or not, gets ECR's (see `crate::limits`), so nothing
//! about correctness depends on recognising a name.

use super::reference::{EcrKind, ecr_kind};
use crate::limits::{ECR_LIMITS, ECR_PUBLIC_LIMITS, RegistryLimits};

/// The limits a push to `host` must stay within.
pub fn limits_for_host(host: &str) -> RegistryLimits {
    if ecr_kind(host) == Some(EcrKind::Public) {
        ECR_PUBLIC_LIMITS
    } else {
        ECR_LIMITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_public_gets_its_limits_every_other_host_ecrs() {
        for h in ["public.ecr.aws", "PUBLIC.ECR.AWS:443"] {
            assert_eq!(limits_for_host(h), ECR_PUBLIC_LIMITS, "{h}");
        }
        for h in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr-ecr.us-east-1.on.aws",
            "127.0.0.1:5000",
            "registry.example.com",
            "public.ecr.aws.example.com",
        ] {
            assert_eq!(limits_for_host(h), ECR_LIMITS, "{h}");
        }
    }
}
