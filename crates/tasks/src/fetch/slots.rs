//! The run-wide per-host slots: byte-range locks (Linux open file
//! description locks) on one file that every worker of a run opens.
//!
//! Why locks on a file rather than a counter in shared memory: the kernel
//! drops a process's locks when it dies, SIGKILL included, so a worker
//! killed while it holds connections can never leak a slot, and there is
//! nothing to repair or expire. Why not split the limit between workers by
//! index: with `--per-host 2` and 16 workers, 14 workers would own no slot
//! for a host whose URLs the dispatcher still sends them.
//!
//! Layout: each host gets a range of offsets keyed by a 40-bit hash of
//! `host:port` (two hosts sharing a hash only share a limit: too polite,
//! never too rude). Offset 0 of the range is "someone is waiting" (waiters
//! hold a shared lock on it), offset 1 serialises the per-host delay, and
//! slot `k` is offset `2 + k`. The file stays empty: locks may lie past
//! its end.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// Most slots per host (`--per-host` above this is refused).
pub(crate) const MAX_SLOTS: usize = (1 << 20) - 2;

const WANT: i64 = 0;
const DELAY: i64 = 1;

/// The lock file, opened by this worker (locks belong to this open file
/// description, so they never conflict with each other inside it).
#[derive(Debug)]
pub(crate) struct SlotFile {
    file: File,
}

/// Where a host's locks live in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostRange(i64);

impl HostRange {
    pub(crate) fn of(host: &str) -> Self {
        let hash = blake3::hash(host.as_bytes());
        let bytes: [u8; 8] = hash.as_bytes()[..8].try_into().expect("8 bytes");
        let key = u64::from_le_bytes(bytes) & ((1 << 40) - 1);
        HostRange((key as i64) << 20)
    }

    fn slot(self, k: usize) -> i64 {
        self.0 + 2 + k as i64
    }
}

impl SlotFile {
    /// The file shared by the workers of the supervisor `supervisor_pid`
    /// (our parent): in `$XDG_RUNTIME_DIR` (private to the user) or
    /// `/dev/shm`, named with the uid and the pid. One planted by another
    /// user, or a symlink, is refused.
    pub(crate) fn shared(supervisor_pid: u32) -> Result<Self, String> {
        // SAFETY: geteuid cannot fail and has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let dir = runtime_dir();
        remove_stale(&dir, uid);
        let path = dir.join(format!("multiloop-{uid}-{supervisor_pid}.hosts"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("per-host lock file {}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("per-host lock file {}: {e}", path.display()))?;
        if meta.uid() != uid || !meta.is_file() {
            return Err(format!(
                "per-host lock file {} is not a regular file of uid {uid}; remove it",
                path.display()
            ));
        }
        Ok(Self { file })
    }

    /// A file no other process sees: limits hold inside this process only
    /// (a `Fetcher` used as a library, unit tests).
    pub(crate) fn private() -> Result<Self, String> {
        let name = c"multiloop-hosts";
        // SAFETY: a valid C string and flags; the result is checked.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "per-host locks: memfd_create: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: a new descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        Ok(Self { file })
    }

    /// Takes slot `k` of `host` if no other worker holds it.
    pub(crate) fn try_slot(&self, host: HostRange, k: usize) -> bool {
        self.lock(libc::F_WRLCK, host.slot(k))
    }

    pub(crate) fn release_slot(&self, host: HostRange, k: usize) {
        self.lock(libc::F_UNLCK, host.slot(k));
    }

    /// Says (or stops saying) that this worker waits for a slot of `host`.
    pub(crate) fn set_waiting(&self, host: HostRange, waiting: bool) {
        let kind = if waiting {
            libc::F_RDLCK
        } else {
            libc::F_UNLCK
        };
        self.lock(kind, host.0 + WANT);
    }

    /// True when another worker waits for a slot of `host`.
    pub(crate) fn others_wait(&self, host: HostRange) -> bool {
        let mut probe = flock(libc::F_WRLCK, host.0 + WANT);
        // SAFETY: a valid fd and a pointer to a live `flock`.
        let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) };
        rc == 0 && probe.l_type != libc::F_UNLCK as libc::c_short
    }

    /// Takes the delay lock of `host`, which spaces request starts.
    pub(crate) fn try_delay(&self, host: HostRange) -> bool {
        self.lock(libc::F_WRLCK, host.0 + DELAY)
    }

    pub(crate) fn release_delay(&self, host: HostRange) {
        self.lock(libc::F_UNLCK, host.0 + DELAY);
    }

    fn lock(&self, kind: libc::c_int, offset: i64) -> bool {
        let lock = flock(kind, offset);
        // SAFETY: a valid fd and a pointer to a live `flock`; F_OFD_SETLK
        // never blocks.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &lock) == 0 }
    }
}

fn flock(kind: libc::c_int, offset: i64) -> libc::flock {
    // SAFETY: `flock` is plain data; all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset;
    lock.l_len = 1;
    lock
}

fn runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if dir.is_dir() {
            return dir;
        }
    }
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

/// Removes lock files of supervisors that are gone (the files are empty;
/// this only keeps the directory tidy).
fn remove_stale(dir: &std::path::Path, uid: u32) {
    let prefix = format!("multiloop-{uid}-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".hosts"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_held_by_one_description_is_refused_to_another() {
        let dir = tempdir();
        let path = dir.join("locks");
        let open = || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap();
            SlotFile { file }
        };
        let (a, b) = (open(), open());
        let host = HostRange::of("example.com:443");
        assert!(a.try_slot(host, 0));
        assert!(
            a.try_slot(host, 0),
            "a description never conflicts with itself"
        );
        assert!(!b.try_slot(host, 0));
        assert!(b.try_slot(host, 1));
        assert!(!a.others_wait(host));
        b.set_waiting(host, true);
        assert!(a.others_wait(host));
        b.set_waiting(host, false);
        assert!(!a.others_wait(host));
        a.release_slot(host, 0);
        assert!(b.try_slot(host, 0));
        // Closing the file (as a killed process does) frees its slots.
        drop(b);
        assert!(a.try_slot(host, 0) && a.try_slot(host, 1));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn hosts_get_distinct_ranges() {
        assert_ne!(HostRange::of("a:80"), HostRange::of("b:80"));
        assert_eq!(HostRange::of("a:80"), HostRange::of("a:80"));
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "multiloop-slots-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
