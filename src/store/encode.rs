//! How the store keeps the API's enums: as text, spelled as the API spells them (`as_str`), so
//! a row reads like the API shows it. Writing uses `as_str`; these read the text back, and a
//! word the store does not know is a corrupt row.

use std::str::FromStr;

use crate::api::{BlobAction, BlobState, JobState};

/// The value of `all` whose word is `s`; `what` names the kind in the error.
fn word<T: Copy>(
    all: &[T],
    as_str: fn(T) -> &'static str,
    s: &str,
    what: &str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|v| as_str(*v) == s)
        .ok_or_else(|| format!("unknown {what} {s:?}"))
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        word(&JobState::ALL, JobState::as_str, s, "job state")
    }
}

impl FromStr for BlobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        word(&BlobState::ALL, BlobState::as_str, s, "blob state")
    }
}

impl BlobAction {
    const ALL: [BlobAction; 2] = [BlobAction::AsIs, BlobAction::Compress];

    /// The word the store keeps for this action.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobAction::AsIs => "as_is",
            BlobAction::Compress => "compress",
        }
    }
}

impl FromStr for BlobAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        word(&BlobAction::ALL, BlobAction::as_str, s, "blob action")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back() {
        for st in JobState::ALL {
            assert_eq!(st.as_str().parse::<JobState>(), Ok(st));
        }
        for st in BlobState::ALL {
            assert_eq!(st.as_str().parse::<BlobState>(), Ok(st));
        }
        for a in BlobAction::ALL {
            assert_eq!(a.as_str().parse::<BlobAction>(), Ok(a));
        }
        assert!("gone".parse::<JobState>().is_err());
        assert!("gone".parse::<BlobState>().is_err());
        assert!("gone".parse::<BlobAction>().is_err());
    }
}
