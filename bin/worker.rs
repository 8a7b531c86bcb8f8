//! The default worker binary: every built-in task kind.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    multiloop_tasks::builtin_worker().run()
}
