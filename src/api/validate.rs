//! What the daemon accepts: the limits of a submit request and of a job's bandwidth, checked
//! once at the boundary so the daemon only ever sees a [`JobSpec`].

use super::bodies::{JobBandwidth, SubmitRequest};
use super::job::{JobSpec, SplitLayers};
pub use crate::limits::SPLIT_PART_BYTES_MIN;
use crate::platform::Platform;
use crate::text::{TAG_CHARS_MAX, detail, is_tag};

/// Smallest accepted chunk: ECR refuses upload parts below 5 MiB (except the last one).
pub const CHUNK_BYTES_MIN: u64 = crate::chunk_size::ECR_CHUNK_BYTES_MIN;
/// Largest accepted chunk: one chunk is held in memory per upload connection.
pub const CHUNK_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Chunk size when the client does not ask for one.
pub const CHUNK_BYTES_DEFAULT: u64 = crate::chunk_size::CHUNK_BYTES_DEFAULT;
/// Layer splitting when the client does not ask: `auto` splits only uncompressed layers above
/// 1 GiB, which hoist compresses anyway (why: `docs/SPLIT.md`).
pub const SPLIT_LAYERS_DEFAULT: SplitLayers = SplitLayers::Auto;
/// Longest accepted source or target string; anything longer is a mistake, not an image name.
pub const REFERENCE_LEN_MAX: usize = 4096;
/// Most extra tags one job writes: each costs a manifest PUT and a read-back, and a list this
/// long is a mistake rather than a release's names.
pub const EXTRA_TAGS_MAX: usize = 100;

impl SubmitRequest {
    /// Checks the request and fills in defaults. The error is the message for the client.
    pub fn validate(self) -> Result<JobSpec, String> {
        for (what, value) in [("source", &self.source), ("target", &self.target)] {
            if value.trim().is_empty() {
                return Err(format!("{what} is empty: give an image {what}"));
            }
            if value.len() > REFERENCE_LEN_MAX || value.chars().any(char::is_control) {
                return Err(format!(
                    "{what} is longer than {REFERENCE_LEN_MAX} characters or has control characters: check the {what}"
                ));
            }
        }
        // `user:password@registry/...` would carry credentials into the store and the logs.
        let host = self.target.split('/').next().unwrap_or_default();
        if host.contains('@') || self.target.contains("://") {
            return Err(
                "target must be REGISTRY/REPOSITORY[:TAG] without a scheme or credentials: log in with `docker login REGISTRY` instead"
                    .into(),
            );
        }
        let platform = match &self.platform {
            None => Platform::linux_amd64(),
            Some(p) => p
                .parse()
                .map_err(|e: crate::platform::PlatformError| e.to_string())?,
        };
        let chunk_size_bytes = self.chunk_size_bytes.unwrap_or(CHUNK_BYTES_DEFAULT);
        if !(CHUNK_BYTES_MIN..=CHUNK_BYTES_MAX).contains(&chunk_size_bytes) {
            return Err(format!(
                "chunk size {chunk_size_bytes} bytes is outside {CHUNK_BYTES_MIN}..={CHUNK_BYTES_MAX}: ECR needs at least 5 MiB per chunk"
            ));
        }
        let split_layers = self.split_layers.unwrap_or(SPLIT_LAYERS_DEFAULT);
        if let SplitLayers::MaxBytes(b) = split_layers
            && b < SPLIT_PART_BYTES_MIN
        {
            return Err(format!(
                "split size {b} bytes is below the smallest of {SPLIT_PART_BYTES_MIN}: pick a larger size, auto or off"
            ));
        }
        Ok(JobSpec {
            extra_tags: extra_tags(self.extra_tags)?,
            split_layers,
            source: self.source,
            target: self.target,
            platform,
            compression: self.compression.unwrap_or_default(),
            chunk_size_bytes,
            options: self.options,
        })
    }
}

/// The extra tags, each checked, in the order given, each once.
fn extra_tags(tags: Vec<String>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !is_tag(&tag) {
            return Err(format!(
                "tag {:?} is not a valid tag: use 1 to {TAG_CHARS_MAX} letters, digits, '_', '.' or '-', not starting with '.' or '-'",
                detail(&tag)
            ));
        }
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > EXTRA_TAGS_MAX {
        return Err(format!(
            "{} extra tags is more than {EXTRA_TAGS_MAX}: push fewer tags at once",
            out.len()
        ));
    }
    Ok(out)
}

impl JobBandwidth {
    /// The limit asked for (`None`: no job limit). The error is the message for the client.
    pub fn validate(self) -> Result<Option<u64>, String> {
        match self.bytes_per_s {
            Some(0) => Err(
                "bytes_per_s 0 is not a limit: give at least 1, or null to remove the job's limit"
                    .into(),
            ),
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::decode;
    use crate::digest::Digest;

    #[test]
    fn submit_defaults_and_limits() {
        let req: SubmitRequest =
            decode("submit request", br#"{"source":"a.tar","target":"r/x:1"}"#).unwrap();
        let spec = req.clone().validate().unwrap();
        assert_eq!(spec.platform, Platform::linux_amd64());
        assert_eq!(spec.chunk_size_bytes, CHUNK_BYTES_DEFAULT);
        let small = SubmitRequest {
            chunk_size_bytes: Some(1024),
            split_layers: None,
            ..req
        };
        assert!(small.clone().validate().unwrap_err().contains("5 MiB"));
        for target in [
            "user:pw@registry.example/a:1",
            "https://registry.example/a:1",
        ] {
            let creds = SubmitRequest {
                target: target.into(),
                chunk_size_bytes: None,
                split_layers: None,
                ..small.clone()
            };
            assert!(
                creds.validate().unwrap_err().contains("docker login"),
                "{target}"
            );
        }
        let by_digest = SubmitRequest {
            target: format!("registry.example/a@{}", Digest::sha256_of(b"x")),
            chunk_size_bytes: None,
            split_layers: None,
            ..small
        };
        assert!(by_digest.validate().is_ok());
        assert!(
            decode::<SubmitRequest>(
                "submit request",
                br#"{"source":"a","target":"b","password":"x"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn extra_tags_are_checked_and_duplicates_collapse() {
        let req = |tags: &[&str]| SubmitRequest {
            extra_tags: tags.iter().map(|t| t.to_string()).collect(),
            ..decode("submit request", br#"{"source":"a.tar","target":"r/x:1"}"#).unwrap()
        };
        let spec = req(&["2", "3", "2", "latest"]).validate().unwrap();
        assert_eq!(spec.extra_tags, ["2", "3", "latest"]);
        for bad in ["", "-x", "a/b", "a:b", "x\n"] {
            let err = req(&["ok", bad]).validate().unwrap_err();
            assert!(err.contains("not a valid tag"), "{bad}: {err}");
        }
        let many: Vec<String> = (0..=EXTRA_TAGS_MAX).map(|i| i.to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(req(&many).validate().unwrap_err().contains("fewer tags"));
        // Absent in the request and in a stored spec: no extra tags.
        assert!(req(&[]).validate().unwrap().extra_tags.is_empty());
        let stored = br#"{"source":"a","target":"r/x:1","platform":{"os":"linux","architecture":"amd64"},"compression":"gzip","chunk_size_bytes":5242880,"options":{"insecure":false}}"#;
        let spec: JobSpec = decode("job spec", stored).unwrap();
        assert!(spec.extra_tags.is_empty());
        assert!(
            !String::from_utf8(crate::api::encode(&spec))
                .unwrap()
                .contains("extra_tags")
        );
    }

    #[test]
    fn job_bandwidth_needs_the_field_and_refuses_zero() {
        let ok = |b: &[u8]| decode::<JobBandwidth>("job bandwidth", b).map(|r| r.validate());
        assert_eq!(ok(br#"{"bytes_per_s":5}"#).unwrap(), Ok(Some(5)));
        assert_eq!(ok(br#"{"bytes_per_s":null}"#).unwrap(), Ok(None));
        assert!(
            ok(br#"{"bytes_per_s":0}"#)
                .unwrap()
                .unwrap_err()
                .contains("null")
        );
        assert!(ok(b"{}").is_err());
        assert!(ok(br#"{"bytes_per_s":-1}"#).is_err());
        assert!(ok(br#"{"bytes_per_s":1,"x":2}"#).is_err());
    }
}
