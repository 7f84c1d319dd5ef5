//! Job IDs: parsed once at the boundary, so every `JobId` in the program is well formed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A job's ID: `j` followed by 16 lowercase hex digits. Parsed once at the boundary.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a job ID (j and 16 hex digits): list jobs with `hoist ls`")]
pub struct JobIdError(pub String);

/// Hex digits in a job ID after the `j`.
const JOB_ID_HEX_LEN: usize = 16;

impl JobId {
    /// A fresh random ID.
    pub fn random() -> JobId {
        JobId(format!("j{:016x}", rand::random::<u64>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobId {
    type Err = JobIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix('j')
            .ok_or_else(|| JobIdError(s.to_string()))?;
        if hex.len() == JOB_ID_HEX_LEN
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            Ok(JobId(s.to_string()))
        } else {
            Err(JobIdError(s.to_string()))
        }
    }
}

impl TryFrom<String> for JobId {
    type Error = JobIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_honours_width_for_tables() {
        let id = JobId::random();
        assert_eq!(format!("{id:<18}|").len(), 19);
        assert!(id.as_str().parse::<JobId>().is_ok());
        assert!("j123".parse::<JobId>().is_err());
    }
}
