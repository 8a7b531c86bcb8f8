//! The directory of control sockets and the checks that make it safe to
//! use. Without `XDG_RUNTIME_DIR` it lives in the shared temp dir, where
//! another user can create the name first (as a directory of their own, or
//! a symlink to one): the server then refuses to listen there rather than
//! adopting it, and a client refuses to list or connect through it. A
//! client also checks who serves the socket (`SO_PEERCRED`) before it
//! trusts an answer.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The directory of control sockets: `$XDG_RUNTIME_DIR/multiloop`, or
/// `multiloop-UID` in the temp dir. The uid, not `$USER`: it needs no
/// environment and no passwd entry, and cannot be spoofed.
pub fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("multiloop"),
        None => std::env::temp_dir().join(format!("multiloop-{}", nix::unistd::getuid())),
    }
}

/// The socket of the supervisor with this pid.
pub fn socket_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.sock"))
}

/// Creates the socket directory (mode 0700) if it is missing, and checks
/// it: an unsafe directory is an error, never chmod-ed or cleaned up.
pub fn prepare() -> io::Result<PathBuf> {
    let dir = socket_dir();
    // Not recursive: the parent (the temp dir, or XDG_RUNTIME_DIR) must
    // exist already; creating it would give it our umask's mode.
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(annotate(&dir, e)),
    }
    check(&dir)?;
    remove_stale(&dir);
    Ok(dir)
}

/// The socket directory, for a client: checked, or an error saying why it
/// is not trusted. A missing directory is `NotFound`.
pub fn checked() -> io::Result<PathBuf> {
    let dir = socket_dir();
    check(&dir)?;
    Ok(dir)
}

/// Checks that `dir` is a real directory (not a symlink), owned by this
/// user, with no access for group or others. The mode and owner come from
/// the directory opened with `O_NOFOLLOW`, so a swap after the check
/// cannot pass one directory's answers off as another's.
pub fn check(dir: &Path) -> io::Result<()> {
    let link = std::fs::symlink_metadata(dir).map_err(|e| annotate(dir, e))?;
    if link.file_type().is_symlink() {
        return Err(unsafe_dir(dir, "is a symlink"));
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR) => unsafe_dir(dir, "is not a directory"),
            Some(libc::ELOOP) => unsafe_dir(dir, "is a symlink"),
            _ => annotate(dir, e),
        })?;
    let metadata = opened.metadata()?;
    let uid = nix::unistd::getuid().as_raw();
    if metadata.uid() != uid {
        return Err(unsafe_dir(
            dir,
            &format!(
                "belongs to uid {}, not to this user (uid {uid})",
                metadata.uid()
            ),
        ));
    }
    let mode = metadata.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(unsafe_dir(
            dir,
            &format!("has mode {mode:03o}; others could plant sockets in it (`chmod 700` it)"),
        ));
    }
    Ok(())
}

fn unsafe_dir(dir: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "control socket directory {} {why}: not trusted (set XDG_RUNTIME_DIR to a directory of your own to use another)",
            dir.display()
        ),
    )
}

fn annotate(dir: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", dir.display()))
}

/// Supervisors with a socket in `dir` (checked by the caller), by pid;
/// sockets of supervisors that are gone are removed on the way.
pub fn running_supervisors(dir: &Path) -> Vec<(u32, PathBuf)> {
    remove_stale(dir);
    let mut found: Vec<(u32, PathBuf)> = sockets(dir)
        .into_iter()
        .filter(|(pid, _)| alive(*pid))
        .collect();
    found.sort();
    found
}

/// Removes the sockets in `dir` whose supervisor is gone (killed with
/// SIGKILL, it could not remove its own). Only sockets named `PID.sock`
/// are touched, nothing else that may be in the directory.
pub fn remove_stale(dir: &Path) {
    for (pid, path) in sockets(dir) {
        if !alive(pid) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The `PID.sock` sockets in `dir`.
fn sockets(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_socket()))
        .filter_map(|entry| {
            let path = entry.path();
            let pid = path
                .file_name()?
                .to_str()?
                .strip_suffix(".sock")?
                .parse()
                .ok()?;
            Some((pid, path))
        })
        .collect()
}

/// Whether a process with this pid exists (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
    }
}

/// Connects to a control socket and checks that it is served by this
/// user: a socket of another uid is no supervisor of ours, whatever it
/// answers. (Root may reach any supervisor's socket by path, but its own
/// client talks only to supervisors run as root.)
pub async fn connect(path: &Path) -> io::Result<tokio::net::UnixStream> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let server = stream.peer_cred()?.uid();
    let uid = nix::unistd::getuid().as_raw();
    if server != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is served by uid {server}, not by this user (uid {uid}): not trusted",
                path.display()
            ),
        ));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private_dir(parent: &Path) -> PathBuf {
        let dir = parent.join("multiloop");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        dir
    }

    #[test]
    fn a_private_directory_passes() {
        let parent = tempfile::tempdir().unwrap();
        check(&private_dir(parent.path())).unwrap();
    }

    #[test]
    fn a_symlink_is_refused_even_to_our_own_directory() {
        let parent = tempfile::tempdir().unwrap();
        let real = private_dir(parent.path());
        let link = parent.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let error = check(&link).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert!(error.to_string().contains("is a symlink"), "{error}");
    }

    #[test]
    fn an_open_mode_or_a_file_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        let dir = private_dir(parent.path());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let error = check(&dir).unwrap_err().to_string();
        assert!(error.contains("has mode 755"), "{error}");
        let file = parent.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let error = check(&file).unwrap_err().to_string();
        assert!(error.contains("is not a directory"), "{error}");
        let missing = check(&parent.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn another_owner_is_refused() {
        if !nix::unistd::getuid().is_root() {
            return; // Only root can give a directory away; the rest is above.
        }
        let parent = tempfile::tempdir().unwrap();
        let dir = private_dir(parent.path());
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let error = check(&dir).unwrap_err().to_string();
        assert!(error.contains("belongs to uid 65534"), "{error}");
    }

    #[test]
    fn only_sockets_of_dead_pids_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        let dir = private_dir(parent.path());
        let ours = socket_path(&dir, std::process::id());
        let _listener = std::os::unix::net::UnixListener::bind(&ours).unwrap();
        // Pid numbers never reach 2^31 on Linux (pid_max is at most 2^22).
        let dead = socket_path(&dir, 2_000_000_000);
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let not_a_socket = dir.join("2000000001.sock");
        std::fs::write(&not_a_socket, b"").unwrap();
        assert_eq!(
            running_supervisors(&dir),
            vec![(std::process::id(), ours.clone())]
        );
        assert!(!dead.exists(), "the dead supervisor's socket is gone");
        assert!(not_a_socket.exists(), "a file that is no socket stays");
    }
}
