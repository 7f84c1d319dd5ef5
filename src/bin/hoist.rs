//! `hoist`: the CLI. Parses arguments and calls `cli::run`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hoist::cli::Cli::parse();
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
