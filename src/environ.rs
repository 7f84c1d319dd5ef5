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

/// `AWS_*` variables that are settings, not secrets: which profile, region, files and endpoint
/// to use. Every other `AWS_*` and `ECR_*` variable is secret, whatever its name says: the AWS
/// SDKs and credential helpers keep adding variables, and a new one is safer hidden.
const AWS_PUBLIC: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
];
/// Endpoint settings per service (`AWS_ENDPOINT_URL_ECR`, ...): public, as `AWS_ENDPOINT_URL`.
const AWS_ENDPOINT_PREFIX: &str = "AWS_ENDPOINT_URL_";
/// Never secret: a list of hosts, which may look like anything but carries no credential.
const NEVER_SECRET: &[&str] = &["NO_PROXY", "no_proxy"];
/// Secret values shorter than this are not searched for in text: a one- or two-letter value
/// would blank out ordinary words of every message.
pub const REDACT_CHARS_MIN: usize = 4;

/// Whether the variable `name` with `value` is a secret: kept in memory only, never stored,
/// logged or shown. Decided by value as well as by name: any value with URL user info
/// (`http://user:password@proxy:3128`, `AWS_ENDPOINT_URL=https://u:p@...`) is secret, and so
/// is every `AWS_*`/`ECR_*` variable but the settings of [`AWS_PUBLIC`].
pub fn is_secret(name: &str, value: &str) -> bool {
    if NEVER_SECRET.contains(&name) {
        return false;
    }
    if url_user_info(name, value).is_some() {
        return true;
    }
    if name.starts_with("AWS_") || name.starts_with("ECR_") {
        return !(AWS_PUBLIC.contains(&name) || name.starts_with(AWS_ENDPOINT_PREFIX));
    }
    let upper = name.to_ascii_uppercase();
    [
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "CREDENTIAL",
        "_KEY",
    ]
    .iter()
    .any(|word| upper.contains(word))
}

/// The user info (`user:password`) of a URL value (`scheme://user:password@host...`), as
/// written. A proxy variable may also be `user:password@host:port` without a scheme, as curl
/// and Go read it; other variables need the scheme (a path may hold an `@`).
fn url_user_info<'a>(name: &str, value: &'a str) -> Option<&'a str> {
    let rest = match value.split_once("://") {
        Some((_, rest)) => rest,
        None if name.to_ascii_uppercase().ends_with("_PROXY") => value,
        None => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .map(|(info, _)| info)
        .filter(|info| !info.is_empty())
}

/// `value` without its URL user info: what of a proxy URL with a password may be kept.
fn without_user_info(name: &str, value: &str) -> String {
    match url_user_info(name, value) {
        Some(info) => value.replacen(&format!("{info}@"), "", 1),
        None => value.to_string(),
    }
}

/// A set of environment variables, restricted to the relevant ones.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CallerEnv {
    vars: BTreeMap<String, String>,
    /// Who asked (read from the socket's peer at submission): the files this environment
    /// names are opened only when that user could open them.
    caller: Option<Caller>,
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
        CallerEnv { vars, caller: None }
    }

    /// The relevant variables of this process (the CLI's shell, or the daemon's own
    /// environment for callers that have no job).
    pub fn from_process() -> Self {
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// This environment with `name` set to `value`, or unset with `None`: what an option of
    /// the caller's own tool says instead (docker's `--host` for `DOCKER_HOST`).
    pub fn with_var(mut self, name: &str, value: Option<&str>) -> CallerEnv {
        match value {
            Some(v) if is_relevant(name) => {
                self.vars.insert(name.to_string(), v.to_string());
            }
            _ => {
                self.vars.remove(name);
            }
        }
        self
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

    /// The variables whose values may be stored and shown. A URL value with user info is kept
    /// without it (the proxy, not its password): after a daemon restart the job goes on with
    /// what it has, and only a refusal makes it wait for the secret again.
    pub fn public(&self) -> CallerEnv {
        let vars = self
            .vars
            .iter()
            .filter_map(|(k, v)| {
                if !is_secret(k, v) {
                    Some((k.clone(), v.clone()))
                } else if url_user_info(k, v).is_some() && !is_secret(k, &without_user_info(k, v)) {
                    Some((k.clone(), without_user_info(k, v)))
                } else {
                    None
                }
            })
            .collect();
        CallerEnv {
            vars,
            caller: self.caller.clone(),
        }
    }

    /// The variables whose values live in memory only.
    pub fn secrets(&self) -> CallerEnv {
        self.filtered(is_secret)
    }

    /// Whether any variable is secret.
    pub fn has_secrets(&self) -> bool {
        self.vars.iter().any(|(k, v)| is_secret(k, v))
    }

    /// What must be searched for and blanked out of any text stored or shown for the job
    /// that runs with these variables: every secret value, and the user info of URL values
    /// (whole, the password alone, and percent-decoded, as messages may quote any of them).
    pub fn redactor(&self) -> Redactor {
        let mut needles = Vec::new();
        for (k, v) in self.vars.iter().filter(|(k, v)| is_secret(k, v)) {
            let info = url_user_info(k, v);
            let mut forms = vec![v.clone()];
            if let Some(info) = info {
                forms.push(info.to_string());
                if let Some((_, password)) = info.split_once(':') {
                    forms.push(password.to_string());
                    forms.push(percent_decoded(password));
                }
            }
            for form in forms {
                // Debug formatting (`{:?}`) escapes quotes and backslashes.
                let escaped = form.escape_debug().to_string();
                needles.push((k.clone(), form));
                needles.push((k.clone(), escaped));
            }
        }
        Redactor::new(needles)
    }

    fn filtered(&self, keep: impl Fn(&str, &str) -> bool) -> CallerEnv {
        let vars = self
            .vars
            .iter()
            .filter(|(k, v)| keep(k, v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        CallerEnv {
            vars,
            caller: self.caller.clone(),
        }
    }

    /// This set with `other`'s variables added over it; the caller stays this set's (`other`'s
    /// where this one has none).
    pub fn merged(&self, other: &CallerEnv) -> CallerEnv {
        let mut vars = self.vars.clone();
        vars.extend(other.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        CallerEnv {
            vars,
            caller: self.caller.clone().or_else(|| other.caller.clone()),
        }
    }

    /// This environment as `caller`'s: what it names is opened only where they could.
    pub fn with_caller(mut self, caller: Option<Caller>) -> CallerEnv {
        self.caller = caller;
        self
    }

    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    /// Whether the caller may `want` the file at `path` (Ok without a known caller: the
    /// environment is this process's own). The daemon runs as the caller's uid but may hold
    /// groups the caller's shell does not (added later, or dropped with `sg`/`newgrp`).
    pub fn check_access(&self, path: &std::path::Path, want: Access) -> Result<(), String> {
        match &self.caller {
            Some(caller) => caller.check(path, want),
            None => Ok(()),
        }
    }
}

/// Names only, with secret values hidden: a `CallerEnv` may be logged by accident.
impl fmt::Debug for CallerEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.vars {
            if is_secret(k, v) {
                map.entry(k, &"<secret>");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

/// What the caller wants to do with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Read and write: a Unix socket to connect to.
    ReadWrite,
    Execute,
}

/// The user a job acts for: uid, primary gid and supplementary groups of the process that
/// submitted it, as the kernel reported them for the socket's peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub groups: Vec<u32>,
}

impl Caller {
    /// The peer's identity; its supplementary groups from `/proc/PID/status` where there is
    /// one (Linux), else only its primary group.
    pub fn of_peer(uid: u32, gid: u32, pid: Option<i32>) -> Caller {
        let groups = pid.map(supplementary_groups).unwrap_or_default();
        Caller { uid, gid, groups }
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// The kernel's permission check for this user: every directory on the way searchable,
    /// then the file's owner, group or other bits (ACLs are not read); root may read and
    /// write anything, and execute what has any execute bit.
    pub fn check(&self, path: &std::path::Path, want: Access) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let mut on_the_way = Vec::new();
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            on_the_way.push(d);
            dir = d.parent();
        }
        for d in on_the_way.into_iter().rev() {
            if let Ok(meta) = std::fs::metadata(d) {
                self.allowed(meta.uid(), meta.gid(), meta.mode(), 0o1)
                    .map_err(|_| self.refusal(d, &meta, "search the directory"))?;
            }
        }
        let Ok(meta) = std::fs::metadata(path) else {
            // Missing: the open itself will say so.
            return Ok(());
        };
        let (bits, what) = match want {
            Access::Read => (0o4, "read"),
            Access::ReadWrite => (0o6, "read and write"),
            Access::Execute => (0o1, "execute"),
        };
        self.allowed(meta.uid(), meta.gid(), meta.mode(), bits)
            .map_err(|_| self.refusal(path, &meta, what))
    }

    fn allowed(&self, uid: u32, gid: u32, mode: u32, bits: u32) -> Result<(), ()> {
        if self.uid == 0 {
            let any_exec = mode & 0o111 != 0 || mode & 0o170000 == 0o040000;
            return if bits & 0o1 == 0 || any_exec {
                Ok(())
            } else {
                Err(())
            };
        }
        let granted = if self.uid == uid {
            (mode >> 6) & 0o7
        } else if self.in_group(gid) {
            (mode >> 3) & 0o7
        } else {
            mode & 0o7
        };
        if granted & bits == bits {
            Ok(())
        } else {
            Err(())
        }
    }

    fn refusal(&self, path: &std::path::Path, meta: &std::fs::Metadata, what: &str) -> String {
        use std::os::unix::fs::MetadataExt;
        let mut groups = vec![self.gid];
        groups.extend(self.groups.iter().filter(|g| **g != self.gid));
        let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
        format!(
            "the shell that asked for this push (uid {}, groups {}) may not {what} {} (owner {}:{}, mode {:o}), and hoistd does not use its own access for a caller: fix the permissions, or push from a shell whose groups allow it (log in again after joining a group)",
            self.uid,
            groups.join(","),
            path.display(),
            meta.uid(),
            meta.gid(),
            meta.mode() & 0o7777
        )
    }
}

/// The `Groups:` line of `/proc/PID/status`; empty where it cannot be read.
#[cfg(target_os = "linux")]
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Elsewhere (macOS) the peer's supplementary groups are not read: only its primary group
/// counts, which can only refuse more, never open more.
#[cfg(not(target_os = "linux"))]
fn supplementary_groups(_pid: i32) -> Vec<u32> {
    Vec::new()
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Blanks secret values out of text: each occurrence becomes `<NAME redacted>`. Built from a
/// job's environment ([`CallerEnv::redactor`]); whatever a job stores or shows (its reason, its
/// events, the daemon's log) passes through one, so a credential helper that echoes a key or a
/// proxy error that quotes its URL cannot carry the secret to disk.
#[derive(Clone, Default)]
pub struct Redactor {
    /// (variable name, text to find), longest text first so a value is blanked before a part
    /// of it.
    needles: Vec<(String, String)>,
}

impl Redactor {
    fn new(mut needles: Vec<(String, String)>) -> Redactor {
        needles.retain(|(_, text)| text.chars().count() >= REDACT_CHARS_MIN);
        needles.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Redactor { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret value replaced by `<NAME redacted>`.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.needles.iter().any(|(_, n)| text.contains(n.as_str())) {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for (name, needle) in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), &format!("<{name} redacted>"));
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

/// Names only: a redactor holds the very values it hides.
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.needles.iter().map(|(name, _)| name))
            .finish()
    }
}

/// The secrets of every job the daemon holds, by job: what its log writer blanks out of every
/// line, whichever thread or library wrote it. The scheduler, which owns the secrets, is the
/// only writer; one set per process, because the log is one per process.
#[derive(Default)]
pub struct SecretSet {
    by_job: std::sync::RwLock<BTreeMap<String, Redactor>>,
    all: std::sync::RwLock<Redactor>,
}

impl SecretSet {
    /// The process's set.
    pub fn global() -> &'static SecretSet {
        static SET: std::sync::OnceLock<SecretSet> = std::sync::OnceLock::new();
        SET.get_or_init(SecretSet::default)
    }

    /// Holds (or, with an empty redactor, forgets) the secrets of job `key`.
    pub fn set(&self, key: &str, redactor: Redactor) {
        let mut by_job = self.by_job.write().unwrap_or_else(|e| e.into_inner());
        if redactor.is_empty() {
            by_job.remove(key);
        } else {
            by_job.insert(key.to_string(), redactor);
        }
        let all = Redactor::new(by_job.values().flat_map(|r| r.needles.clone()).collect());
        *self.all.write().unwrap_or_else(|e| e.into_inner()) = all;
    }

    /// `text` with every secret held, of every job, blanked out.
    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        self.all
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .redact(text)
    }
}

/// A log writer that blanks every held secret ([`SecretSet::global`]) out of what it writes;
/// the daemon's log goes through it.
pub struct RedactingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over whole lines; a line cut between two writes could only
        // hide a secret that straddles the cut, which a log line of ours does not do.
        let text = String::from_utf8_lossy(buf);
        match SecretSet::global().redact(&text) {
            std::borrow::Cow::Borrowed(_) => self.0.write(buf),
            std::borrow::Cow::Owned(redacted) => {
                self.0.write_all(redacted.as_bytes())?;
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
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
    fn a_shells_settings_are_public_and_only_credentials_are_secret() {
        let env = CallerEnv::from_vars([
            ("NO_PROXY", "127.0.0.1,localhost,.corp"),
            ("no_proxy", "u:p@weird"),
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            ("http_proxy", "proxy.corp:3128"),
            ("AWS_PROFILE", "dev"),
            ("AWS_CONFIG_FILE", "/home/me/.aws/config"),
            ("AWS_ENDPOINT_URL_ECR", "https://api.ecr.example"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("DOCKER_CONFIG", "/home/me@corp/.docker"),
        ]);
        assert!(!env.has_secrets(), "{env:?}");
        assert_eq!(env.public(), env);
        for (name, value) in [
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "x"),
            ("AWS_SOMETHING_NEW", "x"),
            ("ECR_LOGIN", "x"),
            ("AWS_ENDPOINT_URL", "https://u:p@endpoint.example"),
            ("HTTPS_PROXY", "u:p@proxy:3128"),
        ] {
            assert!(is_secret(name, value), "{name}={value} is secret");
        }
    }

    #[test]
    fn a_proxy_with_a_password_keeps_its_url_without_it() {
        let env = CallerEnv::from_vars([
            ("HTTPS_PROXY", "http://alice:pa%40ss@proxy:3128/"),
            ("AWS_ENDPOINT_URL", "https://u:verysecret@endpoint.example"),
        ]);
        let public = env.public();
        assert_eq!(public.get("HTTPS_PROXY"), Some("http://proxy:3128/"));
        assert_eq!(
            public.get("AWS_ENDPOINT_URL"),
            Some("https://endpoint.example")
        );
        assert_eq!(
            public.merged(&env.secrets()).get("HTTPS_PROXY"),
            env.get("HTTPS_PROXY")
        );
    }

    #[test]
    fn the_redactor_blanks_values_passwords_and_their_escaped_forms() {
        let env = CallerEnv::from_vars([
            ("AWS_SECRET_ACCESS_KEY", "wJalr/K7MDENG\\"),
            ("AWS_SESSION_TOKEN", "abc"),
            ("HTTPS_PROXY", "http://alice:pa%40ss@proxy:3128"),
            ("AWS_REGION", "eu-west-1"),
        ]);
        let r = env.redactor();
        let text = "helper: + export K=wJalr/K7MDENG\\ and \"wJalr/K7MDENG\\\\\" via alice:pa%40ss, pa@ss, abc, eu-west-1";
        let out = r.redact(text);
        assert!(!out.contains("wJalr"), "{out}");
        assert!(!out.contains("pa%40ss") && !out.contains("pa@ss"), "{out}");
        assert!(out.contains("<AWS_SECRET_ACCESS_KEY redacted>"), "{out}");
        assert!(out.contains("<HTTPS_PROXY redacted>"), "{out}");
        // Too short to search for without blanking ordinary words.
        assert!(out.contains("abc") && out.contains("eu-west-1"), "{out}");
        assert!(!format!("{r:?}").contains("wJalr"));
    }

    #[test]
    fn the_log_writer_blanks_held_secrets_until_they_are_forgotten() {
        use std::io::Write as _;
        let env = CallerEnv::from_vars([("AWS_SESSION_TOKEN", "tok-tok-tok-1234")]);
        let set = SecretSet::global();
        set.set("job-log-writer-test", env.redactor());
        let mut out = RedactingWriter(Vec::new());
        out.write_all(b"failed with tok-tok-tok-1234\n").unwrap();
        set.set("job-log-writer-test", Redactor::default());
        out.write_all(b"later tok-tok-tok-1234\n").unwrap();
        let text = String::from_utf8(out.0).unwrap();
        assert_eq!(
            text,
            "failed with <AWS_SESSION_TOKEN redacted>\nlater tok-tok-tok-1234\n"
        );
    }

    #[test]
    fn a_caller_may_open_only_what_its_user_and_groups_allow() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, "{}").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let (owner, group) = {
            use std::os::unix::fs::MetadataExt;
            (meta.uid(), meta.gid())
        };
        let mode = |m: u32| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(m));
        let stranger = Caller {
            uid: owner + 4242,
            gid: group + 4242,
            groups: vec![],
        };
        let member = Caller {
            groups: vec![group],
            ..stranger.clone()
        };
        mode(0o640).unwrap();
        let e = stranger.check(&file, Access::Read).unwrap_err();
        assert!(e.contains("may not read") && e.contains("mode 640"), "{e}");
        member.check(&file, Access::Read).unwrap();
        member.check(&file, Access::ReadWrite).unwrap_err();
        mode(0o644).unwrap();
        stranger.check(&file, Access::Read).unwrap();
        stranger.check(&file, Access::Execute).unwrap_err();
        let root = Caller {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        mode(0o600).unwrap();
        root.check(&file, Access::ReadWrite).unwrap();
        root.check(&file, Access::Execute).unwrap_err();
        mode(0o755).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = stranger.check(&file, Access::Read).unwrap_err();
        assert!(e.contains("search the directory"), "{e}");
        let env = CallerEnv::from_vars([("HOME", "/h")]);
        env.check_access(&file, Access::Read).unwrap();
        let env = env.with_caller(Some(stranger));
        env.check_access(&file, Access::Read).unwrap_err();
        assert!(env.public().caller().is_some());
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
