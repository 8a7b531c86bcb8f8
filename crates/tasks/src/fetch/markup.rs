//! A scanner for HTML that follows the WHATWG tokenizer's states for
//! tags, attributes, comments, raw text and script escapes without building
//! tokens: it jumps from `<` to `<` with memchr and reads only the
//! attributes `fetch` asks about.

use memchr::{memchr, memchr2, memmem};

/// A tag the scanner finished (one cut off by the end of the page is none).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tag<'a> {
    /// The name as written (any case) and the attributes the scan reads.
    Start {
        name: &'a [u8],
        attributes: Attributes<'a>,
    },
    End,
}

/// The attributes the scan reads (the first of each name, as the
/// tokenizer keeps it): `href` and `rel` on links and `<base>`, the rest
/// on `<meta>`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Attributes<'a> {
    pub href: Option<Value<'a>>,
    pub rel: Option<Value<'a>>,
    pub charset: Option<&'a [u8]>,
    pub http_equiv: Option<&'a [u8]>,
    pub content: Option<&'a [u8]>,
}

/// An attribute's value as written, character references not decoded,
/// with the quote it was written in (`None`: unquoted, or no value), so
/// that it can be decoded exactly as the tokenizer would (`page.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Value<'a> {
    pub raw: &'a [u8],
    pub quote: Option<u8>,
}

impl<'a> Attributes<'a> {
    fn note(&mut self, name: &[u8], value: Value<'a>) {
        let slot = match name.len() {
            4 if name.eq_ignore_ascii_case(b"href") => {
                self.href.get_or_insert(value);
                return;
            }
            3 if name.eq_ignore_ascii_case(b"rel") => {
                self.rel.get_or_insert(value);
                return;
            }
            7 if name.eq_ignore_ascii_case(b"charset") => &mut self.charset,
            7 if name.eq_ignore_ascii_case(b"content") => &mut self.content,
            10 if name.eq_ignore_ascii_case(b"http-equiv") => &mut self.http_equiv,
            _ => return,
        };
        slot.get_or_insert(value.raw);
    }
}

/// A position in the page, moved forward tag by tag.
pub(super) struct Scanner<'a> {
    page: &'a [u8],
    /// Where the scan is: the byte after the last tag read.
    pub pos: usize,
}

/// Whitespace between tag names and attributes (CR included: the input
/// stream turns it into LF before tokenizing).
fn is_space(byte: u8) -> bool {
    matches!(byte, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

impl<'a> Scanner<'a> {
    pub(super) fn new(page: &'a [u8]) -> Self {
        Self { page, pos: 0 }
    }

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
    pub(super) fn next_tag(&mut self) -> Option<Tag<'a>> {
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
                    let (name, attributes) = self.tag()?;
                    return Some(Tag::Start { name, attributes });
                }
                // A `<` before anything else is text.
                _ => {}
            }
        }
    }

    /// A tag from its name (the scanner is on its first letter) to its
    /// `>`: the name and the attributes the scan reads. `None` when the
    /// page ends inside the tag, which then is no tag.
    fn tag(&mut self) -> Option<(&'a [u8], Attributes<'a>)> {
        let start = self.pos;
        while !matches!(self.peek()?, b'/' | b'>') && !self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
        let name = &self.page[start..self.pos];
        let mut attributes = Attributes::default();
        loop {
            // Before an attribute name.
            self.skip_spaces();
            match self.peek()? {
                b'>' => {
                    self.pos += 1;
                    return Some((name, attributes));
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
                    let name = &self.page[start..self.pos];
                    self.skip_spaces();
                    let value = if self.peek()? == b'=' {
                        self.pos += 1;
                        self.attribute_value()?
                    } else {
                        Value::default()
                    };
                    attributes.note(name, value);
                }
            }
        }
    }

    /// After `=`: a quoted or unquoted value. A `>` where the value
    /// should start is left for the tag to end on (an empty unquoted one).
    fn attribute_value(&mut self) -> Option<Value<'a>> {
        self.skip_spaces();
        match self.peek()? {
            quote @ (b'"' | b'\'') => {
                let start = self.pos + 1;
                let end = start + memchr(quote, &self.page[start..])?;
                self.pos = end + 1;
                Some(Value {
                    raw: &self.page[start..end],
                    quote: Some(quote),
                })
            }
            _ => {
                let start = self.pos;
                while self.peek()? != b'>' && !self.peek().is_some_and(is_space) {
                    self.pos += 1;
                }
                Some(Value {
                    raw: &self.page[start..self.pos],
                    quote: None,
                })
            }
        }
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
    pub(super) fn skip_raw_text(&mut self, name: &[u8]) -> &'a [u8] {
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
    pub(super) fn skip_script(&mut self) {
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
