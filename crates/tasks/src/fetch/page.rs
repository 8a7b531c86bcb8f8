//! The CPU part of `fetch`: a page's `<title>`, link count and (for
//! `--follow`) links and `<base href>`, found by the markup scanner
//! (`markup.rs`) in the page's character encoding (`charset.rs`); html5gum
//! decodes character references in the title and in attribute values.

use super::charset;
use super::markup::{Attributes, Scanner, Tag, Value};
use encoding_rs::{Encoding, UTF_8};
use html5gum::emitters::callback::{CallbackEmitter, CallbackEvent};
use html5gum::{Emitter, ForwardingEmitter, Span, State, Tokenizer};

/// Longest title kept, in bytes; a page can put megabytes in its title, and
/// the record should stay a line a person can read.
pub const MAX_TITLE_BYTES: usize = 4096;

/// What a page says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageInfo {
    /// The text of the first `<title>`, entities decoded, whitespace runs
    /// collapsed to one space and trimmed; `None` without a `<title>`.
    pub title: Option<String>,
    /// `<a>` and `<area>` start tags with an `href` attribute.
    pub links: u64,
}

/// A page's links, read only when asked (`--follow`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageLinks {
    /// The first `<base href>`'s value, decoded: what relative links
    /// resolve against, itself relative to the page's URL.
    pub base: Option<String>,
    /// Every `<a href>` and `<area href>`, in page order.
    pub hrefs: Vec<Href>,
}

/// One link as the page wrote it, character references decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Href {
    pub href: String,
    /// `rel` names `nofollow` among its space-separated tokens.
    pub nofollow: bool,
}

/// Reads `<title>` and counts `<a href>` links. After `<script>`, `<style>`,
/// `<title>`, `<textarea>` and the other raw-text elements the scanner
/// skips to their end tag (the tokenizer's "naive" state switching, as
/// html5gum and lol-html do it), so markup inside scripts and comments is
/// not counted. The title is decoded from the page's encoding (see
/// [`charset`]: a byte order mark, the `Content-Type` header's charset, a
/// `<meta>` in the first 1,024 bytes, else UTF-8); bytes invalid in it are
/// replaced, as a browser would show them.
///
/// Why not html5gum for all of it: a full tokenizer handles every byte of
/// the page through its state machine and cost a seventh of the worker's
/// CPU per page; this scanner jumps from `<` to `<` with memchr and is
/// checked against html5gum by a property test.
pub fn scan_html(body: &[u8], content_type: Option<&str>) -> PageInfo {
    scan_page(body, content_type, false).0
}

/// [`scan_html`], and the page's links and `<base href>` too: the scan of
/// `--follow`. Links are decoded from the page's encoding, and their
/// character references as the tokenizer decodes attribute values
/// (`&amp;` is `&`, but `?a=1&copy=2` keeps its `&copy`).
pub fn scan_html_links(body: &[u8], content_type: Option<&str>) -> (PageInfo, PageLinks) {
    scan_page(body, content_type, true)
}

fn scan_page(body: &[u8], content_type: Option<&str>, links: bool) -> (PageInfo, PageLinks) {
    let declared =
        charset::of_bom(body).or_else(|| content_type.and_then(charset::of_content_type));
    match declared {
        // UTF-16: not even the markup is ASCII; read it as UTF-8.
        Some(encoding) if !encoding.is_ascii_compatible() => {
            let (text, _) = encoding.decode_with_bom_removal(body);
            scan(text.as_bytes(), Some(UTF_8), links)
        }
        _ => scan(body, declared, links),
    }
}

/// The scan of an ASCII-compatible page, in `declared` or else the
/// encoding its `<meta>` names; links are kept when `keep_links`.
fn scan(
    body: &[u8],
    declared: Option<&'static Encoding>,
    keep_links: bool,
) -> (PageInfo, PageLinks) {
    let mut scanner = Scanner::new(body);
    let mut info = PageInfo::default();
    let mut title = None;
    let mut meta = None;
    // Raw until the encoding is known (a `<meta>` may name it late).
    let mut hrefs: Vec<(Value<'_>, bool)> = Vec::new();
    let mut base: Option<Value<'_>> = None;
    while let Some(tag) = scanner.next_tag() {
        let Tag::Start { name, attributes } = tag else {
            continue;
        };
        let is = |element: &[u8]| name.eq_ignore_ascii_case(element);
        if (is(b"a") || is(b"area")) && attributes.href.is_some() {
            info.links += 1;
            if keep_links {
                hrefs.extend(attributes.href.map(|href| (href, is_nofollow(&attributes))));
            }
        } else if is(b"base") && keep_links && base.is_none() && attributes.href.is_some() {
            base = attributes.href;
        } else if is(b"script") {
            scanner.skip_script();
        } else if is(b"title") {
            let text = scanner.skip_raw_text(b"title");
            title.get_or_insert(text);
        } else if RAW_TEXT.iter().any(|element| is(element)) {
            scanner.skip_raw_text(name);
        } else if is(b"plaintext") {
            break;
        } else if is(b"meta") && meta.is_none() && scanner.pos <= charset::META_WITHIN {
            meta = charset::of_meta(
                attributes.charset,
                attributes.http_equiv,
                attributes.content,
            );
        }
    }
    let encoding = declared.or(meta).unwrap_or(UTF_8);
    info.title = title.map(|raw| {
        let raw = &raw[..raw.len().min(MAX_TITLE_BYTES * 2)];
        let text = encoding.decode_without_bom_handling(raw).0;
        clean_title(&decode_text(text.as_bytes()))
    });
    let links = PageLinks {
        base: base.map(|value| decode_value(value, encoding)),
        hrefs: hrefs
            .into_iter()
            .map(|(value, nofollow)| Href {
                href: decode_value(value, encoding),
                nofollow,
            })
            .collect(),
    };
    (info, links)
}

/// Whether a link's `rel` says `nofollow` (tokens are ASCII
/// case-insensitive and separated by ASCII whitespace).
fn is_nofollow(attributes: &Attributes<'_>) -> bool {
    attributes.rel.is_some_and(|rel| {
        decode_value(rel, UTF_8)
            .split_ascii_whitespace()
            .any(|token| token.eq_ignore_ascii_case("nofollow"))
    })
}

/// An attribute value as the tokenizer gives it: in the page's encoding,
/// character references decoded, CR and CRLF turned to LF and NUL to
/// U+FFFD. Values without `&`, CR or NUL (nearly all) are only decoded
/// from the encoding; the others go through html5gum, inside a tag
/// written with the value's own quote so that it ends where it did.
fn decode_value(value: Value<'_>, encoding: &'static Encoding) -> String {
    let text = encoding.decode_without_bom_handling(value.raw).0;
    if memchr::memchr3(b'&', b'\r', 0, text.as_bytes()).is_none() {
        return text.into_owned();
    }
    let quote = value.quote.map(char::from).map(String::from);
    let quote = quote.as_deref().unwrap_or("");
    let tag = format!("<a x={quote}{text}{quote}>");
    let mut decoded = Vec::with_capacity(text.len());
    let callback = |event: CallbackEvent<'_>, _: Span<()>| -> Option<()> {
        if let CallbackEvent::AttributeValue { value } = event {
            decoded.extend_from_slice(value);
        }
        None
    };
    Tokenizer::new_with_emitter(
        tag.as_bytes(),
        WithoutErrors(CallbackEmitter::new(callback)),
    )
    .for_each(drop);
    String::from_utf8_lossy(&decoded).into_owned()
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

/// The text of an RCDATA element with its character references decoded.
fn decode_text(raw: &[u8]) -> Vec<u8> {
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
    fn scan_with_html5gum(body: &[u8]) -> (PageInfo, PageLinks) {
        #[derive(Clone, Copy, PartialEq)]
        enum Open {
            Other,
            Link,
            Base,
            Title,
        }
        #[derive(Clone, Copy, PartialEq)]
        enum Attribute {
            Other,
            Href,
            Rel,
        }
        let mut info = PageInfo::default();
        let mut links = PageLinks::default();
        let mut title: Option<Vec<u8>> = None;
        let mut in_title = false;
        let mut open = Open::Other;
        // The first of each name, as the tokenizer keeps it.
        let mut href: Option<Vec<u8>> = None;
        let mut rel: Option<Vec<u8>> = None;
        let mut attribute = Attribute::Other;
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let callback = |event: CallbackEvent<'_>, _: Span<()>| -> Option<()> {
            match event {
                CallbackEvent::OpenStartTag { name } => {
                    open = match name {
                        b"a" | b"area" => Open::Link,
                        b"base" => Open::Base,
                        b"title" if title.is_none() => Open::Title,
                        _ => Open::Other,
                    };
                    (href, rel, attribute) = (None, None, Attribute::Other);
                }
                CallbackEvent::AttributeName { name } => {
                    attribute = match name {
                        b"href" if href.is_none() => {
                            href = Some(Vec::new());
                            Attribute::Href
                        }
                        b"rel" if rel.is_none() => {
                            rel = Some(Vec::new());
                            Attribute::Rel
                        }
                        _ => Attribute::Other,
                    };
                }
                CallbackEvent::AttributeValue { value } => {
                    let slot = match attribute {
                        Attribute::Href => href.as_mut(),
                        Attribute::Rel => rel.as_mut(),
                        Attribute::Other => None,
                    };
                    if let Some(slot) = slot {
                        slot.extend_from_slice(value);
                    }
                }
                // Counted when the start tag is complete: an end tag's
                // attributes come after it, and a tag the page cuts off
                // is no tag.
                CallbackEvent::CloseStartTag { .. } => {
                    match (open, &href) {
                        (Open::Link, Some(value)) => {
                            info.links += 1;
                            let nofollow = rel.as_deref().is_some_and(|rel| {
                                text(rel)
                                    .split_ascii_whitespace()
                                    .any(|t| t.eq_ignore_ascii_case("nofollow"))
                            });
                            links.hrefs.push(Href {
                                href: text(value),
                                nofollow,
                            });
                        }
                        (Open::Base, Some(value)) if links.base.is_none() => {
                            links.base = Some(text(value));
                        }
                        (Open::Title, _) => {
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
        (info, links)
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
        "<area",
        "<base",
        "<base href=/b/>",
        " rel",
        "=nofollow",
        " NoFollow",
        "?a=1",
        "&copy",
        "&copy;",
        "&amp",
        "&#x41;",
        "&",
        "\0",
    ];

    fn markup() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 0..40)
            .prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The scanner finds what the full tokenizer finds: title, link
        /// count, links with their `rel`, and `<base href>`.
        #[test]
        fn agrees_with_html5gum(page in markup()) {
            prop_assert_eq!(scan(page.as_bytes(), Some(UTF_8), true), scan_with_html5gum(page.as_bytes()), "{:?}", page);
        }

        /// Any bytes at all: no panic, and the same answer.
        #[test]
        fn agrees_with_html5gum_on_any_bytes(page in prop::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(scan(&page, Some(UTF_8), true), scan_with_html5gum(&page));
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
        let info = scan_html(page.as_bytes(), None);
        assert_eq!(info.links, 30);
        assert_eq!(info.title.as_deref(), Some("Page 7: a & b"));
        assert_eq!(info, scan_with_html5gum(page.as_bytes()).0);
    }

    #[test]
    fn titles_are_read_in_the_page_encoding() {
        // "Привет & мир" in windows-1251, declared by the header.
        let page = b"<title>\xcf\xf0\xe8\xe2\xe5\xf2 &amp; \xec\xe8\xf0</title><a href=1>";
        let info = scan_html(page, Some("text/html; charset=windows-1251"));
        assert_eq!(info.title.as_deref(), Some("Привет & мир"));
        assert_eq!(info.links, 1);
        // "日本" in Shift_JIS, declared by a meta; then by http-equiv.
        let page = b"<head><meta charset=\"shift_jis\"><title>\x93\xfa\x96\x7b</title>";
        assert_eq!(
            scan_html(page, Some("text/html")).title.as_deref(),
            Some("日本")
        );
        let page = b"<meta http-equiv=Content-Type content='text/html; charset=Shift_JIS'>\
                     <title>\x93\xfa\x96\x7b</title>";
        assert_eq!(scan_html(page, None).title.as_deref(), Some("日本"));
        // The header is stronger than the meta.
        let page = b"<meta charset=shift_jis><title>caf\xe9</title>";
        let info = scan_html(page, Some("text/html; charset=iso-8859-1"));
        assert_eq!(info.title.as_deref(), Some("café"));
    }

    #[test]
    fn a_meta_counts_in_the_first_kilobyte_only() {
        let late = format!(
            "<!-- {} --><meta charset=windows-1251><title>\u{e9}</title>",
            "x".repeat(1100)
        );
        assert_eq!(
            scan_html(late.as_bytes(), None).title.as_deref(),
            Some("\u{e9}")
        );
        let early = b"<meta charset=windows-1251><title>\xe9</title>";
        assert_eq!(scan_html(early, None).title.as_deref(), Some("\u{439}"));
        // A meta naming UTF-16 means UTF-8: the page was just read as ASCII.
        let page = b"<meta charset=utf-16><title>caf\xc3\xa9</title>";
        assert_eq!(scan_html(page, None).title.as_deref(), Some("café"));
    }

    #[test]
    fn utf16_pages_are_read_too() {
        let text = "<title>Grüße</title><a href=x>1</a>";
        let mut page = vec![0xff, 0xfe];
        page.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let info = scan_html(&page, None);
        assert_eq!(info.title.as_deref(), Some("Grüße"));
        assert_eq!(info.links, 1);
        // Declared by the header, without a byte order mark.
        let page: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let info = scan_html(&page, Some("text/html; charset=utf-16be"));
        assert_eq!(info.title.as_deref(), Some("Grüße"));
    }

    #[test]
    fn script_escapes_hide_their_end_tags() {
        // After `<!--` inside a script, `<script>` starts a part where
        // `</script>` does not end the script; `-->` ends that part.
        let page = b"<script><!--<script></script><a href=1>--></script><a href=2>";
        assert_eq!(scan_html(page, None).links, 1);
        let page = b"<script><!--</script><a href=1>";
        assert_eq!(scan_html(page, None).links, 1);
        let page = b"<script><!--><script></script><a href=1>";
        assert_eq!(scan_html(page, None).links, 1);
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
                scan_html(page, None).links,
                links,
                "{}",
                String::from_utf8_lossy(page)
            );
        }
    }

    #[test]
    fn links_base_and_nofollow_are_read_for_follow() {
        let page = b"<a href='/a?x=1&amp;y=2&copy=3&copy;'>1</a><base href=/first/>\
                     <area href=map REL='Help NOFOLLOW'><base href=/second/>\
                     <a name=x>no href</a><link href=/style.css><a href=\"\">empty</a>";
        let (info, links) = scan_html_links(page, None);
        assert_eq!(info.links, 3);
        assert_eq!(links.base.as_deref(), Some("/first/"));
        let hrefs: Vec<(&str, bool)> = links
            .hrefs
            .iter()
            .map(|h| (h.href.as_str(), h.nofollow))
            .collect();
        // In an attribute, `&copy=` stays as written (the legacy rule),
        // `&copy;` does not.
        assert_eq!(
            hrefs,
            [
                ("/a?x=1&y=2&copy=3\u{a9}", false),
                ("map", true),
                ("", false)
            ]
        );
        // Links are decoded from the page's encoding.
        let page = b"<a href=\"/\xef\xf0\xe8\">x</a>";
        let (_, links) = scan_html_links(page, Some("text/html; charset=windows-1251"));
        assert_eq!(links.hrefs[0].href, "/\u{43f}\u{440}\u{438}");
        // Without --follow nothing is kept.
        assert_eq!(scan_html(page, None).links, 1);
    }

    #[test]
    fn end_tags_and_cut_off_tags_are_no_links() {
        assert_eq!(scan_html(b"<a></a href=x>", None).links, 0);
        assert_eq!(scan_html(b"<a href=x", None).links, 0);
        assert_eq!(scan_html(b"<a href=\"x>", None).links, 0);
    }

    #[test]
    fn title_with_entities_and_whitespace() {
        let page = b"<html><head><TITLE>\n  Tom &amp; Jerry &lt;3 &quot;q&quot; &#39;s\n\t caf&eacute; </TITLE></head></html>";
        assert_eq!(
            scan_html(page, None).title.as_deref(),
            Some("Tom & Jerry <3 \"q\" 's caf\u{e9}")
        );
    }

    #[test]
    fn tags_inside_the_title_are_text() {
        let page = b"<title>a <b>bold</b> claim</title>";
        assert_eq!(
            scan_html(page, None).title.as_deref(),
            Some("a <b>bold</b> claim")
        );
    }

    #[test]
    fn no_title_is_none_and_an_empty_one_is_empty() {
        assert_eq!(scan_html(b"<p>hello</p>", None).title, None);
        assert_eq!(
            scan_html(b"<title>  </title>", None).title.as_deref(),
            Some("")
        );
        let two = scan_html(b"<title>first</title><title>second</title>", None);
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
        assert_eq!(scan_html(page, None).links, 4);
    }

    #[test]
    fn broken_markup_and_bad_utf8_do_not_stop_it() {
        let page = b"<title>caf\xe9</title><a href=/1><a href=\"/2\n<p <a href=/3>";
        let info = scan_html(page, None);
        assert_eq!(info.title.as_deref(), Some("caf\u{fffd}"));
        assert!(info.links >= 1);
        assert_eq!(scan_html(b"", None).links, 0);
        assert_eq!(
            scan_html(b"<title>unclosed", None).title.as_deref(),
            Some("unclosed")
        );
    }

    #[test]
    fn long_titles_are_cut() {
        let page = format!("<title>{}</title>", "word ".repeat(10_000));
        let title = scan_html(page.as_bytes(), None).title.unwrap();
        assert!(title.len() <= MAX_TITLE_BYTES && title.len() > MAX_TITLE_BYTES - 10);
    }
}
