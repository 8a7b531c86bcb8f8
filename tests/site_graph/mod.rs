//! A generated web site for crawl tests and benchmarks: a seeded graph of
//! pages with cycles, links out of scope, 404s, redirects (and a redirect
//! loop), relative links with and without `<base href>`, `rel=nofollow`,
//! fragments, entity-encoded queries and `mailto:`; served by hyper, gzip
//! when the client offers it. [`Site::reachable`] is the set of URLs a
//! breadth-first crawl from the home page must fetch, each once.
//!
//! Shared by `tests/crawl_fetch.rs` and `crates/tasks/examples/site_graph_server.rs`
//! (through `#[path]`), so the tests and the benchmark crawl the same site.

#![allow(dead_code)]

pub mod http;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Request, StatusCode};

use http::Reply;

/// A site of `pages` pages whose links are drawn from `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    pub pages: u64,
    pub seed: u64,
}

/// A URL of the site (its path and query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// `/` for page 0 (the home page, the crawl's seed), else `/dK/pI`.
    Page(u64),
    /// Page I again under another URL: `?v=1&w=2` after its path.
    Query(u64),
    /// `/missing/I`: a 404.
    Missing(u64),
    /// `/r/I`: a 302 to page I.
    Redirect(u64),
    /// `/loop/a` and `/loop/b` redirect to each other.
    Loop(bool),
    /// `/hidden/I`: linked to only with `rel=nofollow`.
    Hidden(u64),
}

/// How a page writes one of its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Absolute,
    Relative,
    FullUrl,
    Fragment,
    Redirect,
    Missing,
    Query,
    /// The same path on `localhost`: another host of the same server.
    OtherHost,
    Nofollow,
    Mailto,
}

const FORMS: [Form; 10] = [
    Form::Absolute,
    Form::Relative,
    Form::FullUrl,
    Form::Fragment,
    Form::Redirect,
    Form::Missing,
    Form::Query,
    Form::OtherHost,
    Form::Nofollow,
    Form::Mailto,
];

/// splitmix64: a seeded, portable stream of numbers.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Node {
    pub fn path(self) -> String {
        match self {
            Node::Page(0) => "/".to_string(),
            Node::Page(i) => format!("/d{}/p{i}", i % 7),
            Node::Query(i) => format!("{}?v=1&w=2", Node::Page(i).path()),
            Node::Missing(i) => format!("/missing/{i}"),
            Node::Redirect(i) => format!("/r/{i}"),
            Node::Loop(false) => "/loop/a".to_string(),
            Node::Loop(true) => "/loop/b".to_string(),
            Node::Hidden(i) => format!("/hidden/{i}"),
        }
    }

    /// The node at `path` (with its query) on a site of `pages` pages.
    pub fn parse(path: &str, pages: u64) -> Option<Node> {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let number = |text: &str| text.parse::<u64>().ok().filter(|&i| i < pages);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let page = match parts.as_slice() {
            [""] => Some(0),
            [dir, page] if dir.starts_with('d') => {
                let i = number(page.strip_prefix('p')?)?;
                (i > 0 && *dir == format!("d{}", i % 7)).then_some(i)
            }
            _ => None,
        };
        match (page, query) {
            (Some(i), None) => return Some(Node::Page(i)),
            (Some(i), Some("v=1&w=2")) => return Some(Node::Query(i)),
            (Some(_), Some(_)) => return None,
            (None, _) if query.is_some() => return None,
            (None, _) => {}
        }
        match parts.as_slice() {
            ["missing", i] => number(i).map(Node::Missing),
            ["r", i] => number(i).map(Node::Redirect),
            ["hidden", i] => number(i).map(Node::Hidden),
            ["loop", "a"] => Some(Node::Loop(false)),
            ["loop", "b"] => Some(Node::Loop(true)),
            _ => None,
        }
    }
}

/// One link of a page: its `<a>` as written, and the node a crawl that
/// keeps to the host and skips `nofollow` goes to; or, when it does not
/// go, why (the name of `fetch --follow`'s count for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub html: String,
    pub target: Result<Node, &'static str>,
}

impl Site {
    /// Page `i`'s `<base href>` (`host` is `127.0.0.1:PORT`), if it has
    /// one: a quarter of the pages have `/`, another quarter the full URL.
    fn base(&self, i: u64, host: &str) -> Option<String> {
        match i % 4 {
            1 => Some("/".to_string()),
            3 => Some(format!("http://{host}/")),
            _ => None,
        }
    }

    /// Page `i`'s links: 3 to 8 drawn from the seed, plus one to the home
    /// page (a cycle through every page) and, on every 13th, the redirect
    /// loop.
    pub fn links(&self, i: u64, host: &str) -> Vec<Link> {
        let other = host.replacen("127.0.0.1", "localhost", 1);
        let has_base = self.base(i, host).is_some();
        let mut state = mix(self.seed ^ mix(i));
        let mut next = || {
            state = mix(state);
            state
        };
        let degree = 3 + next() % 6;
        let mut links = vec![Link {
            html: "<a href=\"/\">home</a>".to_string(),
            target: Ok(Node::Page(0)),
        }];
        if i.is_multiple_of(13) {
            links.push(Link {
                html: "<a href=\"/loop/a\">loop</a>".to_string(),
                target: Ok(Node::Loop(false)),
            });
        }
        for k in 0..degree {
            let j = next() % self.pages;
            let form = FORMS[(next() % FORMS.len() as u64) as usize];
            let page = Node::Page(j).path();
            let (href, rel, target) = match form {
                Form::Absolute => (page, "", Ok(Node::Page(j))),
                // `../dK/pJ` from `/dL/pI`; `dK/pJ` against a base of `/`.
                Form::Relative if j == 0 => (page, "", Ok(Node::Page(j))),
                Form::Relative if has_base => (page[1..].to_string(), "", Ok(Node::Page(j))),
                Form::Relative => (format!("..{page}"), "", Ok(Node::Page(j))),
                Form::FullUrl => (format!("HTTP://{host}{page}"), "", Ok(Node::Page(j))),
                Form::Fragment => (format!("{page}#s{k}"), "", Ok(Node::Page(j))),
                Form::Redirect => (Node::Redirect(j).path(), "", Ok(Node::Redirect(j))),
                Form::Missing => (Node::Missing(j).path(), "", Ok(Node::Missing(j))),
                Form::Query => (format!("{page}?v=1&amp;w=2"), "", Ok(Node::Query(j))),
                Form::OtherHost => (format!("http://{other}{page}"), "", Err("out_of_scope")),
                Form::Nofollow => (Node::Hidden(j).path(), " rel=\"nofollow\"", Err("nofollow")),
                Form::Mailto => (format!("mailto:p{j}@example.com"), "", Err("not_http")),
            };
            links.push(Link {
                html: format!("<a href=\"{href}\"{rel}>link {k}</a>"),
                target,
            });
        }
        links
    }

    /// Page `i` as HTML: about 2-4 KB, like a small real page.
    pub fn page_html(&self, i: u64, host: &str) -> String {
        let base = self
            .base(i, host)
            .map(|base| format!("<base href=\"{base}\">"))
            .unwrap_or_default();
        let mut html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">{base}\
             <title>Page {i} &amp; friends</title></head><body><nav><ul>"
        );
        for link in self.links(i, host) {
            html += "<li>";
            html += &link.html;
            html += "</li>";
        }
        html += "</ul></nav><main>";
        for p in 0..3 + i % 4 {
            html += &format!("<p>Paragraph {p} of page {i}: ");
            html += &"words that a crawler reads past on its way to the links. ".repeat(6);
            html += "</p>";
        }
        html + "</main></body></html>\n"
    }

    /// Where a crawl that keeps to the host and skips `nofollow` goes from
    /// `node` (a redirect goes to its target).
    fn next(&self, node: Node) -> Vec<Node> {
        match node {
            Node::Page(i) | Node::Query(i) => self
                .links(i, "127.0.0.1:1")
                .into_iter()
                .filter_map(|link| link.target.ok())
                .collect(),
            Node::Redirect(i) => vec![Node::Page(i)],
            Node::Loop(b) => vec![Node::Loop(!b)],
            Node::Missing(_) | Node::Hidden(_) => Vec::new(),
        }
    }

    /// Every node a breadth-first crawl from `from` fetches, in BFS order,
    /// each once.
    pub fn reachable(&self, from: Node) -> Vec<Node> {
        let mut seen = HashSet::from([from]);
        let mut queue = VecDeque::from([from]);
        let mut order = Vec::new();
        while let Some(node) = queue.pop_front() {
            order.push(node);
            for next in self.next(node) {
                if seen.insert(next) {
                    queue.push_back(next);
                }
            }
        }
        order
    }
}

fn redirect(status: StatusCode, to: &str) -> Reply {
    let mut response = http::html(status, "<p>moved</p>");
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// The answer for `request` on a site whose own host is `host`.
fn respond(site: &Site, host: &str, request: &Request<Incoming>) -> Reply {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let Some(node) = Node::parse(&target, site.pages) else {
        return http::html(StatusCode::NOT_FOUND, "<title>not found</title>");
    };
    let html = match node {
        Node::Page(i) | Node::Query(i) => site.page_html(i, host),
        Node::Hidden(i) => format!("<title>hidden {i}</title>"),
        Node::Missing(_) => return http::html(StatusCode::NOT_FOUND, "<title>not found</title>"),
        Node::Redirect(i) => return redirect(StatusCode::FOUND, &Node::Page(i).path()),
        Node::Loop(b) => {
            return redirect(StatusCode::MOVED_PERMANENTLY, &Node::Loop(!b).path());
        }
    };
    if !http::offers_gzip(request) {
        return http::html(StatusCode::OK, html);
    }
    http::html_gzip(
        StatusCode::OK,
        http::gzip(html.as_bytes(), flate2::Compression::fast()),
    )
}

/// Serves `site` on `listener` until the runtime stops, each answer after
/// `delay`.
pub async fn serve(site: Site, listener: tokio::net::TcpListener, delay: Duration) {
    let host: Arc<str> = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
        .into();
    http::serve(listener, move |request| {
        let host = host.clone();
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            respond(&site, &host, &request)
        }
    })
    .await
}

/// A site on 127.0.0.1 in a runtime of its own; dropping it stops it.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    pub fn start(site: Site) -> Self {
        Self::start_with_delay(site, Duration::ZERO)
    }

    /// A server that answers each request after `delay`, so that a crawl
    /// lasts long enough to be interrupted.
    pub fn start_with_delay(site: Site, delay: Duration) -> Self {
        let runtime = http::runtime(2);
        let listener = runtime.block_on(http::bind(0));
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        runtime.spawn(serve(site, listener, delay));
        Server {
            base,
            _runtime: runtime,
        }
    }

    /// The URLs a crawl from the home page must fetch, in canonical form.
    pub fn reachable(&self, site: &Site) -> Vec<String> {
        site.reachable(Node::Page(0))
            .into_iter()
            .map(|node| format!("{}{}", self.base, node.path()))
            .collect()
    }
}
