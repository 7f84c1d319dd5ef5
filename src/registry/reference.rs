//! Image references: `HOST/REPOSITORY[:TAG][@DIGEST]`, normalised the way docker does.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

use super::RegistryError;

/// Docker Hub as people write it, and where its API really lives.
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// What a reference points at inside a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

impl Reference {
    /// Parses a tag or a digest (anything with `:` must be a digest).
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        if s.contains(':') {
            Digest::parse(s)
                .map(Reference::Digest)
                .map_err(|_| RegistryError::InvalidReference(s.to_string()))
        } else if valid_tag(s) {
            Ok(Reference::Tag(s.to_string()))
        } else {
            Err(RegistryError::InvalidReference(s.to_string()))
        }
    }
}

/// A parsed image reference. `host` is as written (`docker.io` for Docker Hub), `repository`
/// includes `library/` for official Docker Hub images.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub host: String,
    pub repository: String,
    pub reference: Reference,
}

/// `[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// One path component: lowercase alphanumerics separated by `.`, `_`, `__` or dashes.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, RegistryError> {
        let bad = || RegistryError::InvalidReference(s.to_string());
        let s_trim = s.trim();
        if s_trim.is_empty() || s_trim.contains("://") {
            return Err(bad());
        }
        let (name_tag, digest) = match s_trim.split_once('@') {
            Some((n, d)) => (n, Some(Digest::parse(d).map_err(|_| bad())?)),
            None => (s_trim, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if slash.is_none_or(|sl| i > sl) => (&name_tag[..i], Some(&name_tag[i + 1..])),
            _ => (name_tag, None),
        };
        let (host, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let host = if host == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            host
        };
        let repository = if host == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty()
            || !repository.split('/').all(valid_component)
            || repository.len() > 255
        {
            return Err(bad());
        }
        let reference = match (tag, digest) {
            (_, Some(d)) => Reference::Digest(d),
            (Some(t), None) if valid_tag(t) => Reference::Tag(t.to_string()),
            (Some(_), None) => return Err(bad()),
            (None, None) => Reference::Tag("latest".into()),
        };
        Ok(ImageRef {
            host,
            repository,
            reference,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        match &self.reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        }
    }
}

impl FromStr for ImageRef {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}/{}:{t}", self.host, self.repository),
            Reference::Digest(d) => write!(f, "{}/{}@{d}", self.host, self.repository),
        }
    }
}

/// Whether `host` (optionally with `:port`) is loopback: `localhost`, 127.0.0.0/8, `::1`.
/// Docker talks plain HTTP to these; so do we.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host_without_port(host);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// `host:port` -> `host`, `[::1]:5000` -> `[::1]`, `::1` stays.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Which Amazon ECR a host name is, when the name says so. Names only tune defaults and
/// limits: ECR is also reached through names no list knows (a proxy, a CNAME), so nothing
/// about correctness may depend on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcrKind {
    /// A private registry: `<id>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`, or its
    /// dual-stack (IPv6) name `<id>.dkr-ecr.<region>.on.aws`.
    Private,
    /// ECR Public: `public.ecr.aws`.
    Public,
}

/// The ECR kind of `host` (optionally with `:port`), by name.
pub fn ecr_kind(host: &str) -> Option<EcrKind> {
    let name = host_without_port(host).to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    if name == "public.ecr.aws" {
        return Some(EcrKind::Public);
    }
    let private = if let Some(rest) = name.strip_suffix(".on.aws") {
        // Dual-stack: `<id>.dkr-ecr.<region>.on.aws`.
        matches!(rest.split('.').collect::<Vec<_>>().as_slice(), [id, dkr_ecr, region]
            if is_account_id(id) && *dkr_ecr == "dkr-ecr" && !region.is_empty())
    } else {
        let name = name.strip_suffix(".cn").unwrap_or(name);
        name.strip_suffix(".amazonaws.com").is_some_and(|rest| {
            matches!(rest.split('.').collect::<Vec<_>>().as_slice(), [id, dkr, ecr, region]
                if is_account_id(id) && *dkr == "dkr" && (*ecr == "ecr" || *ecr == "ecr-fips") && !region.is_empty())
        })
    };
    private.then_some(EcrKind::Private)
}

/// An AWS account ID as it appears in a registry name: twelve digits.
fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `host` is Amazon ECR by name, private or public (see [`ecr_kind`]).
pub fn is_ecr_host(host: &str) -> bool {
    ecr_kind(host).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = ImageRef::parse("127.0.0.1:5000/a/b:tag").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!(r.reference, Reference::Tag("tag".into()));
        let r = ImageRef::parse("123456789012.dkr.ecr.us-east-1.amazonaws.com/x:y").unwrap();
        assert_eq!(r.host, "123456789012.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(
            r.to_string(),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:y"
        );
        let r = ImageRef::parse("ubuntu").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/ubuntu:latest");
        let r = ImageRef::parse("me/app:1.0").unwrap();
        assert_eq!(r.to_string(), "docker.io/me/app:1.0");
        let r = ImageRef::parse("localhost:5000/app").unwrap();
        assert_eq!(r.tag(), Some("latest"));
        let d = Digest::sha256_of(b"x");
        let r = ImageRef::parse(&format!("localhost/app:v1@{d}")).unwrap();
        assert_eq!(r.reference, Reference::Digest(d));
        for bad in [
            "",
            "UPPER/case",
            "host:5000/app:bad tag",
            "a//b",
            "https://x/y",
            "x/y@sha256:12",
            "app:",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        for h in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:1",
            "[::1]:5000",
            "127.5.5.5",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["10.0.0.1:5000", "example.com", "localhost.example.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn ecr_names() {
        for h in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
            "123456789012.DKR.ECR.eu-west-1.AMAZONAWS.COM:443",
            "123456789012.dkr-ecr.us-east-1.on.aws",
            "123456789012.dkr-ecr.ap-southeast-2.on.aws:443",
            "123456789012.dkr-ecr.eu-central-1.on.aws.",
        ] {
            assert_eq!(ecr_kind(h), Some(EcrKind::Private), "{h}");
            assert!(is_ecr_host(h), "{h}");
        }
        for h in ["public.ecr.aws", "PUBLIC.ECR.AWS:443"] {
            assert_eq!(ecr_kind(h), Some(EcrKind::Public), "{h}");
            assert!(is_ecr_host(h), "{h}");
        }
        for h in [
            "dkr.ecr.us-east-1.amazonaws.com",
            "s3.amazonaws.com",
            "12345.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr..amazonaws.com",
            "123456789012.dkr-ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.on.aws",
            "dkr-ecr.us-east-1.on.aws",
            "x.123456789012.dkr-ecr.us-east-1.on.aws",
            "ecr.aws",
            "gallery.ecr.aws",
            "public.ecr.aws.example.com",
            "127.0.0.1:5000",
            "[::1]:5000",
        ] {
            assert_eq!(ecr_kind(h), None, "{h}");
        }
    }
}
