//! `wardgate` binary: parse the command line and hand over to [`wardgate::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = wardgate::cli::Cli::parse();
    match wardgate::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if !matches!(err, wardgate::cli::CliError::Quiet(_)) {
                eprintln!("{err}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}
