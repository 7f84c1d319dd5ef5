//! `hoist completions SHELL` and `hoist man`: shell completion scripts and man pages made from
//! the same clap definitions as the parser, so they always match the installed binary (no
//! build step, nothing generated to keep in the repository).

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory;

use super::Cli;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "hoist", &mut out);
    out.flush().context("cannot write the completion script")
}

/// Writes hoist(1) to stdout, or with `out_dir` hoist.1 and one hoist-COMMAND.1 per
/// subcommand into that directory (for packagers: `hoist man --out-dir /usr/share/man/man1`).
pub fn man(out_dir: Option<&Path>) -> anyhow::Result<()> {
    let cmd = Cli::command();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(cmd, dir))
                .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
            println!("{}", dir.display());
            Ok(())
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .and_then(|()| out.flush())
                .context("cannot write the man page")
        }
    }
}
