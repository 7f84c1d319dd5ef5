//! A bare image name typed as a source (`hoist push app:1 ...`), as `docker push` users type
//! it: taken from the Docker engine when no file or directory has that name.
//!
//! Only what Docker's reference grammar accepts counts as a name (lowercase path components,
//! an optional registry host first, a tag, a digest), and a name that reads like an archive
//! (`image.tar`) stays a path: a mistyped file name then says "no such file" rather than
//! asking the engine for an image.

use std::path::Path;

use super::SourceRef;
use super::engine::TRANSPORT_PREFIX;
use crate::digest::Digest;

/// The transport prefixes a source may start with; anything else before a colon is a tag.
const TRANSPORTS: [&str; 4] = ["docker-archive:", "oci-archive:", "oci:", TRANSPORT_PREFIX];

/// Endings of file names that are never taken for image names.
const FILE_ENDINGS: [&str; 5] = [".tar", ".tgz", ".gz", ".zst", ".json"];

/// `input` as a `docker-daemon:` source when it is a bare image name and nothing on disk has
/// that name; `None` leaves it to [`SourceRef`]'s parsing (a prefix, a path, an error).
pub fn bare_image_source(input: &str) -> Option<SourceRef> {
    if TRANSPORTS.iter().any(|t| input.starts_with(t))
        || FILE_ENDINGS.iter().any(|e| input.ends_with(e))
        || !is_image_reference(input)
        || std::fs::symlink_metadata(Path::new(input)).is_ok()
    {
        return None;
    }
    Some(SourceRef::DockerDaemon {
        image: input.to_string(),
    })
}

/// `[HOST[:PORT]/]COMPONENT[/COMPONENT...][:TAG][@ALG:HEX]`, as Docker's reference grammar
/// has it.
fn is_image_reference(s: &str) -> bool {
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if digest.is_some_and(|d| Digest::parse(d).is_err()) {
        return false;
    }
    let (name, tag) = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name, None),
    };
    if tag.is_some_and(|t| !crate::text::is_tag(t)) {
        return false;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && parts.first().is_some_and(|h| is_host(h)) {
        parts.remove(0);
    }
    !parts.is_empty() && parts.iter().all(|p| is_path_component(p))
}

/// A registry host: `localhost`, or a name with a dot or a port (`registry.example:5000`).
fn is_host(h: &str) -> bool {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (h, None),
    };
    let alnum_ends = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    (host == "localhost" || host.contains('.') || port.is_some())
        && alnum_ends(host)
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes.
fn is_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !b.first().is_some_and(alnum) || !b.last().is_some_and(alnum) {
        return false;
    }
    let mut run = 0usize;
    for pair in b.windows(2) {
        let (prev, c) = (pair[0], pair[1]);
        if alnum(&c) {
            run = 0;
            continue;
        }
        run += 1;
        let ok = match c {
            b'-' => prev == b'-' || alnum(&prev),
            b'.' => run == 1,
            b'_' => run == 1 || (run == 2 && prev == b'_'),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_docker_push_users_type() {
        for name in [
            "app",
            "app:1",
            "team/app:1.2-rc_3",
            "localhost:5000/app:1",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1",
            "registry.example/a/b/c",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "my__app:latest",
            "my--app",
        ] {
            assert!(is_image_reference(name), "{name}");
        }
    }

    #[test]
    fn what_is_not_an_image_name() {
        for name in [
            "",
            "App:1",
            "./app",
            "/tmp/app",
            "app/",
            "a//b",
            "-app",
            "app.",
            "a..b",
            "a___b",
            "app:",
            "app:-x",
            "app@sha256:zz",
            "~/img",
            "host:port/app",
        ] {
            assert!(!is_image_reference(name), "{name}");
        }
        // Prefixed sources and archive names stay with the parser.
        assert_eq!(bare_image_source("oci:dir"), None);
        assert_eq!(bare_image_source("image.tar"), None);
        assert_eq!(bare_image_source("docker-daemon:app:1"), None);
        assert_eq!(
            bare_image_source("hoist-no-such-app:1"),
            Some(SourceRef::DockerDaemon {
                image: "hoist-no-such-app:1".into()
            })
        );
    }
}
