//! The query of a `bi://backing?<query>` handle: Go's `url.ParseQuery` grammar, made strict.
//!
//! Like Go: pairs are split on `&`, empty pairs (`a=1&&b=2`, a trailing `&`) are skipped, a pair without
//! `=` has an empty value, and `+` means space. Unlike Go, which drops bad pairs and carries on (so
//! Longhorn silently loses them), every problem is an error: a `;` in a pair, a bad `%` escape, an empty
//! key, a key given twice.

use crate::error::{DecodeError, snippet};
use crate::escape::{Plus, UnescapeError, encode_query_component, unescape};

/// Parses `query` into its pairs, in order, unescaped.
pub(crate) fn parse_query(query: &str) -> Result<Vec<(String, String)>, DecodeError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        if pair.contains(';') {
            return Err(DecodeError::SemicolonInQuery {
                pair: snippet(pair),
            });
        }
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        if raw_key.is_empty() {
            return Err(DecodeError::EmptyParameterName {
                pair: snippet(pair),
            });
        }
        let key = unescape(raw_key, Plus::Space)
            .map_err(|e| unescape_error(e, || "query parameter name".to_owned()))?
            .into_owned();
        let value = unescape(raw_value, Plus::Space)
            .map_err(|e| unescape_error(e, || format!("value of query parameter {key:?}")))?
            .into_owned();
        if pairs.iter().any(|(seen, _)| *seen == key) {
            return Err(DecodeError::DuplicateParameter { key: snippet(&key) });
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Writes `pairs` as `k=v&k=v`, escaped so that Go's `url.ParseQuery` reads them back unchanged.
pub(crate) fn write_query<'a>(
    out: &mut String,
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    for (index, (key, value)) in pairs.into_iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        out.push_str(&encode_query_component(key));
        out.push('=');
        out.push_str(&encode_query_component(value));
    }
}

fn unescape_error(error: UnescapeError, part: impl FnOnce() -> String) -> DecodeError {
    match error {
        UnescapeError::BadEscape { offset } => DecodeError::InvalidPercentEncoding {
            part: snippet(&part()),
            offset,
        },
        UnescapeError::NotUtf8 => DecodeError::InvalidUtf8 {
            part: snippet(&part()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_like_go() {
        assert_eq!(
            parse_query("a=1&&b&c=x+y%2Bz&").as_deref(),
            Ok(&pairs(&[("a", "1"), ("b", ""), ("c", "x y+z")])[..])
        );
        assert_eq!(parse_query("").as_deref(), Ok(&[][..]));
        assert_eq!(
            parse_query("a=b=c").as_deref(),
            Ok(&pairs(&[("a", "b=c")])[..])
        );
    }

    #[test]
    fn refuses_what_go_drops() {
        assert_eq!(
            parse_query("a=1;b=2"),
            Err(DecodeError::SemicolonInQuery {
                pair: "a=1;b=2".into()
            })
        );
        assert_eq!(
            parse_query("=1"),
            Err(DecodeError::EmptyParameterName { pair: "=1".into() })
        );
        assert_eq!(
            parse_query("a=1&a=2"),
            Err(DecodeError::DuplicateParameter { key: "a".into() })
        );
        assert_eq!(
            parse_query("a%=1"),
            Err(DecodeError::InvalidPercentEncoding {
                part: "query parameter name".into(),
                offset: 1
            })
        );
        assert_eq!(
            parse_query("a=%c3"),
            Err(DecodeError::InvalidUtf8 {
                part: "value of query parameter \"a\"".into()
            })
        );
    }

    #[test]
    fn writes_escaped_pairs() {
        let mut out = String::new();
        write_query(&mut out, [("a b", "c&d"), ("e", "")]);
        assert_eq!(out, "a+b=c%26d&e=");
    }
}
