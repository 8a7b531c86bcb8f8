//! The `supervisor` binary: parse, run, exit with the run's status.

fn main() {
    std::process::exit(multiloop_cli::main());
}
