//! The CPU part of `fetch`: a page's `<title>` and link count, read with a
//! WHATWG tokenizer (html5gum) through its borrowing callback API.

use html5gum::emitters::callback::{CallbackEmitter, CallbackEvent};
use html5gum::{Emitter, ForwardingEmitter, Span, Tokenizer};

/// Longest title kept, in bytes; a page can put megabytes in its title, and
/// the record should stay a line a person can read.
pub const MAX_TITLE_BYTES: usize = 4096;

/// What a page says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageInfo {
    /// The text of the first `<title>`, entities decoded, whitespace runs
    /// collapsed to one space and trimmed; `None` without a `<title>`.
    pub title: Option<String>,
    /// `<a>` elements with an `href` attribute.
    pub links: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Other,
    /// An `<a>` start tag; `true` once its `href` was counted.
    Anchor(bool),
    Title,
}

/// Reads `<title>` and counts `<a href>` links. The tokenizer switches to
/// raw-text states after `<script>`, `<style>` and `<title>` (its "naive"
/// state switching), so markup inside scripts and comments is not counted.
/// Invalid UTF-8 is replaced, as a browser would show it.
pub fn scan_html(body: &[u8]) -> PageInfo {
    let mut info = PageInfo::default();
    let mut title: Option<Vec<u8>> = None;
    let mut in_title = false;
    let mut open = Open::Other;
    let callback = |event: CallbackEvent<'_>, _: Span<()>| -> Option<()> {
        match event {
            CallbackEvent::OpenStartTag { name } => {
                open = match name {
                    b"a" => Open::Anchor(false),
                    b"title" if title.is_none() => Open::Title,
                    _ => Open::Other,
                };
            }
            CallbackEvent::AttributeName { name: b"href" } if open == Open::Anchor(false) => {
                info.links += 1;
                open = Open::Anchor(true);
            }
            CallbackEvent::CloseStartTag { .. } if open == Open::Title => {
                title = Some(Vec::new());
                in_title = true;
            }
            CallbackEvent::String { value } if in_title => {
                if let Some(text) = title.as_mut() {
                    let room = (MAX_TITLE_BYTES * 2).saturating_sub(text.len());
                    text.extend_from_slice(&value[..value.len().min(room)]);
                }
            }
            CallbackEvent::EndTag { .. } => in_title = false,
            _ => {}
        }
        None
    };
    let mut emitter = CallbackEmitter::new(callback);
    emitter.naively_switch_states(true);
    // The callback keeps all state; the iterator only drives the tokenizer.
    Tokenizer::new_with_emitter(body, WithoutErrors(emitter)).for_each(drop);
    info.title = title.map(|raw| clean_title(&raw));
    info
}

/// An emitter that tells the tokenizer we read no parse errors, so it
/// skips checking every byte for them (a fifth of the scan's time).
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
