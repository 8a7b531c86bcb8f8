//! The Redis side of a queue: every command the supervisor sends, and the
//! parsing of every reply. Nothing else talks to Redis; the one script
//! that acknowledges tasks and pushes what they added is built and read
//! in `ack_push`, and sent from here.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Value};

use super::ack_push::{AckReport, AckScript, Acked};
use super::url::{QueueUrl, GROUP};

/// What `meta.format` says in a queue made by `supervisor queue push`.
pub const FORMAT: &str = "multiloop-queue/1";

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis cannot be reached or stopped answering; worth a retry.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("queue {url} does not exist; push tasks to it first (`supervisor queue push`)")]
    Missing { url: String },
    #[error("{key} at {url} is not a multiloop queue ({why})")]
    NotOurs {
        url: String,
        key: String,
        why: String,
    },
    #[error("queue {url} holds another input ({theirs}); push this one to a new queue name")]
    OtherInput { url: String, theirs: String },
    #[error("{url}: {message}")]
    Refused { url: String, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl QueueError {
    /// Whether trying again later may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Unreachable { .. })
    }
}

/// One task line as it comes out of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The entry id is `seq-0`: the input line number for a pushed line;
    /// for an added task a number past the input's last line, which only
    /// names the entry (the task is known by its path).
    pub seq: u64,
    pub line: Vec<u8>,
    /// Times the group handed it out, this delivery included.
    pub deliveries: u64,
    /// An added task's path (`"5.3"`; field `p`).
    pub path: Option<Box<str>>,
    /// An added task that cannot run: why (field `b`); it is recorded
    /// `bad_input` by the node that pulls it.
    pub bad: Option<String>,
}

/// What `queue push` wrote into the meta hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub digest: String,
    pub source: String,
    /// Lines of the input, blank ones included (the last `seq`).
    pub lines: u64,
    /// Non-blank lines: the tasks.
    pub total: u64,
    /// The push finished: no more entries will come.
    pub complete: bool,
    pub ok: u64,
    pub failed: u64,
    pub crashed: u64,
    /// Tasks added by tasks and pushed.
    pub added: u64,
    /// Additions kept out because their key was seen.
    pub kept_seen: u64,
    /// Additions kept out by `--max-tasks`.
    pub kept_max_tasks: u64,
}

/// The queue as `queue status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueStatus {
    pub queue: String,
    pub total: u64,
    pub pushed: u64,
    pub push_complete: bool,
    /// Never handed out yet.
    pub waiting: u64,
    /// Handed out, not acknowledged: per consumer (node).
    pub in_flight: u64,
    pub nodes: Vec<NodeStatus>,
    /// Acknowledged: recorded in some node's output.
    pub done: u64,
    pub ok: u64,
    pub failed: u64,
    /// Recorded as `crashed` (including tasks delivered too often).
    pub dead: u64,
    /// Tasks that tasks added (included in `pushed`).
    pub added: u64,
    /// Additions not pushed: their key was in the seen-set.
    pub kept_seen: u64,
    /// Additions not pushed: past `--max-tasks`.
    pub kept_max_tasks: u64,
    /// Dedupe keys in the seen-set.
    pub seen_keys: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub in_flight: u64,
    /// Since the node last talked to Redis.
    pub idle_ms: u64,
}

/// A connection to one queue.
#[derive(Clone)]
pub struct Store {
    url: QueueUrl,
    conn: ConnectionManager,
    stream: String,
    meta: String,
    seen: String,
    ack_script: AckScript,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

impl Store {
    /// Connects (once: callers retry). The connection reconnects by itself
    /// after Redis comes back; commands in between fail as `Unreachable`.
    pub async fn connect(url: &QueueUrl) -> Result<Self, QueueError> {
        let unreachable = |source| QueueError::Unreachable {
            url: url.to_string(),
            source,
        };
        let info = url.connection_info().map_err(unreachable)?;
        let client = redis::Client::open(info).map_err(unreachable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unreachable)?;
        Ok(Self {
            stream: url.stream_key(),
            meta: url.meta_key(),
            seen: url.seen_key(),
            ack_script: AckScript::new(),
            url: url.clone(),
            conn,
        })
    }

    pub fn url(&self) -> &QueueUrl {
        &self.url
    }

    async fn query(&mut self, cmd: &Cmd) -> Result<Value, QueueError> {
        cmd.query_async::<Value>(&mut self.conn)
            .await
            .map_err(|error| self.error(error))
    }

    fn error(&self, error: redis::RedisError) -> QueueError {
        let url = self.url.to_string();
        if error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error()
            || matches!(
                error.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
            )
        {
            QueueError::Unreachable { url, source: error }
        } else {
            QueueError::Refused {
                url,
                message: error.to_string(),
            }
        }
    }

    // ----- the queue's identity ------------------------------------------

    /// Reads the meta hash; checks that the keys are a queue of ours.
    pub async fn meta(&mut self) -> Result<Option<Meta>, QueueError> {
        let kind = self.query(redis::cmd("TYPE").arg(&self.stream)).await?;
        let kind = text(&kind);
        let fields = self.query(redis::cmd("HGETALL").arg(&self.meta)).await?;
        let fields = Fields::of(&fields);
        let not_ours = |key: &str, why: String| QueueError::NotOurs {
            url: self.url.to_string(),
            key: key.to_string(),
            why,
        };
        match (kind.as_str(), fields.is_empty()) {
            ("none", true) => return Ok(None),
            ("stream", false) | ("none", false) => {}
            ("stream", true) => {
                return Err(not_ours(
                    &self.stream,
                    format!("a stream without our {} hash", self.meta),
                ))
            }
            (other, _) => return Err(not_ours(&self.stream, format!("a {other}, not a stream"))),
        }
        let get = |name: &str| fields.get(name).unwrap_or_default().to_string();
        let number = |name: &str| fields.number(name).unwrap_or(0);
        if get("format") != FORMAT {
            return Err(not_ours(
                &self.meta,
                format!("format {:?}, expected {FORMAT:?}", get("format")),
            ));
        }
        Ok(Some(Meta {
            digest: get("digest"),
            source: get("source"),
            lines: number("lines"),
            total: number("total"),
            complete: get("complete") == "1",
            ok: number("ok"),
            failed: number("failed"),
            crashed: number("crashed"),
            added: number("added"),
            kept_seen: number("kept_seen"),
            kept_max_tasks: number("kept_max_tasks"),
        }))
    }

    /// The queue, or a clear error when there is none.
    pub async fn existing_meta(&mut self) -> Result<Meta, QueueError> {
        match self.meta().await? {
            Some(meta) => Ok(meta),
            None => Err(QueueError::Missing {
                url: self.url.to_string(),
            }),
        }
    }

    // ----- push ------------------------------------------------------------

    /// Describes the input about to be pushed and creates the stream and the
    /// group. Returns the last line already in the stream (a push that
    /// was interrupted continues after it).
    pub async fn begin_push(&mut self, meta: &Meta) -> Result<u64, QueueError> {
        if let Some(theirs) = self.meta().await? {
            if theirs.digest != meta.digest || theirs.lines != meta.lines {
                return Err(QueueError::OtherInput {
                    url: self.url.to_string(),
                    theirs: format!("{} lines of {}", theirs.lines, theirs.source),
                });
            }
        } else {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&self.meta)
                .arg("format")
                .arg(FORMAT)
                .arg("digest")
                .arg(&meta.digest)
                .arg("source")
                .arg(&meta.source)
                .arg("lines")
                .arg(meta.lines)
                .arg("total")
                .arg(meta.total);
            self.query(&cmd).await?;
        }
        let created = self
            .query(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM"),
            )
            .await;
        match created {
            Ok(_) => {}
            Err(QueueError::Refused { message, .. }) if message.contains("BUSYGROUP") => {}
            Err(error) => return Err(error),
        }
        self.last_seq().await
    }

    /// Appends lines. Ids are line numbers, so a line that is already
    /// there (a second pusher, a repeated push) is refused by Redis and
    /// stays single.
    /// `seeds` are the fingerprints of the lines' `--key` values: they
    /// join the seen-set, so that no task adds a seed again.
    pub async fn push(&mut self, lines: &[(u64, &[u8])], seeds: &[u64]) -> Result<u64, QueueError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if !seeds.is_empty() {
            let sadd = pipe.cmd("SADD").arg(&self.seen);
            for seed in seeds {
                sadd.arg(seed.to_le_bytes().as_slice());
            }
            pipe.ignore();
        }
        for (seq, line) in lines {
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("NOMKSTREAM")
                .arg(format!("{seq}-0"))
                .arg("l")
                .arg(*line);
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn)
            .await
            .map_err(|error| self.error(error))?;
        let mut added = 0;
        for reply in replies {
            match reply {
                Value::ServerError(error) => {
                    let message = format!("{error:?}");
                    if !message.contains("equal or smaller") {
                        return Err(QueueError::Refused {
                            url: self.url.to_string(),
                            message,
                        });
                    }
                }
                _ => added += 1,
            }
        }
        Ok(added)
    }

    pub async fn end_push(&mut self) -> Result<(), QueueError> {
        self.query(redis::cmd("HSET").arg(&self.meta).arg("complete").arg(1))
            .await
            .map(drop)
    }

    // ----- consuming -------------------------------------------------------

    /// Entries never handed out before.
    pub async fn read_new(
        &mut self,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>, QueueError> {
        self.read_group(consumer, count, ">").await
    }

    /// This consumer's own pending entries after line `after` (left by an
    /// earlier run under the same name).
    pub async fn read_own(
        &mut self,
        consumer: &str,
        count: usize,
        after: u64,
    ) -> Result<Vec<Entry>, QueueError> {
        let mut entries = self
            .read_group(consumer, count, &format!("{after}-0"))
            .await?;
        // The history read does not count as a new delivery.
        self.fill_deliveries(&mut entries).await?;
        Ok(entries)
    }

    async fn read_group(
        &mut self,
        consumer: &str,
        count: usize,
        from: &str,
    ) -> Result<Vec<Entry>, QueueError> {
        let reply = self
            .query(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(&self.stream)
                    .arg(from),
            )
            .await
            .map_err(|error| self.missing_group(error))?;
        // [[stream, [entries]]] or nil.
        let Value::Array(streams) = reply else {
            return Ok(Vec::new());
        };
        Ok(streams
            .iter()
            .filter_map(|stream| match stream {
                Value::Array(parts) => parts.get(1).map(entries),
                _ => None,
            })
            .flatten()
            .collect())
    }

    fn missing_group(&self, error: QueueError) -> QueueError {
        match error {
            QueueError::Refused { message, .. } if message.contains("NOGROUP") => {
                QueueError::Missing {
                    url: self.url.to_string(),
                }
            }
            other => other,
        }
    }

    /// Takes over entries idle for `min_idle` (their node died or let
    /// them go). Returns the next cursor and the entries with their
    /// delivery counts.
    pub async fn claim(
        &mut self,
        consumer: &str,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<(String, Vec<Entry>), QueueError> {
        let reply = self
            .query(
                redis::cmd("XAUTOCLAIM")
                    .arg(&self.stream)
                    .arg(GROUP)
                    .arg(consumer)
                    .arg(min_idle.as_millis() as u64)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(count),
            )
            .await
            .map_err(|error| self.missing_group(error))?;
        let Value::Array(parts) = reply else {
            return Ok(("0-0".into(), Vec::new()));
        };
        let next = parts.first().map(text).unwrap_or_else(|| "0-0".into());
        let mut claimed = parts.get(1).map(entries).unwrap_or_default();
        self.fill_deliveries(&mut claimed).await?;
        Ok((next, claimed))
    }

    /// Reads each entry's delivery count from the pending list.
    async fn fill_deliveries(&mut self, entries: &mut [Entry]) -> Result<(), QueueError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for entry in entries.iter() {
            let id = format!("{}-0", entry.seq);
            pipe.cmd("XPENDING")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&id)
                .arg(&id)
                .arg(1);
        }
        let replies: Vec<Value> = pipe
            .query_async(&mut self.conn)
            .await
            .map_err(|error| self.error(error))?;
        for (entry, reply) in entries.iter_mut().zip(replies) {
            // [[id, consumer, idle, deliveries]]
            if let Value::Array(rows) = reply {
                if let Some(Value::Array(row)) = rows.first() {
                    entry.deliveries = row.get(3).map_or(1, |v| int(v).max(1));
                }
            }
        }
        Ok(())
    }

    /// Acknowledges recorded tasks, counts their outcomes, and pushes the
    /// tasks they added, in one atomic step (see [`AckScript`]). Answers
    /// `Refused` with [`super::ack_push::NOT_COMPLETE`] in the message while the input's
    /// push is not complete and children wait to be pushed.
    pub async fn ack(
        &mut self,
        parents: &[Acked],
        counts: [u64; 3],
        max_tasks: Option<u64>,
    ) -> Result<AckReport, QueueError> {
        let reply: Vec<u64> = self
            .ack_script
            .invocation(
                [&self.stream, &self.meta, &self.seen],
                parents,
                counts,
                max_tasks,
            )
            .invoke_async(&mut self.conn)
            .await
            .map_err(|error| self.error(error))?;
        Ok(AckReport::from_reply(&reply))
    }

    /// Marks entries as still held by `consumer`, so that nobody claims
    /// them while they wait in this node's queue or run. With `idle`, the
    /// opposite: they look abandoned for that long and the next claim by
    /// any node takes them at once. `deliveries` puts the delivery count
    /// back (a released entry was not lost by a crash).
    pub async fn hold(
        &mut self,
        consumer: &str,
        seqs: &[u64],
        idle: Option<Duration>,
        deliveries: Option<u64>,
    ) -> Result<(), QueueError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.stream).arg(GROUP).arg(consumer).arg(0);
        for seq in seqs {
            cmd.arg(format!("{seq}-0"));
        }
        if let Some(idle) = idle {
            cmd.arg("IDLE").arg(idle.as_millis() as u64);
        }
        if let Some(deliveries) = deliveries {
            cmd.arg("RETRYCOUNT").arg(deliveries);
        }
        cmd.arg("JUSTID");
        self.query(&cmd).await.map(drop)
    }

    /// Whether nothing is left anywhere: the push finished, every entry
    /// was handed out, and none is pending.
    pub async fn settled(&mut self) -> Result<bool, QueueError> {
        let meta = self.existing_meta().await?;
        if !meta.complete {
            return Ok(false);
        }
        let (lag, pending) = self.group_counts().await?;
        Ok(lag == 0 && pending == 0)
    }

    /// (never delivered, pending) for our group.
    async fn group_counts(&mut self) -> Result<(u64, u64), QueueError> {
        let reply = self
            .query(redis::cmd("XINFO").arg("GROUPS").arg(&self.stream))
            .await?;
        let Value::Array(groups) = reply else {
            return Err(QueueError::Missing {
                url: self.url.to_string(),
            });
        };
        for group in &groups {
            let fields = Fields::of(group);
            if fields.get("name") == Some(GROUP) {
                let pending = fields.number("pending").unwrap_or(0);
                // `lag` is nil when Redis cannot tell (after deletions); then
                // compare the last delivered id with the last entry.
                let lag = match fields.number("lag") {
                    Some(lag) => lag,
                    None => {
                        let delivered = fields.get("last-delivered-id").unwrap_or_default();
                        let last = self.last_seq().await?;
                        u64::from(seq_of(delivered.as_bytes()).unwrap_or(0) < last)
                    }
                };
                return Ok((lag, pending));
            }
        }
        Err(QueueError::Missing {
            url: self.url.to_string(),
        })
    }

    async fn last_seq(&mut self) -> Result<u64, QueueError> {
        let last = self
            .query(
                redis::cmd("XREVRANGE")
                    .arg(&self.stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        Ok(entries(&last).first().map_or(0, |entry| entry.seq))
    }

    /// Everything `queue status` shows.
    pub async fn status(&mut self) -> Result<QueueStatus, QueueError> {
        let meta = self.existing_meta().await?;
        let (waiting, in_flight) = self.group_counts().await?;
        let pushed = int(&self.query(redis::cmd("XLEN").arg(&self.stream)).await?);
        let reply = self
            .query(
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&self.stream)
                    .arg(GROUP),
            )
            .await?;
        let mut nodes = Vec::new();
        if let Value::Array(consumers) = reply {
            for consumer in &consumers {
                let fields = Fields::of(consumer);
                nodes.push(NodeStatus {
                    name: fields.get("name").unwrap_or_default().to_string(),
                    in_flight: fields.number("pending").unwrap_or(0),
                    idle_ms: fields.number("idle").unwrap_or(0),
                });
            }
        }
        let seen_keys = int(&self.query(redis::cmd("SCARD").arg(&self.seen)).await?);
        Ok(QueueStatus {
            queue: self.url.to_string(),
            total: meta.total,
            pushed,
            push_complete: meta.complete,
            waiting,
            in_flight,
            nodes,
            done: pushed.saturating_sub(waiting + in_flight),
            ok: meta.ok,
            failed: meta.failed,
            dead: meta.crashed,
            added: meta.added,
            kept_seen: meta.kept_seen,
            kept_max_tasks: meta.kept_max_tasks,
            seen_keys,
        })
    }
}

// ----- reply parsing ---------------------------------------------------------

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Okay => "OK".into(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

fn int(value: &Value) -> u64 {
    match value {
        Value::Int(n) => (*n).max(0) as u64,
        other => text(other).parse().unwrap_or(0),
    }
}

/// A reply of field/value pairs: an array (RESP2) or a map (RESP3).
struct Fields(Vec<(String, String)>);

impl Fields {
    fn of(value: &Value) -> Self {
        Self(match value {
            Value::Array(items) => items
                .chunks(2)
                .filter(|pair| pair.len() == 2)
                .map(|pair| (text(&pair[0]), text(&pair[1])))
                .collect(),
            Value::Map(items) => items.iter().map(|(k, v)| (text(k), text(v))).collect(),
            _ => Vec::new(),
        })
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A field that holds a number; `None` when absent, nil or not one.
    fn number(&self, name: &str) -> Option<u64> {
        self.get(name)?.parse().ok()
    }
}

/// `N-0` → N.
fn seq_of(id: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(id).ok()?;
    text.split_once('-')
        .map_or(Some(text), |(ms, _)| Some(ms))?
        .parse()
        .ok()
}

/// `[[id, [field, value, ...]], ...]` → entries; deleted ones (nil
/// fields) and foreign ones (no `l` field) are skipped.
fn entries(value: &Value) -> Vec<Entry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(parts) = item else {
                return None;
            };
            let seq = match parts.first()? {
                Value::BulkString(id) => seq_of(id)?,
                Value::SimpleString(id) => seq_of(id.as_bytes())?,
                _ => return None,
            };
            let Value::Array(fields) = parts.get(1)? else {
                return None;
            };
            let field = |name: &[u8]| {
                fields.chunks(2).find_map(|pair| match pair {
                    [Value::BulkString(k), Value::BulkString(v)] if k == name => Some(v),
                    _ => None,
                })
            };
            let text = |v: &Vec<u8>| String::from_utf8_lossy(v).into_owned();
            Some(Entry {
                seq,
                line: field(b"l")?.clone(),
                deliveries: 1,
                path: field(b"p").map(|p| text(p).into_boxed_str()),
                bad: field(b"b").map(text),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_skip_deleted_ones() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::BulkString(b"7-0".to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"l".to_vec()),
                    Value::BulkString(b"{\"x\":1}".to_vec()),
                ]),
            ]),
            Value::Array(vec![Value::BulkString(b"8-0".to_vec()), Value::Nil]),
        ]);
        assert_eq!(
            entries(&reply),
            vec![Entry {
                seq: 7,
                line: b"{\"x\":1}".to_vec(),
                deliveries: 1,
                ..Entry::default()
            }]
        );
        assert_eq!(seq_of(b"123-0"), Some(123));
        assert_eq!(seq_of(b"x-0"), None);
    }
}
