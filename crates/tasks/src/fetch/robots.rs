//! `robots.txt` (RFC 9309): the group that applies to our user agent and
//! its allow/disallow rules, matched longest-first with `*` and `$`.

/// The rules of one host for one user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Robots {
    /// `(allow, pattern)`; empty = everything allowed.
    rules: Vec<(bool, String)>,
    disallow_all: bool,
}

impl Robots {
    /// No `robots.txt` (a 4xx): everything is allowed (RFC 9309 §2.3.1.3).
    pub(crate) fn allow_all() -> Self {
        Self::default()
    }

    /// `robots.txt` could not be fetched (5xx, network error): everything is
    /// disallowed (RFC 9309 §2.3.1.4).
    pub(crate) fn disallow_all() -> Self {
        Self {
            rules: Vec::new(),
            disallow_all: true,
        }
    }

    /// Parses `text` for the product token `agent` (`multiloop` from
    /// `multiloop/0.1.0`); groups for `*` apply when none names it.
    pub(crate) fn parse(text: &str, agent: &str) -> Self {
        let agent = agent.to_ascii_lowercase();
        let mut ours: Vec<(bool, String)> = Vec::new();
        let mut star: Vec<(bool, String)> = Vec::new();
        let mut found_ours = false;
        // The current group's agents: (names us, names *).
        let mut group = (false, false);
        let mut in_agents = false;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            match key.as_str() {
                "user-agent" => {
                    if !in_agents {
                        group = (false, false);
                        in_agents = true;
                    }
                    let name = value.to_ascii_lowercase();
                    if name == "*" {
                        group.1 = true;
                    } else if !name.is_empty() && agent.starts_with(&name) {
                        group.0 = true;
                        found_ours = true;
                    }
                }
                "allow" | "disallow" => {
                    in_agents = false;
                    // An empty `Disallow:` allows everything: no rule.
                    if value.is_empty() {
                        continue;
                    }
                    let rule = (key == "allow", value.to_string());
                    if group.0 {
                        ours.push(rule.clone());
                    }
                    if group.1 {
                        star.push(rule);
                    }
                }
                _ => in_agents = false,
            }
        }
        Self {
            rules: if found_ours { ours } else { star },
            disallow_all: false,
        }
    }

    /// The rule that forbids `path` (path and query), if any: the longest
    /// matching pattern decides, and `Allow` wins a tie.
    pub(crate) fn disallows(&self, path: &str) -> Option<String> {
        if self.disallow_all {
            return Some("robots.txt is unreachable".into());
        }
        if path == "/robots.txt" {
            return None;
        }
        let mut best: Option<&(bool, String)> = None;
        for rule in &self.rules {
            if matches(&rule.1, path) {
                let better = match best {
                    None => true,
                    Some(b) => rule.1.len() > b.1.len() || (rule.1.len() == b.1.len() && rule.0),
                };
                if better {
                    best = Some(rule);
                }
            }
        }
        match best {
            Some((false, pattern)) => Some(format!("Disallow: {pattern}")),
            _ => None,
        }
    }
}

/// `pattern` against the start of `path`: `*` is any run of characters, a
/// final `$` anchors at the end.
fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, anchored) = match pattern.strip_suffix('$') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut at = 0;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            if !path.starts_with(part) {
                return false;
            }
            at = part.len();
        } else if i == parts.len() - 1 && anchored {
            return path.len() >= at + part.len() && path.ends_with(part);
        } else {
            match path[at..].find(part) {
                Some(found) => at += found + part.len(),
                None => return false,
            }
        }
    }
    !anchored || at == path.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# comment
User-agent: *
Disallow: /private
Allow: /private/open
Disallow: /*.pdf$

User-agent: otherbot
Disallow: /

User-agent: MultiLoop
User-agent: another
Disallow: /tmp/
Allow: /
";

    #[test]
    fn our_group_wins_over_the_star_group() {
        let robots = Robots::parse(TEXT, "multiloop/0.1.0");
        assert!(robots.disallows("/private").is_none());
        assert_eq!(
            robots.disallows("/tmp/x").as_deref(),
            Some("Disallow: /tmp/")
        );
    }

    #[test]
    fn the_star_group_applies_to_others_longest_match_first() {
        let robots = Robots::parse(TEXT, "somebot/1");
        assert!(robots.disallows("/private/x").is_some());
        assert!(robots.disallows("/private/open/x").is_none());
        assert!(robots.disallows("/a/b.pdf").is_some());
        assert!(robots.disallows("/a/b.pdf?x").is_none());
        assert!(robots.disallows("/public").is_none());
        assert!(robots.disallows("/robots.txt").is_none());
        let bot = Robots::parse(TEXT, "otherbot");
        assert!(bot.disallows("/anything").is_some());
    }

    #[test]
    fn patterns() {
        assert!(matches("/a*c", "/abc/d"));
        assert!(matches("/a*c$", "/abc"));
        assert!(!matches("/a*c$", "/abcd"));
        assert!(matches("/", "/x"));
        assert!(matches("/x$", "/x"));
        assert!(!matches("/x$", "/xy"));
        assert!(matches("*", "/anything"));
    }

    #[test]
    fn unreachable_disallows_and_missing_allows() {
        assert!(Robots::disallow_all().disallows("/").is_some());
        assert!(Robots::allow_all().disallows("/").is_none());
        assert!(Robots::parse("", "x").disallows("/").is_none());
    }
}
