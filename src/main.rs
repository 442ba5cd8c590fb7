//! The `sluice` binary: parse the command line, load the config, start logging,
//! hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::Config;
use sluice::Role;

/// mimalloc instead of glibc's malloc: a fifth of the ingress CPU went to
/// glibc's malloc/free under load, and its per-thread arenas let RSS grow.
/// Built with `no_thp` (Cargo.toml): mimalloc does not ask for transparent
/// huge pages, which kept 35–45 MB more resident under Amplitude's batches
/// (BENCHMARKS.md, "Transparent huge pages and the purge delay").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (mimalloc.h); the
/// crate exports no constant for it. The test below checks it is the option
/// whose default is 1000 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before returning it to the OS: 50 ms
/// instead of its 1 s, which held 16–24 MB more at the peak under Amplitude's
/// batches with no change in PostHog's rate (BENCHMARKS.md, "Transparent huge
/// pages and the purge delay"). `MIMALLOC_PURGE_DELAY` still overrides it.
const PURGE_DELAY_MS: std::os::raw::c_long = 50;

/// glibc's malloc still serves librdkafka (C code). Under load its broker
/// thread builds and frees a ~256 KiB produce buffer per partition batch;
/// with glibc's defaults the heap top was trimmed and grown again, and
/// buffers that size could come from `mmap`: 3,600 page faults a second on
/// that thread, each with its page zeroing and, on return, TLB shootdowns
/// that interrupt the other threads too. Blocks up to 4 MiB from the heap,
/// and up to 32 MiB of free heap top kept: ~5 faults a second, and PostHog
/// ingress to Kafka 6–14 % faster in four interleaved pairs (BENCHMARKS.md,
/// "Page faults in librdkafka's broker thread"; the load harness reports the
/// server's faults per second). `MALLOC_TRIM_THRESHOLD_`,
/// `MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES` in the environment leave
/// glibc's settings to them.
const GLIBC_MMAP_THRESHOLD: std::os::raw::c_int = 4 << 20;
const GLIBC_TRIM_THRESHOLD: std::os::raw::c_int = 32 << 20;

/// The `mallopt` settings to make, given which environment variables are
/// set: none when the operator tunes glibc's malloc themselves.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_malloc_options(is_set: impl Fn(&str) -> bool) -> Option<[(std::os::raw::c_int, std::os::raw::c_int); 2]> {
    let operator_tuned = ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"].into_iter().any(is_set);
    (!operator_tuned)
        .then_some([(libc::M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD), (libc::M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD)])
}

fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one numeric option before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, value) in glibc_malloc_options(|v| std::env::var_os(v).is_some()).into_iter().flatten() {
        // SAFETY: mallopt only sets a number in glibc's malloc state; called
        // before any other thread exists.
        unsafe { libc::mallopt(param, value) };
    }
}

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
    /// Print the Brevo requests that envelopes (JSON lines on stdin) map to,
    /// without sending anything.
    Map(ConfigArg),
    /// Inspect or re-drive the dead-letter topic.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Run the Brevo API simulator (tests and local development).
    BrevoSim(BrevoSimArgs),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Print pending dead letters as JSON lines (changes nothing).
    List(ConfigArg),
    /// Republish pending dead letters' envelopes to the events topic (after
    /// a mapping fix) and mark the letters done.
    Replay(ConfigArg),
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
    tune_allocator();
    let cli = Cli::parse();
    let (arg, role) = match &cli.command {
        Command::BrevoSim(args) => return brevo_sim(args),
        Command::Serve(a) => (a, Some(Role::Serve)),
        Command::Ingress(a) => (a, Some(Role::Ingress)),
        Command::Forward(a) => (a, Some(Role::Forward)),
        Command::CheckConfig(a) => (a, None),
        Command::Map(a) => return forward_tool(a, ForwardTool::Map),
        Command::Dlq { command: DlqCommand::List(a) } => return forward_tool(a, ForwardTool::DlqList),
        Command::Dlq { command: DlqCommand::Replay(a) } => return forward_tool(a, ForwardTool::DlqReplay),
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

enum ForwardTool {
    Map,
    DlqList,
    DlqReplay,
}

/// `sluice map` and `sluice dlq ...`: output on stdout, diagnostics on stderr.
fn forward_tool(arg: &ConfigArg, tool: ForwardTool) -> ExitCode {
    let config = match load(arg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let result = match tool {
        ForwardTool::Map => sluice::forward::preview::run(&config, std::io::stdin().lock(), &mut out).map(|s| {
            format!(
                "{} envelopes: {} requests, {} skipped, {} dead letters, {} unreadable lines",
                s.envelopes, s.requests, s.skipped, s.dead_letters, s.errors
            )
        }),
        ForwardTool::DlqList | ForwardTool::DlqReplay => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("sluice: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async {
                let bus = sluice::bus::Bus::open(&config.bus).await?;
                let kind = config.bus.kind;
                match tool {
                    ForwardTool::DlqList => sluice::forward::dlq::list(&bus, kind, &mut out)
                        .await
                        .map(|n| format!("{n} dead letters pending")),
                    _ => sluice::forward::dlq::replay(&bus, kind, &mut out)
                        .await
                        .map(|r| format!("{} replayed, {} without an envelope", r.replayed, r.unreplayable)),
                }
            })
        }
    };
    match result {
        Ok(summary) => {
            eprintln!("sluice: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, not two: both read the same process-wide option.
    #[test]
    fn tune_allocator_sets_mimalloc_s_purge_delay() {
        assert!(std::env::var_os("MIMALLOC_PURGE_DELAY").is_none(), "run without MIMALLOC_PURGE_DELAY");
        // Option 15 is the only one whose default is 1000 (ms); an upgrade
        // that renumbers the options makes this read another value.
        // SAFETY: reads one option.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "option {MI_OPTION_PURGE_DELAY} is not mimalloc's purge delay");
        tune_allocator();
        // SAFETY: as above.
        let tuned = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(tuned, PURGE_DELAY_MS);
    }

    /// glibc has no getter for these settings (and its 2.36 `mallopt`
    /// accepts any threshold), so this checks the decision: Sluice's two
    /// thresholds, unless the operator's variables tune malloc. Their effect
    /// is measured instead: the load harness's page faults per second.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_thresholds_are_set_unless_the_environment_tunes_malloc() {
        assert_eq!(
            glibc_malloc_options(|_| false),
            Some([(libc::M_MMAP_THRESHOLD, 4 << 20), (libc::M_TRIM_THRESHOLD, 32 << 20)]),
            "nothing set: Sluice's thresholds"
        );
        for var in ["MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES"] {
            assert_eq!(glibc_malloc_options(|v| v == var), None, "{var} set: glibc's settings are the operator's");
        }
    }
}
