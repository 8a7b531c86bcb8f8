//! The default worker binary: every built-in task kind.

fn main() {
    multiloop_tasks::builtin_worker().run()
}
