//! The `--queue` URL: which Redis, which database, which queue, and the
//! keys that queue owns there.

use std::fmt;

/// Consumer group every supervisor of a queue joins.
pub const GROUP: &str = "multiloop";

/// Where a queue lives: `redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]/NAME`.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueUrl {
    tls: bool,
    /// `[userinfo@]host[:port]`, as given (percent-encoding kept).
    authority: String,
    db: i64,
    name: String,
    /// From `REDIS_PASSWORD` when the URL has none.
    env_password: Option<String>,
}

/// Why a `--queue` URL is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad queue URL {url:?}: {reason} (expected redis://HOST[:PORT][/DB]/NAME or rediss://...)")]
pub struct UrlError {
    url: String,
    reason: String,
}

impl QueueUrl {
    /// Parses a URL; `env_password` is consulted when the URL carries no
    /// password (so that it need not appear in `ps`).
    pub fn parse(text: &str, env_password: Option<String>) -> Result<Self, UrlError> {
        let fail = |reason: &str| UrlError {
            url: redact(text),
            reason: reason.to_string(),
        };
        let (tls, rest) = if let Some(rest) = text.strip_prefix("redis://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("rediss://") {
            (true, rest)
        } else {
            return Err(fail("the scheme must be redis:// or rediss://"));
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| fail("no queue name"))?;
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if host.is_empty() || host.starts_with(':') {
            return Err(fail("no host"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        let (db, name) = match parts.as_slice() {
            [name] => (0, *name),
            [db, name] => (
                db.parse::<i64>()
                    .ok()
                    .filter(|db| *db >= 0)
                    .ok_or_else(|| fail("the database must be a number"))?,
                *name,
            ),
            _ => return Err(fail("too many path segments")),
        };
        if name.is_empty() {
            return Err(fail("no queue name"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(fail(
                "a queue name has only letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(Self {
            tls,
            authority: authority.to_string(),
            db,
            name: name.to_string(),
            env_password: env_password.filter(|p| !p.is_empty()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream of task lines; entry `N-0` is input line `N`.
    pub fn stream_key(&self) -> String {
        // The hash tag keeps both keys in one slot (Redis Cluster).
        format!("multiloop:{{{}}}:tasks", self.name)
    }

    /// The queue's description and counters.
    pub fn meta_key(&self) -> String {
        format!("multiloop:{{{}}}:meta", self.name)
    }

    /// The fingerprints of every dedupe key the queue has met (input
    /// `--key` values pushed, keys of added tasks).
    pub fn seen_key(&self) -> String {
        format!("multiloop:{{{}}}:seen", self.name)
    }

    /// What the Redis client connects to.
    pub fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo;
        let scheme = if self.tls { "rediss" } else { "redis" };
        let info = format!("{scheme}://{}/{}", self.authority, self.db).into_connection_info()?;
        let mut settings = info.redis_settings().clone().set_db(self.db);
        if settings.password().is_none() {
            if let Some(password) = &self.env_password {
                settings = settings.set_password(password);
            }
        }
        Ok(info.set_redis_settings(settings))
    }
}

/// The URL without its password, for messages.
fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}/{path}")
        }
        None => text.to_string(),
    }
}

impl fmt::Display for QueueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let url = format!("{scheme}://{}/{}/{}", self.authority, self.db, self.name);
        f.write_str(&redact(&url))
    }
}

impl fmt::Debug for QueueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_db_and_password() {
        let url = QueueUrl::parse("redis://host:6379/crawl", None).unwrap();
        assert_eq!((url.name(), url.db, url.tls), ("crawl", 0, false));
        assert_eq!(url.stream_key(), "multiloop:{crawl}:tasks");
        let url = QueueUrl::parse("rediss://u:s3cret@host/3/jobs-1", None).unwrap();
        assert_eq!((url.name(), url.db, url.tls), ("jobs-1", 3, true));
        assert_eq!(url.to_string(), "rediss://u:***@host/3/jobs-1");
        let info = url.connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("s3cret"));
        assert_eq!(info.redis_settings().db(), 3);
        let url = QueueUrl::parse("redis://host/q", Some("fromenv".into())).unwrap();
        let info = url.connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("fromenv"));
    }

    #[test]
    fn bad_urls_say_why_without_the_password() {
        for (text, why) in [
            ("http://host/q", "scheme"),
            ("redis://host", "no queue name"),
            ("redis://host/", "no queue name"),
            ("redis:///q", "no host"),
            ("redis://host/x/q", "database"),
            ("redis://host/1/2/q", "too many"),
            ("redis://:pw@host/a b", "letters"),
        ] {
            let error = QueueUrl::parse(text, None).unwrap_err().to_string();
            assert!(error.contains(why), "{text}: {error}");
            assert!(!error.contains("pw@"), "{error}");
        }
    }
}
