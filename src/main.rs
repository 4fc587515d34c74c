#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use ses_connector::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    cli::run(Cli::parse()).await
}
