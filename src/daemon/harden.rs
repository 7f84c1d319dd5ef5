//! What hoistd does to itself before it holds anyone's secrets: no core dumps, and on Linux
//! not dumpable at all, so neither a crash nor another process of the same user (ptrace,
//! `/proc/PID/mem`) can read the credentials and secret variables it keeps in memory.

use rustix::process::{Resource, Rlimit, setrlimit};

/// Turns off core dumps of this process; an error says which step failed.
pub fn no_core_dumps() -> std::io::Result<()> {
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    #[cfg(target_os = "linux")]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
    Ok(())
}
