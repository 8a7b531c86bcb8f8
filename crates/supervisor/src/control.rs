//! The control socket: every running supervisor listens on a Unix socket
//! (mode 0600, in a 0700 directory, peers of another uid refused) for
//! `supervisor ctl` and `supervisor top`. One JSON request per line, one
//! JSON answer per line.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::dispatcher::{Progress, WorkerRow};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// What a client may ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum ControlRequest {
    Status,
    Restart { worker: usize },
    Kill { worker: usize },
    Scale { workers: usize },
    Drain,
}

/// The answer to a request, as the server sends it and `ctl` and `top`
/// read it. On the wire: `{"ok":true}`, `{"ok":false,"error":"..."}`, or
/// `{"ok":true,"pid":..,"progress":{..},"workers":[..]}` for a status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "WireAnswer", try_from = "WireAnswer")]
pub enum ControlAnswer {
    Ok,
    Status(StatusAnswer),
    Refused(String),
}

/// What `status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusAnswer {
    pub pid: u32,
    pub progress: Progress,
    pub workers: Vec<WorkerRow>,
}

/// The flat JSON shape of [`ControlAnswer`].
#[derive(Serialize, Deserialize)]
struct WireAnswer {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workers: Option<Vec<WorkerRow>>,
}

impl From<ControlAnswer> for WireAnswer {
    fn from(answer: ControlAnswer) -> Self {
        let mut wire = WireAnswer {
            ok: true,
            error: None,
            pid: None,
            progress: None,
            workers: None,
        };
        match answer {
            ControlAnswer::Ok => {}
            ControlAnswer::Status(status) => {
                wire.pid = Some(status.pid);
                wire.progress = Some(status.progress);
                wire.workers = Some(status.workers);
            }
            ControlAnswer::Refused(error) => {
                wire.ok = false;
                wire.error = Some(error);
            }
        }
        wire
    }
}

impl TryFrom<WireAnswer> for ControlAnswer {
    type Error = String;

    fn try_from(wire: WireAnswer) -> Result<Self, String> {
        match wire {
            WireAnswer {
                ok: false, error, ..
            } => Ok(ControlAnswer::Refused(
                error.unwrap_or_else(|| "request refused".into()),
            )),
            WireAnswer {
                pid: Some(pid),
                progress: Some(progress),
                workers: Some(workers),
                ..
            } => Ok(ControlAnswer::Status(StatusAnswer {
                pid,
                progress,
                workers,
            })),
            WireAnswer {
                pid: None,
                progress: None,
                workers: None,
                ..
            } => Ok(ControlAnswer::Ok),
            _ => Err("a status answer without pid, progress or workers".into()),
        }
    }
}

/// A request on its way to the engine, with where the answer goes.
#[derive(Debug)]
pub struct ControlCall {
    pub request: ControlRequest,
    pub reply: oneshot::Sender<ControlAnswer>,
}

pub use crate::socket_dir::{running_supervisors, socket_dir, socket_path};

/// A bound control socket; the file is removed when this is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    /// Binds this process's socket, cleaning up sockets of dead supervisors.
    pub fn bind() -> io::Result<(Self, UnixListener)> {
        let dir = crate::socket_dir::prepare()?;
        let path = socket_path(&dir, std::process::id());
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok((Self { path }, listener))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Accepts clients until the listener fails; each request goes to `calls`.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<ControlCall>) {
    let uid = nix::unistd::getuid().as_raw();
    while let Ok((stream, _)) = listener.accept().await {
        let calls = calls.clone();
        tokio::spawn(async move {
            let _ = serve_client(stream, uid, calls).await;
        });
    }
}

async fn serve_client(
    stream: UnixStream,
    uid: u32,
    calls: mpsc::Sender<ControlCall>,
) -> io::Result<()> {
    let peer = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    if !peer_allowed(peer.uid(), uid) {
        let answer = ControlAnswer::Refused(format!(
            "refused: peer uid {} is not this supervisor's uid {uid}",
            peer.uid()
        ));
        return write_answer(&mut write, &answer).await;
    }
    let mut lines = BufReader::new(read.take(MAX_REQUEST)).lines();
    while let Some(line) = lines.next_line().await? {
        let answer = match serde_json::from_str::<ControlRequest>(&line) {
            Err(error) => ControlAnswer::Refused(format!("bad request {line:?}: {error}")),
            Ok(request) => {
                let (reply, answer) = oneshot::channel();
                if calls.send(ControlCall { request, reply }).await.is_err() {
                    return Ok(()); // The run is over.
                }
                answer
                    .await
                    .unwrap_or_else(|_| ControlAnswer::Refused("the run ended".into()))
            }
        };
        write_answer(&mut write, &answer).await?;
    }
    Ok(())
}

/// Only the supervisor's own user may steer it (root may steer anyone's).
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

async fn write_answer(
    write: &mut (impl AsyncWriteExt + Unpin),
    answer: &ControlAnswer,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(answer)?;
    line.push(b'\n');
    write.write_all(&line).await
}

/// Sends one request to the supervisor listening at `path`.
pub async fn call(path: &Path, request: &ControlRequest) -> io::Result<ControlAnswer> {
    let stream = crate::socket_dir::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    if answer.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the supervisor closed the connection",
        ));
    }
    serde_json::from_str(&answer).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let request: ControlRequest =
            serde_json::from_str(r#"{"cmd":"restart","worker":1}"#).unwrap();
        assert_eq!(request, ControlRequest::Restart { worker: 1 });
        assert_eq!(
            serde_json::to_string(&ControlRequest::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        assert!(serde_json::from_str::<ControlRequest>(r#"{"cmd":"explode"}"#).is_err());
    }

    #[test]
    fn answers_keep_their_json_shape() {
        let ok = serde_json::to_string(&ControlAnswer::Ok).unwrap();
        assert_eq!(ok, r#"{"ok":true}"#);
        let refused = serde_json::to_string(&ControlAnswer::Refused("no".into())).unwrap();
        assert_eq!(refused, r#"{"ok":false,"error":"no"}"#);
        let status = ControlAnswer::Status(StatusAnswer {
            pid: 7,
            progress: Progress::default(),
            workers: Vec::new(),
        });
        let text = serde_json::to_string(&status).unwrap();
        assert!(
            text.starts_with(r#"{"ok":true,"pid":7,"progress":{"#),
            "{text}"
        );
        for answer in [
            ControlAnswer::Ok,
            ControlAnswer::Refused("no".into()),
            status,
        ] {
            let back: ControlAnswer =
                serde_json::from_str(&serde_json::to_string(&answer).unwrap()).unwrap();
            assert_eq!(back, answer);
        }
    }

    #[test]
    fn only_the_same_uid_or_root_may_connect() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(!peer_allowed(1001, 1000));
    }
}
