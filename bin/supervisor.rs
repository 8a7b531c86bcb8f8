//! The `supervisor` binary: parse, run, exit with the run's status.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(multiloop_cli::main());
}
