//! Writes JSON the way Go's `encoding/json` does, byte for byte: compact, fields in declaration
//! order, map keys sorted, `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u00XX` / `\u20XX`.
//! Also the lenient readers for Go's quirks (`,string` integers, doubly-encoded strings).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Deserializer};

/// Appends `s` as a JSON string literal with Go's escaping (HTML-safe).
pub fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `s` encoded as a JSON string literal (Go rules), as an owned string.
pub fn string_literal(s: &str) -> String {
    let mut out = String::new();
    push_string(&mut out, s);
    out
}

/// Builds one JSON object field by field, in the order the caller writes them.
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub fn open(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_string(self.out, key);
        self.out.push(':');
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_string(self.out, value);
        self
    }

    /// An integer with Go's `,string` option: `"Size":"2097152"`.
    pub fn int_as_str(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        let _ = write!(self.out, "\"{value}\"");
        self
    }

    /// A string with Go's `,string` option: JSON-encoded twice, `"\"lz4\""`.
    pub fn double_str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_string(self.out, &string_literal(value));
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// A `map[string]string`: `null` when nil, keys sorted.
    pub fn map(&mut self, key: &str, value: Option<&BTreeMap<String, String>>) -> &mut Self {
        self.key(key);
        match value {
            None => self.out.push_str("null"),
            Some(map) => {
                let mut inner = Obj::open(self.out);
                for (k, v) in map {
                    inner.str(k, v);
                }
                inner.close();
            }
        }
        self
    }

    /// A field whose value the caller writes raw through `f`.
    pub fn raw(&mut self, key: &str, f: impl FnOnce(&mut String)) -> &mut Self {
        self.key(key);
        f(self.out);
        self
    }

    pub fn close(&mut self) {
        self.out.push('}');
    }
}

/// Reads an integer written with Go's `,string` option, also accepting a bare number.
pub fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrStr {
        Int(i64),
        Str(String),
        Null(()),
    }
    match IntOrStr::deserialize(d)? {
        IntOrStr::Int(i) => Ok(i),
        IntOrStr::Null(()) => Ok(0),
        IntOrStr::Str(s) if s.is_empty() => Ok(0),
        IntOrStr::Str(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer"))),
    }
}

/// Reads a string written with Go's `,string` option (`"\"lz4\""`), also accepting a plain one.
pub fn lenient_double_str<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = Option::<String>::deserialize(d)?.unwrap_or_default();
    Ok(undouble(&s))
}

/// The inner string of a doubly-encoded string, or `s` itself if it is not one.
pub fn undouble(s: &str) -> String {
    if s.starts_with('"')
        && let Ok(inner) = serde_json::from_str::<String>(s)
    {
        return inner;
    }
    s.to_string()
}

/// Reads a string that may be `null`.
pub fn lenient_str<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_like_go() {
        assert_eq!(string_literal("a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
        assert_eq!(string_literal("q\"\\\n\t\u{1}"), r#""q\"\\\n\t\u0001""#);
        assert_eq!(string_literal("\u{2028}é"), "\"\\u2028é\"");
    }

    #[test]
    fn double_encoding_nests_escapes() {
        let mut out = String::new();
        Obj::open(&mut out)
            .double_str("A", "lz4")
            .double_str("B", "")
            .close();
        assert_eq!(out, r#"{"A":"\"lz4\"","B":"\"\""}"#);
        assert_eq!(undouble(r#""lz4""#), "lz4");
        assert_eq!(undouble("lz4"), "lz4");
        assert_eq!(undouble(r#""""#), "");
    }
}
