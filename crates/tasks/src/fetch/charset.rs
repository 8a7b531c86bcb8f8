//! Which character encoding a page is in, in the HTML standard's order: a
//! byte order mark, then the `charset` of the `Content-Type` header, then a
//! `<meta>` near the top of the page; UTF-8 when none says.

use encoding_rs::{Encoding, WINDOWS_1252, X_USER_DEFINED};

/// How far into a page a `<meta>` may declare its encoding: the standard's
/// prescan reads the first 1,024 bytes.
pub const META_WITHIN: usize = 1024;

/// The encoding a byte order mark at the start of `body` names.
pub fn of_bom(body: &[u8]) -> Option<&'static Encoding> {
    Encoding::for_bom(body).map(|(encoding, _)| encoding)
}

/// The encoding in a `Content-Type` value such as
/// `text/html; charset="windows-1251"`; unknown labels are none.
pub fn of_content_type(content_type: &str) -> Option<&'static Encoding> {
    Encoding::for_label(charset_in(content_type.as_bytes())?)
}

/// The encoding a `<meta>` declares: its `charset` attribute, or
/// `http-equiv="content-type"` with a `content` that names a charset.
/// As in browsers, a meta cannot switch a page to UTF-16 (the markup was
/// just read as ASCII) and `x-user-defined` means windows-1252.
pub fn of_meta(
    charset: Option<&[u8]>,
    http_equiv: Option<&[u8]>,
    content: Option<&[u8]>,
) -> Option<&'static Encoding> {
    let label = match charset {
        Some(label) => label,
        None if http_equiv
            .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"content-type")) =>
        {
            charset_in(content?)?
        }
        None => return None,
    };
    let encoding = Encoding::for_label(label)?;
    Some(if encoding == X_USER_DEFINED {
        WINDOWS_1252
    } else {
        encoding.output_encoding()
    })
}

/// The value after `charset=` (spaces allowed around `=`, quotes
/// optional), as the standard extracts it from a meta's `content`.
fn charset_in(text: &[u8]) -> Option<&[u8]> {
    let mut rest = text;
    loop {
        let at = rest
            .windows(7)
            .position(|w| w.eq_ignore_ascii_case(b"charset"))?;
        rest = rest[at + 7..].trim_ascii_start();
        if let Some(value) = rest.strip_prefix(b"=") {
            rest = value.trim_ascii_start();
            break;
        }
    }
    match rest.first()? {
        &quote @ (b'"' | b'\'') => {
            let value = &rest[1..];
            let end = value.iter().position(|&b| b == quote)?;
            Some(&value[..end])
        }
        _ => {
            let end = rest
                .iter()
                .position(|&b| b.is_ascii_whitespace() || b == b';')
                .unwrap_or(rest.len());
            Some(&rest[..end]).filter(|value| !value.is_empty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::{SHIFT_JIS, UTF_16LE, UTF_8, WINDOWS_1251};

    #[test]
    fn content_type_charsets() {
        for (value, expected) in [
            ("text/html; charset=windows-1251", Some(WINDOWS_1251)),
            ("text/html;charset=\"Shift_JIS\"", Some(SHIFT_JIS)),
            ("text/html; CHARSET = 'utf-8' ; q=1", Some(UTF_8)),
            ("text/html; charset=latin1", Some(WINDOWS_1252)),
            ("text/html", None),
            ("text/html; charset=", None),
            ("text/html; charset=no-such-thing", None),
            ("text/html; charset=\"unclosed", None),
        ] {
            assert_eq!(of_content_type(value), expected, "{value}");
        }
    }

    #[test]
    fn meta_declarations() {
        assert_eq!(of_meta(Some(b"Shift_JIS"), None, None), Some(SHIFT_JIS));
        let content = Some(&b"text/html; charset=windows-1251"[..]);
        assert_eq!(
            of_meta(None, Some(b" Content-Type "), content),
            Some(WINDOWS_1251)
        );
        // Without http-equiv a content attribute says nothing.
        assert_eq!(of_meta(None, None, content), None);
        assert_eq!(of_meta(None, Some(b"refresh"), content), None);
        // A "charset" without `=` after it is passed over.
        let tricky = Some(&b"charsetx; charset=utf-8"[..]);
        assert_eq!(of_meta(None, Some(b"content-type"), tricky), Some(UTF_8));
        let later = Some(&b"a charset b; charset=koi8-r"[..]);
        assert_eq!(
            of_meta(None, Some(b"content-type"), later).map(|e| e.name()),
            Some("KOI8-R")
        );
        assert_eq!(of_meta(Some(b"utf-16le"), None, None), Some(UTF_8));
        assert_eq!(
            of_meta(Some(b"x-user-defined"), None, None),
            Some(WINDOWS_1252)
        );
    }

    #[test]
    fn byte_order_marks() {
        assert_eq!(of_bom(b"\xef\xbb\xbf<html>"), Some(UTF_8));
        assert_eq!(of_bom(b"\xff\xfe<\0"), Some(UTF_16LE));
        assert_eq!(of_bom(b"<html>"), None);
    }
}
