//! `docker-daemon:` sources: an image in a Docker engine (or podman's Docker-compatible API),
//! read over the Engine API on a Unix socket.
//!
//! - [`endpoint`]: which socket, from the caller's environment (`DOCKER_HOST`, the current
//!   docker context, the default sockets), and how it was chosen (said in every error).
//! - [`client`]: HTTP/1.1 over the socket (hyper): version negotiation (`GET /version`), image
//!   inspect (platform and diff_ids before anything is exported) and the export stream
//!   (`GET /images/{name}/get`) as a blocking reader.
//! - [`platforms`]: the platforms the engine holds of an image and which one a push takes.
//! - [`export`]: walks the export's tar stream once, identifying each layer by the digest of its
//!   uncompressed bytes against the inspect's diff_ids, handing layers to the caller as they
//!   stream and keeping only the small JSON files in memory.
//!
//! The engine facts relied on are in `docs/ENGINE.md`.

pub mod client;
pub mod endpoint;
pub mod export;
pub mod platforms;

pub use client::{Engine, ImageInspect};
pub use endpoint::Endpoint;

/// The transport prefix, as skopeo spells it.
pub const TRANSPORT_PREFIX: &str = "docker-daemon:";

/// The image part of `docker-daemon:IMAGE`: `NAME[:TAG]`, `NAME@sha256:HEX` or an image ID
/// (`sha256:HEX`, or its hex). It goes into a request path, so only the characters image
/// references use are accepted; the engine resolves the name.
pub fn parse_image_name(image: &str) -> Result<String, String> {
    if image.is_empty() {
        return Err("the image name is empty: use docker-daemon:NAME[:TAG]".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/:@+".contains(c);
    if let Some(c) = image.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "{c:?} cannot be part of an image name: use docker-daemon:NAME[:TAG], NAME@sha256:HEX or an image ID"
        ));
    }
    if image.starts_with('/') || image.contains("//") || image.contains("..") {
        return Err("not an image name: use docker-daemon:NAME[:TAG]".into());
    }
    Ok(image.to_string())
}

/// Problems reaching the engine or reading an image from it; one line each, saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "docker-daemon:{image} is an image in a Docker engine, which only a push reads: to inspect it, save it first (docker save -o FILE {image})"
    )]
    NotAFile { image: String },

    #[error(
        "{variable}={value}: hoist reaches the Docker engine over a Unix socket only: set it to unix:///PATH/TO/docker.sock, or unset it to use the current docker context"
    )]
    NotUnix { variable: String, value: String },

    #[error(
        "docker context {context:?}: {detail}: run `docker context use default`, or set DOCKER_HOST=unix:///PATH/TO/docker.sock"
    )]
    Context { context: String, detail: String },

    /// The caller's own groups do not reach the engine's socket (hoistd's might).
    #[error("the Docker engine's socket ({chosen}): {detail}")]
    CallerDenied { chosen: String, detail: String },

    #[error(
        "no Docker engine at {socket} ({chosen}): {detail}: start the engine (or `podman system service`), or set DOCKER_HOST=unix:///PATH to its socket"
    )]
    NoEngine {
        socket: String,
        chosen: String,
        detail: String,
    },

    #[error(
        "permission denied on the Docker engine's socket {socket} ({chosen}): hoistd runs as a user outside the socket's group: join the docker group (sudo usermod -aG docker $USER, log in again, restart hoistd) or run hoistd with sudo"
    )]
    PermissionDenied { socket: String, chosen: String },

    #[error(
        "the Docker engine at {socket} has no image {image:?}: check `docker images`, then build or pull it first"
    )]
    UnknownImage { socket: String, image: String },

    #[error(
        "the Docker engine at {socket} is too old: version {version} speaks Engine API {api}, hoist needs {min} or newer: upgrade the engine"
    )]
    TooOld {
        socket: String,
        version: String,
        api: String,
        min: String,
    },

    #[error(
        "the Docker engine at {socket} (Engine API {api}) describes only the {have} image of {image}, not its {wanted} one: upgrade the engine (Engine API 1.49, Docker 28, or newer), or `docker save --platform {wanted}` the image and push the archive"
    )]
    PlatformNotDescribed {
        socket: String,
        api: String,
        image: String,
        have: String,
        wanted: String,
    },

    #[error("the Docker engine at {socket} answered {status} to {what}: {detail}")]
    Status {
        socket: String,
        what: String,
        status: u16,
        detail: String,
    },

    #[error(
        "the Docker engine at {socket} broke off {what} ({detail}): check that the engine still runs, then retry"
    )]
    Broken {
        socket: String,
        what: String,
        detail: String,
    },

    #[error(
        "the Docker engine at {socket} gave an answer hoist cannot read for {what} ({detail}): report this with the engine's version"
    )]
    BadAnswer {
        socket: String,
        what: String,
        detail: String,
    },

    #[error(
        "the export of {image} from the Docker engine {detail}: check the image with `docker image inspect {image}`, then push again"
    )]
    Export { image: String, detail: String },
}

#[cfg(test)]
mod tests {
    use super::parse_image_name;

    #[test]
    fn image_names() {
        for ok in [
            "busybox",
            "busybox:1.36",
            "localhost:5000/a/b:v1",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse_image_name(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "a b", "a?b", "/abs", "a/../b", "x#y", "a\nb"] {
            assert!(parse_image_name(bad).is_err(), "{bad:?}");
        }
    }
}
