//! Starting worker processes: fork+exec from a thread that lives as long as
//! the supervisor, pipes on fds 3 and 4, own process group, death signal.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc as std_mpsc;

use multiloop_protocol::{WorkerArgv, RESULT_FD, TASK_FD};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::pipe2;
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::oneshot;

/// How to start one worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub program: PathBuf,
    /// Arguments before the standard worker options (`-m multiloop.worker
    /// SPEC` for a Python worker).
    pub args: Vec<OsString>,
    pub kind: Option<String>,
    pub index: usize,
    pub workers: usize,
    pub concurrency: usize,
    pub task_timeout_ms: u64,
    pub heartbeat_ms: u64,
    pub max_frame: usize,
    pub settings: Vec<(String, String)>,
}

impl WorkerSpec {
    /// The worker options this spec stands for, in the protocol's one
    /// definition of the worker's command line.
    fn argv(&self, supervisor_pid: u32) -> WorkerArgv {
        WorkerArgv {
            kind: self.kind.clone(),
            index: self.index,
            workers: self.workers,
            supervisor_pid: Some(supervisor_pid),
            concurrency: self.concurrency,
            task_timeout_ms: self.task_timeout_ms,
            heartbeat_ms: self.heartbeat_ms,
            max_frame: self.max_frame,
            settings: self.settings.clone(),
        }
    }
}

/// A started worker and the parent's ends of its pipes.
#[derive(Debug)]
pub struct WorkerProcess {
    pub pid: u32,
    pub child: Child,
    pub tasks: pipe::Sender,
    pub results: pipe::Receiver,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

type Job = Box<dyn FnOnce() + Send>;

/// Forks workers from one dedicated thread. `PR_SET_PDEATHSIG` fires when
/// the thread that forked the child exits, so that thread must live as
/// long as the supervisor: never a `spawn_blocking` thread.
#[derive(Debug, Clone)]
pub struct Spawner {
    jobs: std_mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawner thread; it lives until the process exits.
    pub fn start(runtime: tokio::runtime::Handle) -> io::Result<Self> {
        let (jobs, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("multiloop-spawner".into())
            .spawn(move || {
                let _entered = runtime.enter();
                for job in rx {
                    job();
                }
                // Keep the thread (and so the workers' death signal) alive
                // until the process itself ends.
                loop {
                    std::thread::park();
                }
            })?;
        Ok(Self { jobs })
    }

    /// Starts one worker process.
    pub async fn spawn(&self, spec: WorkerSpec) -> io::Result<WorkerProcess> {
        let (task_read, task_write) = pipe_for_child()?;
        let (result_read, result_write) = pipe_for_child()?;
        let (child_task_fd, child_result_fd) = (high_fd(task_read)?, high_fd(result_write)?);
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let spawned = command(&spec, &child_task_fd, &child_result_fd).spawn();
            // The child has its copies now; ours must go at once, or a dead
            // worker would never produce end-of-file on our side.
            drop((child_task_fd, child_result_fd));
            let _ = reply.send(spawned);
        });
        self.jobs
            .send(job)
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        let mut child = answer
            .await
            .map_err(|_| io::Error::other("the spawner thread dropped a request"))??;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("worker exited at once"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        Ok(WorkerProcess {
            pid,
            child,
            tasks: pipe::Sender::from_owned_fd(task_write)?,
            results: pipe::Receiver::from_owned_fd(result_read)?,
            stdout,
            stderr,
        })
    }
}

fn pipe_for_child() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(pipe2(OFlag::O_CLOEXEC)?)
}

/// Moves a descriptor to 10 or above, so that placing the two child ends on
/// fds 3 and 4 can never overwrite one with the other.
fn high_fd(fd: OwnedFd) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let raw = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(10))?;
    // SAFETY: fcntl just returned this new descriptor and nothing owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn command(spec: &WorkerSpec, task_fd: &OwnedFd, result_fd: &OwnedFd) -> Command {
    let supervisor = std::process::id();
    let mut command = Command::new(&spec.program);
    if spec.args.is_empty() {
        command.arg0(format!(
            "multiloop worker {}/{} (supervisor {supervisor})",
            spec.index, spec.workers
        ));
    }
    // A command with arguments is an interpreter (python, node): it finds
    // its installation from argv[0], so that keeps its real name.
    command
        .args(&spec.args)
        .args(spec.argv(supervisor).to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: Ctrl-C at the terminal reaches only the
        // supervisor, which coordinates the shutdown.
        .process_group(0);
    let (task_fd, result_fd) = (task_fd.as_raw_fd(), result_fd.as_raw_fd());
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (dup2, prctl, getppid, _exit); it does not
    // allocate or take locks.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(task_fd, TASK_FD) < 0 || libc::dup2(result_fd, RESULT_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The supervisor may have died before prctl: then nobody would
            // ever send the death signal.
            if libc::getppid() as u32 != supervisor {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command
}
