//! The `sluice` binary: parse the command line, load the config, start logging,
//! hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::Config;
use sluice::Role;

/// Sluice relays PostHog, Amplitude and signed webhook events into Brevo.
#[derive(Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// YAML configuration file; without it every default applies (embedded
    /// bus in ./sluice-data, 127.0.0.1:8080, open mode, Brevo dry run).
    #[arg(long, short, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingress and forwarder in one process (the default for one machine).
    Serve(ConfigArg),
    /// Run only the HTTP ingress: verify, normalize, publish to the bus.
    Ingress(ConfigArg),
    /// Run only the forwarder: consume the bus and deliver to Brevo.
    Forward(ConfigArg),
    /// Validate a config and print the effective one, secrets redacted.
    CheckConfig(ConfigArg),
    /// Run the Brevo API simulator (tests and local development).
    BrevoSim(BrevoSimArgs),
}

#[derive(clap::Args)]
struct BrevoSimArgs {
    /// Address to listen on; the API root is http://ADDR/v3.
    #[arg(long, default_value = "127.0.0.1:8025")]
    listen: std::net::SocketAddr,
    /// The only `api-key` header value accepted.
    #[arg(long, env = "BREVO_SIM_API_KEY")]
    api_key: String,
    /// Rate-limit preset: general, professional or enterprise.
    #[arg(long, default_value = "general")]
    plan: sluice::sim::Plan,
    /// Disable rate limiting altogether.
    #[arg(long)]
    unlimited: bool,
}

fn brevo_sim(args: &BrevoSimArgs) -> ExitCode {
    sluice::telemetry::init(&sluice::config::LogConfig::default());
    let mut cfg = sluice::sim::SimConfig::new(args.api_key.clone()).listen(args.listen).plan(args.plan);
    if args.unlimited {
        cfg = cfg.limits(sluice::sim::RateLimits::unlimited());
    }
    let result =
        tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(sluice::sim::run(cfg)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice brevo-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(arg: &ConfigArg) -> Result<Config, String> {
    match &arg.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string()),
        None => Config::from_yaml("", "<defaults>", &|n| std::env::var(n).ok()).map_err(|e| e.to_string()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (arg, role) = match &cli.command {
        Command::BrevoSim(args) => return brevo_sim(args),
        Command::Serve(a) => (a, Some(Role::Serve)),
        Command::Ingress(a) => (a, Some(Role::Ingress)),
        Command::Forward(a) => (a, Some(Role::Forward)),
        Command::CheckConfig(a) => (a, None),
    };
    let config = match load(arg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(role) = role else {
        print!("{}", config.redacted_yaml());
        return ExitCode::SUCCESS;
    };
    sluice::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sluice::run(config, role)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "sluice failed");
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
