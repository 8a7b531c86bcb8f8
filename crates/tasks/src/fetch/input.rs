//! What a `fetch` line may say: a bare URL string, or an object with the
//! URL and optional method and headers.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// `"https://example.com/"` or
/// `{"url": "https://example.com/", "method": "HEAD", "headers": {"accept": "text/html"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchInput {
    Url(String),
    Request(FetchRequest),
}

/// The object form of a `fetch` line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub url: String,
    /// Any HTTP method, `GET` when absent; case does not matter.
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl FetchInput {
    pub fn into_request(self) -> FetchRequest {
        match self {
            FetchInput::Url(url) => FetchRequest {
                url,
                method: None,
                headers: BTreeMap::new(),
            },
            FetchInput::Request(request) => request,
        }
    }
}

// Written by hand rather than `#[serde(untagged)]`, whose only error is
// "did not match any variant": a bad line should say what is wrong with it.
impl<'de> Deserialize<'de> for FetchInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;

        impl<'de> Visitor<'de> for InputVisitor {
            type Value = FetchInput;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a URL string or an object like {"url": "https://..."}"#)
            }

            fn visit_str<E: de::Error>(self, url: &str) -> Result<FetchInput, E> {
                Ok(FetchInput::Url(url.to_string()))
            }

            fn visit_string<E: de::Error>(self, url: String) -> Result<FetchInput, E> {
                Ok(FetchInput::Url(url))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FetchInput, A::Error> {
                FetchRequest::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(FetchInput::Request)
            }
        }

        deserializer.deserialize_any(InputVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_or_an_object() {
        let bare: FetchInput = serde_json::from_str(r#""http://a/""#).unwrap();
        assert_eq!(bare, FetchInput::Url("http://a/".into()));
        let full: FetchInput =
            serde_json::from_str(r#"{"url":"http://a/","method":"head","headers":{"x":"1"}}"#)
                .unwrap();
        let request = full.into_request();
        assert_eq!(request.method.as_deref(), Some("head"));
        assert_eq!(request.headers["x"], "1");
        let short: FetchInput = serde_json::from_str(r#"{"url":"http://a/"}"#).unwrap();
        assert_eq!(short.into_request(), bare.into_request());
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let number = serde_json::from_str::<FetchInput>("5").unwrap_err();
        assert!(
            number.to_string().contains("a URL string or an object"),
            "{number}"
        );
        let typo = serde_json::from_str::<FetchInput>(r#"{"ur":"x"}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field `ur`"), "{typo}");
    }
}
