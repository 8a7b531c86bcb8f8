//! The CPU part of `fetch`: a page's `<title>` and link count. A scanner
//! that follows the WHATWG tokenizer's states for tags, attributes,
//! comments and raw text finds them without building tokens; html5gum
//! decodes the title's character references.

use html5gum::emitters::callback::{CallbackEmitter, CallbackEvent};
use html5gum::{Emitter, ForwardingEmitter, Span, State, Tokenizer};
use memchr::{memchr, memchr2, memmem};

/// Longest title kept, in bytes; a page can put megabytes in its title, and
/// the record should stay a line a person can read.
pub const MAX_TITLE_BYTES: usize = 4096;

/// What a page says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageInfo {
    /// The text of the first `<title>`, entities decoded, whitespace runs
    /// collapsed to one space and trimmed; `None` without a `<title>`.
    pub title: Option<String>,
    /// `<a>` start tags with an `href` attribute.
    pub links: u64,
}

/// Reads `<title>` and counts `<a href>` links. After `<script>`, `<style>`,
/// `<title>`, `<textarea>` and the other raw-text elements the scanner
/// skips to their end tag (the tokenizer's "naive" state switching, as
/// html5gum and lol-html do it), so markup inside scripts and comments is
/// not counted. Invalid UTF-8 in the title is replaced, as a browser would
/// show it.
///
/// Why not html5gum for all of it: a full tokenizer handles every byte of
/// the page through its state machine and cost a seventh of the worker's
/// CPU per page; this scanner jumps from `<` to `<` with memchr and is
/// checked against html5gum by a property test.
pub fn scan_html(body: &[u8]) -> PageInfo {
    let mut scanner = Scanner { page: body, pos: 0 };
    let mut info = PageInfo::default();
    let mut title = None;
    while let Some(tag) = scanner.next_tag() {
        let Tag::Start { name, href } = tag else {
            continue;
        };
        let is = |element: &[u8]| name.eq_ignore_ascii_case(element);
        if is(b"a") && href {
            info.links += 1;
        } else if is(b"script") {
            scanner.skip_script();
        } else if is(b"title") {
            let text = scanner.skip_raw_text(b"title");
            title.get_or_insert(text);
        } else if RAW_TEXT.iter().any(|element| is(element)) {
            scanner.skip_raw_text(name);
        } else if is(b"plaintext") {
            break;
        }
    }
    info.title = title.map(|raw| clean_title(&decode_text(raw)));
    info
}

/// Elements whose content is text up to their own end tag (RCDATA and
/// RAWTEXT; `<title>`, `<script>` and `<plaintext>` are handled apart).
const RAW_TEXT: [&[u8]; 7] = [
    b"textarea",
    b"style",
    b"iframe",
    b"xmp",
    b"noembed",
    b"noframes",
    b"noscript",
];

/// A tag the scanner finished (one cut off by the end of the page is none).
#[derive(Debug, PartialEq, Eq)]
enum Tag<'a> {
    /// The name as written (any case), and whether an `href` attribute
    /// was among the attributes.
    Start {
        name: &'a [u8],
        href: bool,
    },
    End,
}

/// A position in the page, moved forward tag by tag.
struct Scanner<'a> {
    page: &'a [u8],
    pos: usize,
}

/// Whitespace between tag names and attributes (CR included: the input
/// stream turns it into LF before tokenizing).
fn is_space(byte: u8) -> bool {
    matches!(byte, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.page.get(self.pos).copied()
    }

    fn rest(&self) -> &'a [u8] {
        &self.page[self.pos.min(self.page.len())..]
    }

    /// Moves past the next `byte`, or to the end without one.
    fn skip_past(&mut self, byte: u8) {
        self.pos = match memchr(byte, self.rest()) {
            Some(at) => self.pos + at + 1,
            None => self.page.len(),
        };
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
    }

    /// The next start or end tag; comments, doctypes and text are passed
    /// over.
    fn next_tag(&mut self) -> Option<Tag<'a>> {
        loop {
            self.pos += memchr(b'<', self.rest())? + 1;
            match self.peek()? {
                b'!' => self.markup_declaration(),
                // `<?xml ...>`: a bogus comment up to the next `>`.
                b'?' => self.skip_past(b'>'),
                b'/' => {
                    self.pos += 1;
                    match self.peek()? {
                        letter if letter.is_ascii_alphabetic() => {
                            self.tag()?;
                            return Some(Tag::End);
                        }
                        // `</>` is dropped; `</3...>` is a bogus comment.
                        _ => self.skip_past(b'>'),
                    }
                }
                letter if letter.is_ascii_alphabetic() => {
                    let (name, href) = self.tag()?;
                    return Some(Tag::Start { name, href });
                }
                // A `<` before anything else is text.
                _ => {}
            }
        }
    }

    /// A tag from its name (the scanner is on its first letter) to its
    /// `>`: the name, and whether an attribute is named `href`. `None`
    /// when the page ends inside the tag, which then is no tag.
    fn tag(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.pos;
        while !matches!(self.peek()?, b'/' | b'>') && !self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
        let name = &self.page[start..self.pos];
        let mut href = false;
        loop {
            // Before an attribute name.
            self.skip_spaces();
            match self.peek()? {
                b'>' => {
                    self.pos += 1;
                    return Some((name, href));
                }
                // `/` before `>` closes the tag, anywhere else it is dropped.
                b'/' => self.pos += 1,
                _ => {
                    // An attribute name; its first byte may be `=`.
                    let start = self.pos;
                    self.pos += 1;
                    while !matches!(self.peek()?, b'/' | b'>' | b'=')
                        && !self.peek().is_some_and(is_space)
                    {
                        self.pos += 1;
                    }
                    href |= self.page[start..self.pos].eq_ignore_ascii_case(b"href");
                    self.skip_spaces();
                    if self.peek()? == b'=' {
                        self.pos += 1;
                        self.attribute_value()?;
                    }
                }
            }
        }
    }

    /// After `=`: a quoted or unquoted value. A `>` where the value
    /// should start is left for the tag to end on (an empty unquoted one).
    fn attribute_value(&mut self) -> Option<()> {
        self.skip_spaces();
        match self.peek()? {
            quote @ (b'"' | b'\'') => {
                self.pos += 1;
                self.pos += memchr(quote, self.rest())? + 1;
            }
            _ => {
                while self.peek()? != b'>' && !self.peek().is_some_and(is_space) {
                    self.pos += 1;
                }
            }
        }
        Some(())
    }

    /// After `<!`: a comment, or a doctype, CDATA or other declaration,
    /// which in HTML content all end at the next `>`.
    fn markup_declaration(&mut self) {
        if !self.rest()[1..].starts_with(b"--") {
            return self.skip_past(b'>');
        }
        self.pos += 3;
        // `<!-->` and `<!--->` are whole (empty) comments.
        for short in [&b">"[..], b"->"] {
            if self.rest().starts_with(short) {
                self.pos += short.len();
                return;
            }
        }
        // Otherwise a comment ends at `-->`, `--!>` or `--->` and so on.
        while let Some(at) = memmem::find(self.rest(), b"--") {
            self.pos += at + 2;
            while self.peek() == Some(b'-') {
                self.pos += 1;
            }
            match self.rest() {
                [b'>', ..] => {
                    self.pos += 1;
                    return;
                }
                [b'!', b'>', ..] => {
                    self.pos += 2;
                    return;
                }
                _ => {}
            }
        }
        self.pos = self.page.len();
    }

    /// Whether an end tag `</name` (any case) followed by a space, `/` or
    /// `>` starts at `at`: the only way out of raw text.
    fn end_tag_at(&self, at: usize, name: &[u8]) -> bool {
        self.named_tag_at(at + 1, b"/", name)
    }

    /// Whether `<` + `prefix` + `name` (any case) + a space, `/` or `>`
    /// starts at `at - 1`; `at` is just past the `<`.
    fn named_tag_at(&self, at: usize, prefix: &[u8], name: &[u8]) -> bool {
        let text = &self.page[at.min(self.page.len())..];
        let Some(rest) = text.strip_prefix(prefix) else {
            return false;
        };
        rest.len() > name.len()
            && rest[..name.len()].eq_ignore_ascii_case(name)
            && (is_space(rest[name.len()]) || matches!(rest[name.len()], b'/' | b'>'))
    }

    /// Passes over RCDATA or RAWTEXT up to the element's end tag (left to
    /// be read as a tag) and returns that text.
    fn skip_raw_text(&mut self, name: &[u8]) -> &'a [u8] {
        let start = self.pos;
        while let Some(at) = memchr(b'<', self.rest()) {
            self.pos += at;
            if self.end_tag_at(self.pos, name) {
                return &self.page[start..self.pos];
            }
            self.pos += 1;
        }
        self.pos = self.page.len();
        &self.page[start..]
    }

    /// Passes over a script up to its `</script>`, through the script data
    /// states: after `<!--` a `<script>` starts a nested ("double escaped")
    /// part in which `</script>` does not end the script, until `-->`.
    fn skip_script(&mut self) {
        #[derive(PartialEq)]
        enum Script {
            Data,
            Escaped,
            DoubleEscaped,
        }
        let mut state = Script::Data;
        while let Some(at) = memchr2(b'<', b'-', self.rest()) {
            self.pos += at;
            let rest = self.rest();
            if rest[0] == b'-' {
                if state != Script::Data && rest.starts_with(b"-->") {
                    state = Script::Data;
                    self.pos += 3;
                } else {
                    self.pos += 1;
                }
                continue;
            }
            match state {
                Script::Data if rest.starts_with(b"<!--") => {
                    state = Script::Escaped;
                    // On the first dash, so that `<!-->` ends the escape.
                    self.pos += 2;
                    continue;
                }
                Script::Data | Script::Escaped if self.end_tag_at(self.pos, b"script") => return,
                Script::Escaped if self.named_tag_at(self.pos + 1, b"", b"script") => {
                    state = Script::DoubleEscaped;
                }
                Script::DoubleEscaped if self.end_tag_at(self.pos, b"script") => {
                    state = Script::Escaped;
                }
                _ => {}
            }
            self.pos += 1;
        }
        self.pos = self.page.len();
    }
}

/// The text of an RCDATA element with its character references decoded.
fn decode_text(raw: &[u8]) -> Vec<u8> {
    let raw = &raw[..raw.len().min(MAX_TITLE_BYTES * 2)];
    let mut text = Vec::with_capacity(raw.len());
    let callback = |event: CallbackEvent<'_>, _: Span<()>| -> Option<()> {
        if let CallbackEvent::String { value } = event {
            text.extend_from_slice(value);
        }
        None
    };
    let mut tokenizer =
        Tokenizer::new_with_emitter(raw, WithoutErrors(CallbackEmitter::new(callback)));
    tokenizer.set_state(State::RcData);
    tokenizer.for_each(drop);
    text
}

/// An emitter that tells the tokenizer we read no parse errors, so it
/// skips checking every byte for them.
struct WithoutErrors<E>(E);

impl<E: Emitter> ForwardingEmitter for WithoutErrors<E> {
    type Token = E::Token;

    fn inner(&mut self) -> &mut impl Emitter<Token = Self::Token> {
        &mut self.0
    }

    fn should_emit_errors(&mut self) -> bool {
        false
    }
}

/// Collapses whitespace runs, trims, and cuts at [`MAX_TITLE_BYTES`] on a
/// character boundary.
fn clean_title(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len().min(MAX_TITLE_BYTES));
    for word in text.split_whitespace() {
        if out.len() + word.len() + 1 > MAX_TITLE_BYTES {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The page read by html5gum's full tokenizer, as `fetch` did before
    /// the scanner: the reference the scanner must agree with.
    fn scan_with_html5gum(body: &[u8]) -> PageInfo {
        #[derive(Clone, Copy, PartialEq)]
        enum Open {
            Other,
            Anchor { href: bool },
            Title,
        }
        let mut info = PageInfo::default();
        let mut title: Option<Vec<u8>> = None;
        let mut in_title = false;
        let mut open = Open::Other;
        let callback = |event: CallbackEvent<'_>, _: Span<()>| -> Option<()> {
            match event {
                CallbackEvent::OpenStartTag { name } => {
                    open = match name {
                        b"a" => Open::Anchor { href: false },
                        b"title" if title.is_none() => Open::Title,
                        _ => Open::Other,
                    };
                }
                CallbackEvent::AttributeName { name: b"href" } => {
                    if let Open::Anchor { href } = &mut open {
                        *href = true;
                    }
                }
                // Counted when the start tag is complete: an end tag's
                // attributes come after it, and a tag the page cuts off
                // is no tag.
                CallbackEvent::CloseStartTag { .. } => {
                    match open {
                        Open::Anchor { href: true } => info.links += 1,
                        Open::Title => {
                            title = Some(Vec::new());
                            in_title = true;
                        }
                        _ => {}
                    }
                    open = Open::Other;
                }
                CallbackEvent::String { value } if in_title => {
                    if let Some(text) = title.as_mut() {
                        text.extend_from_slice(value);
                    }
                }
                CallbackEvent::EndTag { .. } => in_title = false,
                _ => {}
            }
            None
        };
        let mut emitter = CallbackEmitter::new(callback);
        emitter.naively_switch_states(true);
        Tokenizer::new_with_emitter(body, emitter).for_each(drop);
        info.title = title.map(|raw| clean_title(&raw));
        info
    }

    /// Pieces of markup, most of them places where a scanner could go
    /// wrong: quotes, comments, raw text, script escapes, cut-off tags.
    const PIECES: &[&str] = &[
        "<a",
        "<A",
        " href",
        "HREF",
        "=",
        "\"",
        "'",
        ">",
        "/",
        " ",
        "\n",
        "\t",
        "x",
        "-",
        "!",
        "<",
        "</",
        "</a>",
        "<a href=/x>",
        "<!--",
        "-->",
        "--!>",
        "<!",
        "<?",
        "<!doctype html>",
        "<script>",
        "</script>",
        "<script",
        "</SCRIPT",
        "<style>",
        "</style>",
        "<title>",
        "</title>",
        "</TITLE ",
        "<textarea>",
        "</textarea>",
        "&amp;",
        "&lt;",
        "&eacute",
        "&#39;",
        "\r",
        "\x0c",
        "<p>",
        "<link href=x>",
        "<b>",
        "<![CDATA[",
        "]]>",
        "<plaintext>",
        "<xmp>",
        "</xmp>",
        "<noscript>",
        "</noscript>",
        "\u{e9}",
        "<a\thref>",
        "<ahref>",
    ];

    fn markup() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 0..40)
            .prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The scanner finds what the full tokenizer finds.
        #[test]
        fn agrees_with_html5gum(page in markup()) {
            prop_assert_eq!(scan_html(page.as_bytes()), scan_with_html5gum(page.as_bytes()), "{:?}", page);
        }

        /// Any bytes at all: no panic, and the same answer.
        #[test]
        fn agrees_with_html5gum_on_any_bytes(page in prop::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(scan_html(&page), scan_with_html5gum(&page));
        }
    }

    #[test]
    fn agrees_with_html5gum_on_the_benchmark_like_page() {
        let mut page = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Page 7: a &amp; b</title>\
             <link rel=\"stylesheet\" href=\"/style.css\"></head><body><nav><ul>",
        );
        for k in 0..30 {
            page += &format!("<li><a href=\"/page/{k}\">word {k}</a></li>");
        }
        page += "</ul></nav><main><p>text text</p></main></body></html>\n";
        let info = scan_html(page.as_bytes());
        assert_eq!(info.links, 30);
        assert_eq!(info.title.as_deref(), Some("Page 7: a & b"));
        assert_eq!(info, scan_with_html5gum(page.as_bytes()));
    }

    #[test]
    fn script_escapes_hide_their_end_tags() {
        // After `<!--` inside a script, `<script>` starts a part where
        // `</script>` does not end the script; `-->` ends that part.
        let page = b"<script><!--<script></script><a href=1>--></script><a href=2>";
        assert_eq!(scan_html(page).links, 1);
        let page = b"<script><!--</script><a href=1>";
        assert_eq!(scan_html(page).links, 1);
        let page = b"<script><!--><script></script><a href=1>";
        assert_eq!(scan_html(page).links, 1);
    }

    #[test]
    fn comments_end_where_the_tokenizer_ends_them() {
        for (page, links) in [
            (&b"<!--><a href=1>"[..], 1),
            (b"<!---><a href=1>", 1),
            (b"<!-- --!><a href=1>", 1),
            (b"<!-- ---><a href=1>", 1),
            (b"<!-- -- ><a href=1> -->", 0),
            (b"<!doctype html \"a>b\"><a href=1>", 1),
            (b"<![CDATA[<a href=1>]]><a href=2>", 1),
        ] {
            assert_eq!(
                scan_html(page).links,
                links,
                "{}",
                String::from_utf8_lossy(page)
            );
        }
    }

    #[test]
    fn end_tags_and_cut_off_tags_are_no_links() {
        assert_eq!(scan_html(b"<a></a href=x>").links, 0);
        assert_eq!(scan_html(b"<a href=x").links, 0);
        assert_eq!(scan_html(b"<a href=\"x>").links, 0);
    }

    #[test]
    fn title_with_entities_and_whitespace() {
        let page = b"<html><head><TITLE>\n  Tom &amp; Jerry &lt;3 &quot;q&quot; &#39;s\n\t caf&eacute; </TITLE></head></html>";
        assert_eq!(
            scan_html(page).title.as_deref(),
            Some("Tom & Jerry <3 \"q\" 's caf\u{e9}")
        );
    }

    #[test]
    fn tags_inside_the_title_are_text() {
        let page = b"<title>a <b>bold</b> claim</title>";
        assert_eq!(
            scan_html(page).title.as_deref(),
            Some("a <b>bold</b> claim")
        );
    }

    #[test]
    fn no_title_is_none_and_an_empty_one_is_empty() {
        assert_eq!(scan_html(b"<p>hello</p>").title, None);
        assert_eq!(scan_html(b"<title>  </title>").title.as_deref(), Some(""));
        let two = scan_html(b"<title>first</title><title>second</title>");
        assert_eq!(two.title.as_deref(), Some("first"));
    }

    #[test]
    fn counts_anchors_with_href_only() {
        let page = br#"<a href="/1">1</a> <A HREF=/2>2</A> <a name="x">no</a>
            <a href="/3" href="/dup">3</a> <link href="/style.css">
            <!-- <a href="/comment"> -->
            <script>document.write('<a href="/script">')</script>
            <style>a[href] { color: red }</style>
            <textarea><a href="/textarea"></textarea>
            <a
              class="x" href='/4'>4</a>"#;
        assert_eq!(scan_html(page).links, 4);
    }

    #[test]
    fn broken_markup_and_bad_utf8_do_not_stop_it() {
        let page = b"<title>caf\xe9</title><a href=/1><a href=\"/2\n<p <a href=/3>";
        let info = scan_html(page);
        assert_eq!(info.title.as_deref(), Some("caf\u{fffd}"));
        assert!(info.links >= 1);
        assert_eq!(scan_html(b"").links, 0);
        assert_eq!(
            scan_html(b"<title>unclosed").title.as_deref(),
            Some("unclosed")
        );
    }

    #[test]
    fn long_titles_are_cut() {
        let page = format!("<title>{}</title>", "word ".repeat(10_000));
        let title = scan_html(page.as_bytes()).title.unwrap();
        assert!(title.len() <= MAX_TITLE_BYTES && title.len() > MAX_TITLE_BYTES - 10);
    }
}
