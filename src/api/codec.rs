//! JSON in and out: the only place wire values become bytes and back.

use serde::Serialize;

use super::bodies::ErrorBody;
use super::event::Event;

/// Media type of a JSON body.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Media type of the event stream: one JSON [`Event`] per line.
pub const CONTENT_TYPE_NDJSON: &str = "application/x-ndjson";
/// Media type of the metrics page (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4";

/// A body that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("the body is not a valid {what}: {source}")]
pub struct DecodeError {
    what: &'static str,
    #[source]
    source: serde_json::Error,
}

/// Encodes a wire value as JSON bytes.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no I/O.
    serde_json::to_vec(value).expect("api types always serialise")
}

/// Encodes one event as an NDJSON line (with the trailing newline).
pub fn encode_event_line(event: &Event) -> Vec<u8> {
    let mut line = encode(event);
    line.push(b'\n');
    line
}

/// Decodes a wire value; `what` names it in the error ("job", "submit request").
pub fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|source| DecodeError { what, source })
}

/// The JSON error body for `message`.
pub fn error_body(message: impl Into<String>) -> Vec<u8> {
    encode(&ErrorBody {
        error: message.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EventKind, JobId, JobState};
    use crate::digest::Digest;

    #[test]
    fn event_round_trip() {
        let ev = Event {
            seq: 7,
            job: JobId::random(),
            time_ms: 1,
            kind: EventKind::State {
                state: JobState::Done,
                reason: None,
                manifest_digest: Some(Digest::sha256_of(b"m")),
            },
        };
        let line = encode_event_line(&ev);
        assert!(line.ends_with(b"\n"));
        let back: Event = decode("event", &line).unwrap();
        assert_eq!(back, ev);
        assert!(back.kind.is_final());
    }
}
