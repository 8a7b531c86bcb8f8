//! The `supervisor` command line: arguments, validated configuration,
//! human-facing reports, exit codes.

mod args;
mod config;
mod ctl;
mod exit;
mod logging;
mod merge;
mod page;
mod queue;
mod rebuild;
mod report;
mod shard;
mod size;
mod stats_file;
mod stdin;
mod top;

pub use args::{Args, Cli};
pub use exit::ExitCode;

use clap::Parser;

/// Runs the `supervisor` binary; returns its exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let args = cli.run;
    logging::init(args.verbose, args.quiet);
    // Each worker holds a pipe pair and the supervisor forwards their
    // output: a big fleet outgrows a soft limit of 1024. (The workers
    // raise their own.)
    multiloop_supervisor::limits::raise_descriptor_limit();
    match cli.command {
        None => {}
        Some(args::Subcommand::Merge(merge)) => return merge::main(&merge),
        Some(args::Subcommand::Report(report)) => return rebuild::main(&report),
        Some(args::Subcommand::Ctl(_) | args::Subcommand::Top(_) | args::Subcommand::Queue(_)) => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("supervisor: cannot start the runtime: {error}");
            return ExitCode::Usage.into();
        }
    };
    let main = async move {
        match &cli.command {
            Some(args::Subcommand::Ctl(ctl)) => return ctl::main(ctl).await,
            Some(args::Subcommand::Top(top)) => return top::main(top).await,
            Some(args::Subcommand::Queue(queue)) => return queue::main(queue).await,
            _ => {}
        }
        let config = match config::build(&args).await {
            Ok(config) => config,
            Err(error) => {
                eprintln!("supervisor: {error:#}");
                return ExitCode::Usage.into();
            }
        };
        let meta = page::RunMeta::here(&config.dispatch.kind, config.dispatch.workers);
        let files = report::Files {
            stats: args.stats.clone(),
            report: args.report.clone(),
        };
        let mut observer =
            match report::Reporter::new(args.quiet, args.verbose > 0, args.progress, files, meta) {
                Ok(observer) => observer,
                Err(error) => {
                    eprintln!("supervisor: {error:#}");
                    return ExitCode::Usage.into();
                }
            };
        if let Some(set_total) = observer.total_setter() {
            config::count_total(&config, set_total);
        }
        match multiloop_supervisor::run(config, &mut observer).await {
            Ok(report) => {
                observer.finish(&report);
                if !args.quiet {
                    report::print_summary(&report);
                } else if let multiloop_supervisor::RunOutcome::Fatal(message)
                | multiloop_supervisor::RunOutcome::GaveUp(message) = &report.outcome
                {
                    // --quiet drops the summary, not the reason for exit 2 or 3.
                    eprintln!("supervisor: {message}");
                }
                ExitCode::of(&report.outcome).into()
            }
            Err(error) => {
                eprintln!("supervisor: {error:#}");
                ExitCode::Usage.into()
            }
        }
    };
    // On a runtime thread, not this one: `block_on` polls its future on the
    // calling thread, so every event the engine got (a worker's result, a
    // line of input) woke this thread from the runtime's, and every command
    // woke a runtime thread back. Spawned, the engine runs where its events
    // are polled: one call's round trip through a warm pool took ~30 µs
    // less (issue #25), with batch throughput unchanged.
    match runtime.block_on(runtime.spawn(main)) {
        Ok(status) => status,
        // A bug: it panics here as it would have where it happened.
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => {
            eprintln!("supervisor: the run's task was cancelled: {error}");
            ExitCode::Usage.into()
        }
    }
}
