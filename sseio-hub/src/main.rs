//! `sseio-hub`: the standalone SSE-IO hub. See the crate's README for the configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sseio_hub::{Config, Hub, init_tracing};

/// A standalone SSE-IO server: browsers subscribe over Server-Sent Events, your backend
/// publishes over HTTP.
#[derive(Debug, Parser)]
#[command(name = "sseio-hub", version, about)]
struct Cli {
    /// The TOML configuration file. Keys can be overridden with environment variables:
    /// SSEIO_HUB__LIMITS__MAX_CONNECTIONS=10000 sets limits.max_connections.
    #[arg(short, long, env = "SSEIO_HUB_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Print the effective configuration (file, environment and defaults; secrets redacted)
    /// and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the configuration (templates, key files, URLs) without connecting or listening,
    /// and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match Config::load(&cli.config) {
        Ok(loaded) => loaded,
        Err(error) => return fail(&error),
    };
    if cli.print_config {
        return match loaded.config.to_toml_redacted() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        };
    }
    if cli.check {
        return match Hub::check(&loaded) {
            Ok(()) => {
                println!("{}: the configuration is valid", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        };
    }
    init_tracing(&loaded.config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    runtime.block_on(async {
        let hub = match Hub::build(&loaded).await {
            Ok(hub) => hub,
            Err(error) => return fail(&error),
        };
        match hub.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&format!("cannot listen on {}: {error}", hub.listen_addr())),
        }
    })
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sseio-hub: error: {error}");
    ExitCode::FAILURE
}
