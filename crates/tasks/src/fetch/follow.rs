//! `--follow`: which of a page's links become new tasks. A link is
//! resolved against `<base href>` and the page's URL, put in canonical form
//! by a WHATWG URL parser (that form is the task and its dedupe key), and
//! kept when it is http(s), in scope and allowed by `--allow`/`--deny`.

use std::collections::HashSet;
use std::fmt;

use regex::Regex;
use serde::Serialize;
use url::{Host, Url};

use super::page::Href;

/// Which hosts a crawl stays on, seen from the page whose links are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    /// The same host name (scheme and port may differ).
    #[default]
    Host,
    /// The same registrable domain (`a.example.co.uk` and
    /// `b.example.co.uk`), from the public suffix list; a host that has
    /// none (an IP address, `localhost`) is its own domain.
    Domain,
    /// Any host.
    Any,
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "host" => Ok(Self::Host),
            "domain" => Ok(Self::Domain),
            "any" => Ok(Self::Any),
            _ => Err("use host, domain or any".into()),
        }
    }
}

/// A regular expression that compares by its text, so that settings stay
/// comparable.
#[derive(Debug, Clone)]
pub struct Pattern(pub Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

impl std::str::FromStr for Pattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // The first line of regex's message is the one that says what is
        // wrong; the rest draws the pattern.
        Regex::new(text).map(Pattern).map_err(|e| match e {
            regex::Error::Syntax(text) => text
                .lines()
                .rev()
                .find(|line| line.starts_with("error:"))
                .unwrap_or("invalid regular expression")
                .to_string(),
            other => other.to_string(),
        })
    }
}

/// What `--follow` keeps of a page's links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowSettings {
    /// `scope`: `host` (default), `domain` or `any`.
    pub scope: Scope,
    /// `allow`: only links whose canonical URL matches are followed.
    pub allow: Option<Pattern>,
    /// `deny`: links whose canonical URL matches are not followed.
    pub deny: Option<Pattern>,
    /// `nofollow`: `follow` follows `rel=nofollow` links too; `skip`
    /// (default) does not.
    pub follow_nofollow: bool,
}

/// What became of a page's links, for its record. Every link lands in
/// exactly one of these counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FollowCounts {
    /// Offered as new tasks (the supervisor drops those whose canonical URL
    /// it has seen already).
    pub added: u64,
    /// Not a URL, even relative to the page.
    pub invalid: u64,
    /// A scheme other than http and https (`mailto:`, `javascript:`).
    pub not_http: u64,
    /// `rel=nofollow`.
    pub nofollow: u64,
    /// Another host or domain than `--scope` allows.
    pub out_of_scope: u64,
    /// Left out by `--allow` or `--deny`.
    pub denied: u64,
    /// Disallowed by the host's robots.txt (`robots=obey`).
    pub robots: u64,
    /// The same canonical URL earlier on the same page.
    pub repeated: u64,
}

/// The links a page offers to follow, in canonical form and page order,
/// each once, with the count of what was left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    pub urls: Vec<Url>,
    pub counts: FollowCounts,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Host => "host",
            Self::Domain => "domain",
            Self::Any => "any",
        })
    }
}

/// A URL in the form that is its dedupe key: what the URL parser makes of
/// it (scheme and host lowercased, default port removed, dot segments
/// resolved, `/` for an empty path), without its fragment.
pub fn canonical(mut url: Url) -> Url {
    url.set_fragment(None);
    url
}

impl FollowSettings {
    /// The links of the page at `page` (the URL the task asked for: the
    /// scope's anchor) with `base` its `<base href>`, as new tasks.
    /// `<base href>` resolves against the page; a base that does not parse
    /// is ignored, as browsers do.
    pub fn discover<'a>(
        &self,
        page: &Url,
        base: Option<&str>,
        hrefs: impl IntoIterator<Item = &'a Href>,
    ) -> Discovered {
        let base = base
            .and_then(|base| page.join(base.trim()).ok())
            .unwrap_or_else(|| page.clone());
        let mut found = Discovered::default();
        let mut seen = HashSet::new();
        for href in hrefs {
            if href.nofollow && !self.follow_nofollow {
                found.counts.nofollow += 1;
                continue;
            }
            // The parser trims the spaces around a URL itself.
            let Ok(url) = base.join(&href.href) else {
                found.counts.invalid += 1;
                continue;
            };
            self.keep(page, canonical(url), &mut seen, &mut found);
        }
        found
    }

    /// The target of a redirect (its `Location`, resolved against the URL
    /// that answered), under the same rules as a link.
    pub fn redirect(&self, page: &Url, location: &str) -> Discovered {
        let mut found = Discovered::default();
        match page.join(location.trim()) {
            Ok(url) => self.keep(page, canonical(url), &mut HashSet::new(), &mut found),
            Err(_) => found.counts.invalid += 1,
        }
        found
    }

    fn keep(&self, page: &Url, url: Url, seen: &mut HashSet<String>, found: &mut Discovered) {
        let counts = &mut found.counts;
        if !matches!(url.scheme(), "http" | "https") {
            counts.not_http += 1;
        } else if !self.in_scope(page, &url) {
            counts.out_of_scope += 1;
        } else if !self.allowed(url.as_str()) {
            counts.denied += 1;
        } else if !seen.insert(url.as_str().to_string()) {
            counts.repeated += 1;
        } else {
            counts.added += 1;
            found.urls.push(url);
        }
    }

    fn allowed(&self, url: &str) -> bool {
        self.allow.as_ref().is_none_or(|p| p.0.is_match(url))
            && !self.deny.as_ref().is_some_and(|p| p.0.is_match(url))
    }

    fn in_scope(&self, page: &Url, url: &Url) -> bool {
        match self.scope {
            Scope::Any => true,
            Scope::Host => page.host() == url.host(),
            Scope::Domain => match (page.host(), url.host()) {
                (Some(Host::Domain(a)), Some(Host::Domain(b))) => registrable(a) == registrable(b),
                (a, b) => a == b,
            },
        }
    }
}

/// The registrable domain of a host name (`example.co.uk` for
/// `www.example.co.uk`), or the name itself when it has none (`localhost`,
/// a public suffix).
fn registrable(host: &str) -> &str {
    let name = host.trim_end_matches('.');
    psl::domain_str(name).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn href(text: &str) -> Href {
        Href {
            href: text.to_string(),
            nofollow: false,
        }
    }

    fn urls(found: &Discovered) -> Vec<&str> {
        found.urls.iter().map(Url::as_str).collect()
    }

    fn page() -> Url {
        Url::parse("http://Example.com:80/dir/page.html?x=1#top").unwrap()
    }

    #[test]
    fn links_resolve_against_the_page_and_become_canonical() {
        let hrefs = [
            "other.html",
            "../up",
            "/abs#frag",
            "?q=2",
            "  spaced.html  ",
            "HTTP://EXAMPLE.COM:80/x/./y/../z",
            "//example.com/scheme-relative",
            "https://example.com:443/secure",
            "#only-a-fragment",
        ]
        .map(href);
        let found = FollowSettings::default().discover(&page(), None, &hrefs);
        assert_eq!(
            urls(&found),
            [
                "http://example.com/dir/other.html",
                "http://example.com/up",
                "http://example.com/abs",
                "http://example.com/dir/page.html?q=2",
                "http://example.com/dir/spaced.html",
                "http://example.com/x/z",
                "http://example.com/scheme-relative",
                "https://example.com/secure",
                "http://example.com/dir/page.html?x=1",
            ]
        );
        assert_eq!(found.counts.added, 9);
    }

    #[test]
    fn base_href_changes_where_relative_links_point() {
        let hrefs = [href("a"), href("/b")];
        let settings = FollowSettings::default();
        let found = settings.discover(&page(), Some("/base/"), &hrefs);
        assert_eq!(
            urls(&found),
            ["http://example.com/base/a", "http://example.com/b"]
        );
        // A base on another host moves the links there: out of scope.
        let found = settings.discover(&page(), Some("http://elsewhere.org/"), &hrefs);
        assert_eq!(found.counts.out_of_scope, 2);
        // A base that does not parse is ignored.
        let found = settings.discover(&page(), Some("http://[bad"), &hrefs);
        assert_eq!(
            urls(&found),
            ["http://example.com/dir/a", "http://example.com/b"]
        );
    }

    #[test]
    fn every_link_is_counted_once_in_one_place() {
        let mut nofollow = href("/nofollow");
        nofollow.nofollow = true;
        let hrefs = vec![
            href("/a"),
            href("/a#again"),
            href("http://[::1"),
            href("mailto:x@example.com"),
            href("javascript:void(0)"),
            href("http://other.org/"),
            nofollow.clone(),
        ];
        let found = FollowSettings::default().discover(&page(), None, &hrefs);
        let expected = FollowCounts {
            added: 1,
            invalid: 1,
            not_http: 2,
            nofollow: 1,
            out_of_scope: 1,
            denied: 0,
            robots: 0,
            repeated: 1,
        };
        assert_eq!(found.counts, expected);
        let settings = FollowSettings {
            follow_nofollow: true,
            ..Default::default()
        };
        let found = settings.discover(&page(), None, &[nofollow]);
        assert_eq!(urls(&found), ["http://example.com/nofollow"]);
    }

    #[test]
    fn scopes_host_domain_and_any() {
        let page = Url::parse("https://www.example.co.uk/").unwrap();
        let hrefs = [
            "http://www.example.co.uk:8080/port",
            "https://WWW.EXAMPLE.CO.UK/case",
            "https://shop.example.co.uk/",
            "https://example.co.uk/",
            "https://other.co.uk/",
            "https://co.uk/",
            "http://127.0.0.1/",
        ]
        .map(href);
        let kept = |scope| {
            let settings = FollowSettings {
                scope,
                ..Default::default()
            };
            settings.discover(&page, None, &hrefs).counts.added
        };
        assert_eq!(kept(Scope::Host), 2);
        assert_eq!(kept(Scope::Domain), 4);
        assert_eq!(kept(Scope::Any), 7);
        // Hosts without a registrable domain are their own.
        let local = Url::parse("http://127.0.0.1:9/").unwrap();
        let settings = FollowSettings {
            scope: Scope::Domain,
            ..Default::default()
        };
        let hrefs = [
            "http://127.0.0.1:10/",
            "http://127.0.0.2/",
            "http://localhost/",
        ]
        .map(href);
        assert_eq!(settings.discover(&local, None, &hrefs).counts.added, 1);
    }

    #[test]
    fn allow_and_deny_match_the_canonical_url() {
        let settings = FollowSettings {
            allow: Some("^http://example.com/(dir|keep)/".parse().unwrap()),
            deny: Some(r"\.pdf$".parse().unwrap()),
            ..Default::default()
        };
        let hrefs = [
            "/keep/a",
            "/keep/b.pdf",
            "/drop/c",
            "HTTP://EXAMPLE.COM/dir/d",
        ]
        .map(href);
        let found = settings.discover(&page(), None, &hrefs);
        assert_eq!(
            urls(&found),
            ["http://example.com/keep/a", "http://example.com/dir/d"]
        );
        assert_eq!(found.counts.denied, 2);
        let error = "([".parse::<Pattern>().unwrap_err();
        assert!(error.starts_with("error:"), "{error}");
    }

    /// Pieces of hrefs, many of them where resolving could go wrong.
    const PIECES: &[&str] = &[
        "/",
        "..",
        ".",
        "a",
        "B",
        "?",
        "&",
        "=",
        "#",
        "%",
        "%2e",
        ":",
        "//",
        "@",
        "http:",
        "HTTPS://",
        "mailto:",
        "javascript:",
        "example.com",
        "EXAMPLE.com",
        ":80",
        ":443",
        ":8080",
        "[::1]",
        " ",
        "\t",
        "\u{e9}",
        "\\",
        "x.y",
    ];

    proptest::proptest! {
        /// Whatever a page writes: every link lands in one count, and what
        /// is added is http(s), in scope, without a fragment, and already
        /// canonical (parsing it again changes nothing), each once.
        #[test]
        fn added_links_are_canonical_in_scope_and_counted_once(
            hrefs in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(PIECES), 0..8),
                0..12,
            )
        ) {
            let hrefs: Vec<Href> = hrefs.iter().map(|p| href(&p.concat())).collect();
            let found = FollowSettings::default().discover(&page(), None, &hrefs);
            let c = found.counts;
            let total = c.added + c.invalid + c.not_http + c.nofollow + c.out_of_scope
                + c.denied + c.robots + c.repeated;
            proptest::prop_assert_eq!(total, hrefs.len() as u64);
            proptest::prop_assert_eq!(c.added, found.urls.len() as u64);
            let mut seen = HashSet::new();
            for url in &found.urls {
                proptest::prop_assert!(matches!(url.scheme(), "http" | "https"));
                proptest::prop_assert_eq!(url.host_str(), Some("example.com"));
                proptest::prop_assert!(url.fragment().is_none());
                let again = Url::parse(url.as_str()).unwrap();
                proptest::prop_assert_eq!(again.as_str(), url.as_str());
                proptest::prop_assert!(seen.insert(url.as_str()));
            }
        }
    }

    #[test]
    fn redirects_follow_the_same_rules() {
        let settings = FollowSettings::default();
        let found = settings.redirect(&page(), "/moved#x");
        assert_eq!(urls(&found), ["http://example.com/moved"]);
        assert_eq!(
            settings
                .redirect(&page(), "http://other.org/")
                .counts
                .out_of_scope,
            1
        );
        assert_eq!(settings.redirect(&page(), "http://[").counts.invalid, 1);
    }
}
