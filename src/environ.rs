//! The caller's environment: the variables a push depends on, as the shell that asked for it
//! had them. hoistd is a daemon started once (or by systemd, with an empty environment), so
//! the CLI sends these with each job and the daemon's work for that job reads them from here,
//! never from its own process environment.
//!
//! Which variables are secret is decided here, once: secret values live in memory only.

use std::collections::BTreeMap;
use std::fmt;

/// Variables a push may depend on, by exact name.
pub const NAMES: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "HOME",
    "PATH",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "XDG_CONFIG_HOME",
    "XDG_RUNTIME_DIR",
];

/// Variables a push may depend on, by prefix (the AWS SDKs' and credential helpers' settings).
pub const PREFIXES: &[&str] = &["AWS_", "ECR_"];

/// Whether `name` is one of the variables a push may depend on.
pub fn is_relevant(name: &str) -> bool {
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether the value of `name` is a secret: kept in memory only, never stored, logged or shown.
pub fn is_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "_KEY"]
        .iter()
        .any(|word| upper.contains(word))
        // A proxy URL may carry `user:password@`.
        || upper.ends_with("_PROXY")
}

/// A set of environment variables, restricted to the relevant ones.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CallerEnv {
    vars: BTreeMap<String, String>,
}

impl CallerEnv {
    /// The relevant variables of `vars`; others are dropped.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, _)| is_relevant(k))
            .collect();
        CallerEnv { vars }
    }

    /// The relevant variables of this process (the CLI's shell, or the daemon's own
    /// environment for callers that have no job).
    pub fn from_process() -> Self {
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The first of `names` that is set and not empty (`HTTPS_PROXY` then `https_proxy`).
    pub fn first(&self, names: &[&str]) -> Option<&str> {
        names
            .iter()
            .find_map(|n| self.get(n).filter(|v| !v.is_empty()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The variables whose values may be stored and shown.
    pub fn public(&self) -> CallerEnv {
        self.filtered(|k| !is_secret(k))
    }

    /// The variables whose values live in memory only.
    pub fn secrets(&self) -> CallerEnv {
        self.filtered(is_secret)
    }

    fn filtered(&self, keep: impl Fn(&str) -> bool) -> CallerEnv {
        let vars = self
            .vars
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        CallerEnv { vars }
    }

    /// This set with `other`'s variables added over it.
    pub fn merged(&self, other: &CallerEnv) -> CallerEnv {
        let mut vars = self.vars.clone();
        vars.extend(other.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        CallerEnv { vars }
    }
}

/// Names only, with secret values hidden: a `CallerEnv` may be logged by accident.
impl fmt::Debug for CallerEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.vars {
            if is_secret(k) {
                map.entry(k, &"<secret>");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relevant_variables_are_kept() {
        let env = CallerEnv::from_vars([
            ("PATH", "/bin"),
            ("AWS_PROFILE", "dev"),
            ("EDITOR", "vi"),
            ("LS_COLORS", "x"),
        ]);
        let names: Vec<_> = env.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["AWS_PROFILE", "PATH"]);
    }

    #[test]
    fn secrets_are_classified_and_hidden_from_debug() {
        let env = CallerEnv::from_vars([
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("AWS_SESSION_TOKEN", "t0k3n"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("HTTPS_PROXY", "http://u:pw@proxy:3128"),
            ("AWS_REGION", "eu-west-1"),
            ("HOME", "/root"),
        ]);
        let secret: Vec<_> = env.secrets().iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(
            secret,
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "HTTPS_PROXY"
            ]
        );
        assert_eq!(env.public().get("AWS_REGION"), Some("eu-west-1"));
        assert_eq!(env.public().get("AWS_SESSION_TOKEN"), None);
        let shown = format!("{env:?}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("t0k3n") && !shown.contains("pw@"));
        assert!(shown.contains("eu-west-1"));
    }

    #[test]
    fn first_skips_unset_and_empty() {
        let env = CallerEnv::from_vars([("HTTPS_PROXY", ""), ("https_proxy", "http://p:1")]);
        assert_eq!(
            env.first(&["HTTPS_PROXY", "https_proxy"]),
            Some("http://p:1")
        );
        assert_eq!(env.first(&["NO_PROXY", "no_proxy"]), None);
        let merged = env.merged(&CallerEnv::from_vars([("HTTPS_PROXY", "http://q:2")]));
        assert_eq!(merged.first(&["HTTPS_PROXY"]), Some("http://q:2"));
    }
}
