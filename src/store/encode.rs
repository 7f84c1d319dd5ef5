//! How the store keeps the API's enums: as text, spelled as the API spells them (`as_str`), so
//! a row reads like the API shows it. Writing uses `as_str`; these read the text back, and a
//! word the store does not know is a corrupt row.

use std::str::FromStr;

use crate::api::{BlobAction, BlobState, JobState};

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

impl FromStr for BlobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown blob state {s:?}"))
    }
}

impl BlobAction {
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
        match s {
            "as_is" => Ok(BlobAction::AsIs),
            "compress" => Ok(BlobAction::Compress),
            other => Err(format!("unknown blob action {other:?}")),
        }
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
        for a in [BlobAction::AsIs, BlobAction::Compress] {
            assert_eq!(a.as_str().parse::<BlobAction>(), Ok(a));
        }
        assert!("gone".parse::<JobState>().is_err());
        assert!("gone".parse::<BlobState>().is_err());
        assert!("gone".parse::<BlobAction>().is_err());
    }
}
