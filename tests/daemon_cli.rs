//! The `hoist` binary against a daemon: push (follow, --detach, --json), watch, ls, controls,
//! Ctrl-C detaching, autostart, and the errors people see.
use crate::daemon_support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon_support::*;
use hoist::api::{self, JobState};
use hoist::cli::client::Client;

fn last_line(b: &[u8]) -> String {
    text(b).lines().last().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_follows_to_the_digest_and_detach_prints_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(4, 5)));
    let push = [
        "push",
        "--chunk-size",
        "8MiB",
        "docker-archive:/a.tar",
        "127.0.0.1:5000/a:1",
    ];

    let out = hoist(&daemon.socket, &push);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(last_line(&out.stdout), manifest_digest().to_string());
    let err = text(&out.stderr);
    assert!(err.contains("submitted") && err.contains(": done"), "{err}");

    let mut detach = push.to_vec();
    detach.insert(1, "--detach");
    let out = hoist(&daemon.socket, &detach);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id: api::JobId = last_line(&out.stdout)
        .parse()
        .expect("last line is a job ID");
    let job = daemon.client().job(&id).await.unwrap();
    assert_eq!(job.spec.chunk_size_bytes, 8 << 20);

    let out = hoist(&daemon.socket, &["watch", id.as_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(last_line(&out.stdout), manifest_digest().to_string());

    // --json: every stdout line is an event; the last one ends the job done.
    let mut json = push.to_vec();
    json.insert(1, "--json");
    let out = hoist(&daemon.socket, &json);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<api::Event> = text(&out.stdout)
        .lines()
        .map(|l| api::decode("event", l.as_bytes()).unwrap())
        .collect();
    assert!(matches!(
        events.last().unwrap().kind,
        api::EventKind::State {
            state: JobState::Done,
            ..
        }
    ));

    let out = hoist(&daemon.socket, &["ls", "--json"]);
    assert!(out.status.success());
    let list: api::JobList = api::decode("job list", &out.stdout).unwrap();
    assert_eq!(list.jobs.len(), 3);
    let out = hoist(&daemon.socket, &["ls"]);
    let table = text(&out.stdout);
    assert!(
        table.starts_with("JOB") && table.contains(id.as_str()) && table.contains("100%"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(500, 20)));
    let out = hoist(&daemon.socket, &["push", "--detach", "a.tar", "r/a:1"]);
    let id = last_line(&out.stdout);
    let client = daemon.client();
    let job_id: api::JobId = id.parse().unwrap();
    wait_state(&client, &job_id, JobState::Uploading).await;

    let out = hoist(&daemon.socket, &["pause", &id]);
    assert_eq!(last_line(&out.stdout), format!("{id} paused"));
    let out = hoist(&daemon.socket, &["rm", &id]);
    assert!(
        out.status.success(),
        "a paused job can be removed: {}",
        text(&out.stderr)
    );
    let out = hoist(&daemon.socket, &["resume", &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("no job {id}: list jobs with `hoist ls`")),
        "{}",
        text(&out.stderr)
    );

    let out = hoist(&daemon.socket, &["push", "--detach", "b.tar", "r/b:1"]);
    let id = last_line(&out.stdout);
    let out = hoist(&daemon.socket, &["cancel", &id]);
    assert_eq!(last_line(&out.stdout), format!("{id} cancelled"));
    let out = hoist(&daemon.socket, &["resume", &id]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.starts_with("hoist: job ")
            && err.contains("is cancelled: only a paused job can be resumed"),
        "{err}"
    );
    // watch of a job that did not end done exits non-zero.
    let out = hoist(&daemon.socket, &["watch", &id]);
    assert!(!out.status.success());
    let out = hoist(&daemon.socket, &["watch", "nonsense"]);
    assert!(
        text(&out.stderr).contains("is not a job ID"),
        "{}",
        text(&out.stderr)
    );
    let out = hoist(&daemon.socket, &["push", "--chunk-size", "1MiB", "a", "b"]);
    assert!(text(&out.stderr).contains("5 MiB"), "{}", text(&out.stderr));
    // inspect and verify need no daemon; their errors name what is wrong.
    let out = hoist(&daemon.socket, &["inspect", "no-such.tar"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no-such.tar"),
        "{}",
        text(&out.stderr)
    );
    let out = hoist(&daemon.socket, &["verify", "127.0.0.1:1/r/a:1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("hoist: 127.0.0.1:1/r/a:1 fails verification"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_detaches_and_the_job_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(300, 20)));
    let child = hoist_command()
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["push", "a.tar", "r/a:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = daemon.client();
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    let id = loop {
        let jobs = client.jobs().await.unwrap();
        if let Some(j) = jobs.iter().find(|j| uploaded(j) >= 3 * CHUNK) {
            break j.id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the push never started uploading"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "job {id} continues in the daemon: hoist watch {id}"
        )),
        "{}",
        text(&out.stderr)
    );
    let before = uploaded(&client.job(&id).await.unwrap());
    wait_job(&client, &id, "still uploading", |j| uploaded(j) > before).await;
}

#[test]
fn without_a_daemon_the_error_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let out = hoist(&socket, &["push", "--no-autostart", "a.tar", "r/a:1"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(
        err.lines().next().unwrap(),
        format!(
            "hoist: no daemon answers on {}: start one with hoistd, or drop --no-autostart",
            socket.display()
        )
    );
    let out = hoist(&socket, &["ls"]);
    assert!(text(&out.stderr).contains("no daemon answers on"));
    assert!(text(&out.stderr).contains("start one with hoistd"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_starts_a_daemon_when_none_answers() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/hoist.sock");
    let state = dir.path().join("state");
    let out = hoist_command()
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state)
        // An invalid repository name: the job plans, then fails at once without a network.
        .args([
            "push",
            &sample_source(dir.path()),
            "127.0.0.1:1/r/Not-Valid:1",
        ])
        // The tests run as root: root needs no flag on the default owner-only socket.
        .env_remove("HOIST_ALLOW_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let client = Client::new(&socket);
    let health = client.health().await.expect("the started daemon answers");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(health.pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    // The job fails on the target, and the CLI says so.
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("starting") && err.contains("Not-Valid"),
        "{err}"
    );
    assert!(state.join("hoistd.log").is_file());
    assert!(state.join("hoist.db").is_file());
}

/// A daemon started by a shell's `hoist push` keeps none of that shell's credentials, proxies
/// or AWS variables in its own environment (they reach it with each job, for that job), only
/// where its socket and state live and its own settings; and it can leave no core dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autostarted_daemon_gets_a_cleared_environment_and_no_core_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let shell = crate::common::shell_env();
    let mut env: Vec<(&str, &str)> = shell
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend([("HOIST_KEEP_JOBS", "7d"), ("EDITOR", "vi")]);
    let source = sample_source(dir.path());
    // Port 1 refuses: the job waits, and the daemon stays up to be looked at.
    let args = [source.as_str(), "127.0.0.1:1/r/a:1", "--detach"];
    let out = push_autostarting(&hoist_bin(), dir.path(), &args, &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let client = Client::new(dir.path().join("run/hoist.sock"));
    let pid = client
        .health()
        .await
        .expect("the started daemon answers")
        .pid;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for var in &vars {
        let name = var.split('=').next().unwrap_or_default();
        assert!(
            [
                "HOME",
                "PATH",
                "XDG_RUNTIME_DIR",
                "XDG_STATE_HOME",
                "TMPDIR"
            ]
            .contains(&name)
                || name.starts_with("HOIST_"),
            "the autostarted hoistd holds {var}"
        );
    }
    assert!(vars.iter().any(|v| v == "HOIST_KEEP_JOBS=7d"), "{vars:?}");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_default();
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "{limits}"
    );
}

/// `hoist limit` shows and changes the daemon-wide upload limit; `hoist push --deadline
/// --bandwidth` reach the job's options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_shows_and_changes_the_bandwidth_and_push_passes_deadline_and_bandwidth() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(4, 5)));
    let out = hoist(&daemon.socket, &["limit"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(last_line(&out.stdout), "upload limit: none");
    let out = hoist(&daemon.socket, &["limit", "10MiB/s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        last_line(&out.stdout).contains("10485760 bytes/s"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        daemon.client().bandwidth().await.unwrap().bytes_per_s,
        Some(10 << 20)
    );
    let out = hoist(&daemon.socket, &["limit", "fast"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not a rate"),
        "{}",
        text(&out.stderr)
    );
    let out = hoist(&daemon.socket, &["limit", "off"]);
    assert!(out.status.success());
    assert_eq!(daemon.client().bandwidth().await.unwrap().bytes_per_s, None);

    let out = hoist(
        &daemon.socket,
        &[
            "push",
            "--detach",
            "--deadline",
            "2h",
            "--bandwidth",
            "5MiB/s",
            "docker-archive:/a.tar",
            "127.0.0.1:5000/a:1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id: api::JobId = last_line(&out.stdout).parse().unwrap();
    let job = daemon.client().job(&id).await.unwrap();
    assert_eq!(job.spec.options.bandwidth_bytes_per_s, Some(5 << 20));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let deadline = job.spec.options.deadline_unix_s.expect("a deadline");
    assert!(
        (now + 7100..=now + 7200).contains(&deadline),
        "{deadline} vs {now}"
    );
}

/// `hoist limit --job JOB [RATE|off]` shows and changes one job's own limit, in words or as
/// JSON; plain `hoist limit --json` shows the daemon-wide one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_job_shows_and_changes_a_jobs_own_limit() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough to stay running through the test.
    let daemon = TestDaemon::start(dir.path(), Arc::new(Scripted::new(2000, 20)));
    let client = daemon.client();
    let mut req = submit_request("docker-archive:/a.tar");
    req.options.bandwidth_bytes_per_s = Some(5 << 20);
    let id = client.submit(&req).await.unwrap().id;
    let out = hoist(&daemon.socket, &["limit", "--job", id.as_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        last_line(&out.stdout),
        format!("job {id} upload limit: 5242880 bytes/s (5.0 MiB/s), under the daemon-wide limit")
    );
    let out = hoist(&daemon.socket, &["limit", "--job", id.as_str(), "2MiB/s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        last_line(&out.stdout).contains("2097152 bytes/s"),
        "{}",
        text(&out.stdout)
    );
    let job = client.job(&id).await.unwrap();
    assert_eq!(job.spec.options.bandwidth_bytes_per_s, Some(2 << 20));
    assert!(!job.state.is_final(), "{}", job.state);
    // The daemon-wide limit is untouched.
    assert_eq!(client.bandwidth().await.unwrap().bytes_per_s, None);
    let out = hoist(
        &daemon.socket,
        &["limit", "--job", id.as_str(), "--json", "off"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(last_line(&out.stdout), r#"{"bytes_per_s":null}"#);
    assert_eq!(
        client
            .job(&id)
            .await
            .unwrap()
            .spec
            .options
            .bandwidth_bytes_per_s,
        None
    );
    let out = hoist(&daemon.socket, &["limit", "--job", id.as_str()]);
    assert_eq!(
        last_line(&out.stdout),
        format!("job {id} upload limit: none (the daemon-wide limit applies)")
    );
    let out = hoist(&daemon.socket, &["limit", "--json", "3MiB/s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(last_line(&out.stdout), r#"{"bytes_per_s":3145728}"#);

    let unknown = api::JobId::random();
    let out = hoist(
        &daemon.socket,
        &["limit", "--job", unknown.as_str(), "1MiB/s"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no job") && err.lines().count() == 1, "{err}");
}

/// `hoist push` with its own socket and state directory, the daemon started by `hoist_bin`'s
/// autostart, and `env` added to the environment both inherit.
fn push_autostarting(
    hoist_bin: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    Command::new(hoist_bin)
        .envs(crate::common::shell_env())
        .arg("--socket")
        .arg(dir.join("run/hoist.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("push")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("HOIST_ALLOW_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// When the autostarted hoistd exits at start, `hoist` prints hoistd's own reason, not only
/// where its log is; as root, a socket others could reach is such a reason.
#[test]
fn autostart_failure_prints_the_daemons_own_error() {
    let dir = tempfile::tempdir().unwrap();
    // hoistd takes its flags from the environment it inherits: a bad one makes it exit.
    let env = [("HOIST_UPLOADS_MAX", "0")];
    let out = push_autostarting(&hoist_bin(), dir.path(), &["a.tar", "r/a:1"], &env);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "hoist: hoistd exited at start: --uploads-max and --jobs-max must be at least 1 ("
        ) && last.ends_with(&format!(
            "log: {})",
            dir.path().join("state/hoistd.log").display()
        )),
        "{err}"
    );

    if !rustix::process::getuid().is_root() {
        return;
    }
    // Root, on a socket in a directory anyone may write: refused, and hoist says why.
    let open = dir.path().join("open");
    std::fs::create_dir_all(open.join("run")).unwrap();
    let anyone = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(open.join("run"), anyone).unwrap();
    let out = push_autostarting(&hoist_bin(), &open, &["a.tar", "r/a:1"], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("hoist: hoistd exited at start: hoistd refuses to run as root on a socket others could reach: its directory")
            && last.contains("--allow-root"),
        "{err}"
    );
    assert!(
        !open.join("run/hoist.sock").exists(),
        "the refused socket is removed"
    );
}

/// `hoist` and `hoistd` hard-linked (else copied) into `dir`: the same version under another
/// path, so another build identity than the binaries under test.
fn other_build(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (name, from) in [("hoist", hoist_bin()), ("hoistd", hoistd_bin())] {
        let to = dir.join(name);
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    dir.join("hoist")
}

async fn wait_health(
    client: &Client,
    what: &str,
    pred: impl Fn(&api::Health) -> bool,
) -> api::Health {
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        match client.health().await {
            Ok(h) if pred(&h) => return h,
            last if Instant::now() > deadline => panic!("the daemon never {what}: {last:?}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Version skew: a daemon autostarted by another build of hoist (same version, another
/// binary) gets a message with the command that restarts it while a job runs, and is
/// restarted on this build by the next push once it is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autostarted_daemon_of_another_build_is_restarted_when_idle() {
    // Under the target directory, so the hard links stay on one file system.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let old_hoist = other_build(&dir.path().join("old"));
    let source = sample_source(dir.path());
    // Port 1 refuses: the job waits out the "outage" as a running job.
    let waiting = [source.as_str(), "127.0.0.1:1/r/a:1", "--detach"];
    let out = push_autostarting(&old_hoist, dir.path(), &waiting, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let old_job: api::JobId = last_line(&out.stdout).parse().unwrap();
    let client = Client::new(dir.path().join("run/hoist.sock"));
    let old = wait_health(&client, "ran the job", |h| h.jobs_running == 1).await;
    assert!(old.autostarted, "{old:?}");

    // Busy: no restart, and the message names the command.
    let out = push_autostarting(&hoist_bin(), dir.path(), &waiting, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "hoistd (pid {}) runs another build of version",
            old.pid
        )) && err.contains(&format!("run `kill -TERM {}`", old.pid)),
        "{err}"
    );
    let second: api::JobId = last_line(&out.stdout).parse().unwrap();
    assert_eq!(client.health().await.unwrap().pid, old.pid);

    // Idle: restarted on this build by the next push.
    for id in [&old_job, &second] {
        client.control(id, "cancel").await.unwrap();
    }
    wait_health(&client, "went idle", |h| h.jobs_running == 0).await;
    let out = push_autostarting(
        &hoist_bin(),
        dir.path(),
        &["a.tar", "r/a:1", "--detach"],
        &[],
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "hoist: restarting hoistd (pid {}, another build",
            old.pid
        )),
        "{err}"
    );
    let new = client.health().await.expect("the restarted daemon answers");
    assert_ne!(new.pid, old.pid);
    assert!(new.autostarted);
    assert_eq!(new.build, hoist::paths::binary_identity(&hoistd_bin()));
    // The old one is gone for good.
    let old_pid = rustix::process::Pid::from_raw(old.pid as i32).unwrap();
    let gone = Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    while rustix::process::test_kill_process(old_pid).is_ok() && Instant::now() < gone {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(new.pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
}

/// `hoist completions` and `hoist man` come from the parser's own definitions: every
/// subcommand is in them, the bash script loads, the man pages render.
#[test]
fn completions_and_man_pages_list_every_subcommand() {
    use clap::CommandFactory;
    let names: Vec<String> = hoist::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    assert!(names.len() > 10, "{names:?}");
    let socket = std::path::Path::new("/nonexistent/hoist.sock");
    let out = hoist(socket, &["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    for name in &names {
        assert!(
            script.contains(&format!("hoist,{name})")),
            "bash completion lacks {name}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hoist.bash"), &script).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(dir.path().join("hoist.bash"))
        .output()
        .unwrap();
    assert!(check.status.success(), "bash -n: {}", text(&check.stderr));
    for shell in ["zsh", "fish"] {
        let out = hoist(socket, &["completions", shell]);
        assert!(
            out.status.success() && text(&out.stdout).contains("push"),
            "{shell}"
        );
    }

    let out = hoist(socket, &["man"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(page.contains(".TH hoist 1"), "{page}");
    for name in &names {
        assert!(
            // roff escapes every hyphen, those of a name too
            page.contains(&format!("hoist\\-{}(1)", name.replace('-', "\\-"))),
            "hoist(1) lacks {name}"
        );
    }
    let pages = dir.path().join("man1");
    let out = hoist(socket, &["man", "--out-dir", pages.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in names.iter().filter(|n| *n != "help") {
        let file = pages.join(format!("hoist-{name}.1"));
        let rendered = render_man(&file);
        assert!(
            rendered.contains(&format!("hoist-{name}")),
            "{}: {rendered}",
            file.display()
        );
    }
    let rendered = render_man(&pages.join("hoist.1"));
    assert!(
        rendered.contains("SUBCOMMANDS") && rendered.contains("hoist-push(1)"),
        "{rendered}"
    );
}

/// The man page `file` rendered as text by groff (warnings are failures).
fn render_man(file: &std::path::Path) -> String {
    let out = Command::new("groff")
        // Plain ASCII: no escapes, no overstriking.
        .args(["-man", "-Tascii", "-ww", "-P-cbou"])
        .arg(file)
        .output()
        .expect("groff is installed (package groff-base, scripts/install-deps.sh)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff {}: {}",
        file.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}
