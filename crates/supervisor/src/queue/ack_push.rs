//! The acknowledgement of recorded tasks with the pushing of the tasks
//! they added: one Lua script (a parent's XACK, its accepted children's
//! SADD and XADD, the `--max-tasks` count), its arguments and its reply.
//! Kept apart from the other Redis commands because it alone decides,
//! atomically, which added tasks enter a shared queue.

use redis::{Script, ScriptInvocation};

use super::url::GROUP;

/// A recorded task to acknowledge, with the tasks it added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub seq: u64,
    pub children: Vec<Child>,
}

/// A task to push to the queue with its parent's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub path: Box<str>,
    pub line: bytes::Bytes,
    /// [`crate::seen::shared_fingerprint`] of its dedupe key.
    pub key: Option<u64>,
    /// Why it cannot run, for an addition the node's checks refused.
    pub bad: Option<String>,
}

/// What one acknowledgement did with the children it carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckReport {
    /// Children pushed.
    pub pushed: u64,
    /// Children whose key the queue had seen: not pushed.
    pub seen: u64,
    /// Children past `--max-tasks`: not pushed.
    pub max_tasks: u64,
    /// Records whose entry was acknowledged already (by a node that ran it
    /// too): their children were pushed then, not now.
    pub stale: u64,
}

/// Why an acknowledgement with children must wait.
pub const NOT_COMPLETE: &str = "MLPUSH";

/// Acknowledges recorded tasks and pushes what they added, in one atomic
/// step, so that a node killed at any moment neither loses nor repeats a
/// child: until the script runs the parent stays pending (and runs again
/// elsewhere), and once it runs its children are in the stream.
///
/// KEYS: stream, meta, seen. ARGV: group, max-tasks (-1: none), ok,
/// failed, crashed, then per parent its seq and child count, then per
/// child its path, line, key fingerprint ("" for none) and bad message
/// ("" for none). A child goes in only if its parent's XACK took an entry
/// off the pending list (a parent acknowledged before, by a slower node
/// that also ran it, pushed its children then), its key is new (SADD, one
/// atomic operation per key) and input plus added tasks stay under
/// max-tasks. Entry ids continue past the input's last line, so the
/// stream's ids stay `N-0`; they cannot be used before the push is
/// complete (a later pushed line would be refused as an older id), so
/// until then the script changes nothing and answers `MLPUSH`.
const ACK_SCRIPT: &str = r"
local stream, meta, seen = KEYS[1], KEYS[2], KEYS[3]
local group, max = ARGV[1], tonumber(ARGV[2])
local i, children = 6, 0
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  children = children + n
  i = i + 2 + 4 * n
end
if children > 0 and redis.call('HGET', meta, 'complete') ~= '1' then
  return redis.error_reply('MLPUSH the push of the input is not complete')
end
local lines = tonumber(redis.call('HGET', meta, 'lines') or '0')
local total = tonumber(redis.call('HGET', meta, 'total') or '0')
local added = tonumber(redis.call('HGET', meta, 'added') or '0')
local pushed, dup, over, stale = 0, 0, 0, 0
i = 6
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  local acked = redis.call('XACK', stream, group, ARGV[i] .. '-0')
  i = i + 2
  if acked == 0 and n > 0 then stale = stale + 1 end
  for c = 1, n do
    local path, line, key, bad = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    if acked == 1 then
      if key ~= '' and redis.call('SISMEMBER', seen, key) == 1 then
        dup = dup + 1
      elseif max >= 0 and total + added >= max then
        over = over + 1
      else
        if key ~= '' then redis.call('SADD', seen, key) end
        added = added + 1
        local id = (lines + added) .. '-0'
        if bad ~= '' then
          redis.call('XADD', stream, id, 'l', line, 'p', path, 'b', bad)
        else
          redis.call('XADD', stream, id, 'l', line, 'p', path)
        end
        pushed = pushed + 1
      end
    end
  end
end
redis.call('HSET', meta, 'added', added)
if dup > 0 then redis.call('HINCRBY', meta, 'kept_seen', dup) end
if over > 0 then redis.call('HINCRBY', meta, 'kept_max_tasks', over) end
local names = {'ok', 'failed', 'crashed'}
for k = 1, 3 do
  local count = tonumber(ARGV[2 + k])
  if count > 0 then redis.call('HINCRBY', meta, names[k], count) end
end
return {pushed, dup, over, stale}
";

/// The loaded [`ACK_SCRIPT`]; `redis::Script` sends it by its hash and
/// loads it again only when Redis does not know it (after a restart).
#[derive(Clone)]
pub(super) struct AckScript(Script);

impl AckScript {
    pub(super) fn new() -> Self {
        Self(Script::new(ACK_SCRIPT))
    }

    /// The script's call for these parents, in the KEYS/ARGV layout that
    /// [`ACK_SCRIPT`] documents; `keys` are the stream, meta and seen keys.
    pub(super) fn invocation(
        &self,
        keys: [&str; 3],
        parents: &[Acked],
        counts: [u64; 3],
        max_tasks: Option<u64>,
    ) -> ScriptInvocation<'_> {
        let mut invocation = self.0.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation
            .arg(GROUP)
            .arg(max_tasks.map_or(-1, |max| i64::try_from(max).unwrap_or(i64::MAX)));
        for count in counts {
            invocation.arg(count);
        }
        for parent in parents {
            invocation.arg(parent.seq).arg(parent.children.len());
            for child in &parent.children {
                invocation
                    .arg(child.path.as_bytes())
                    .arg(child.line.as_ref())
                    .arg(
                        child
                            .key
                            .map_or_else(Vec::new, |key| key.to_le_bytes().to_vec()),
                    )
                    .arg(child.bad.as_deref().unwrap_or_default());
            }
        }
        invocation
    }
}

impl AckReport {
    /// Reads the script's reply, `{pushed, dup, over, stale}`; a count
    /// missing from it is zero.
    pub(super) fn from_reply(reply: &[u64]) -> Self {
        let at = |i: usize| reply.get(i).copied().unwrap_or(0);
        Self {
            pushed: at(0),
            seen: at(1),
            max_tasks: at(2),
            stale: at(3),
        }
    }
}
