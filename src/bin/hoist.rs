//! `hoist`: the CLI (also the Docker CLI plugin `docker-hoist`). Parses arguments and calls
//! `cli::run`.

use std::process::ExitCode;

use clap::Parser;
use hoist::cli::plugin;

fn main() -> ExitCode {
    // Also the Docker CLI plugin `docker-hoist` (`docker hoist push ...`).
    let cli = match plugin::invocation(std::env::args_os().collect()) {
        Ok(plugin::Invocation::Metadata) => {
            println!("{}", plugin::metadata());
            return ExitCode::SUCCESS;
        }
        Ok(plugin::Invocation::Hoist { args, docker }) => {
            let mut cli = hoist::cli::Cli::parse_from(args);
            cli.docker = docker;
            cli
        }
        Err(e) => {
            eprintln!("hoist: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoist: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hoist::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hoist: {e:#}");
            ExitCode::FAILURE
        }
    }
}
