//! Just enough JSON for the benchmarks, without serde: an [`ObjectWriter`] for the one-line rows
//! that `compare --json` prints, and a small recursive-descent [`Json::parse`] for reading fio's
//! `--output-format=json` report and for checking the rows in tests.

use std::fmt::Write as _;

/// A parsed JSON value. Objects keep their keys in document order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// Any number, as `f64`.
    Number(f64),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, as key-value pairs in document order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses one JSON document; trailing whitespace is allowed, trailing text is not.
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value()?;
        parser.skip_whitespace();
        if parser.at != parser.bytes.len() {
            return Err(format!("trailing text at byte {}", parser.at));
        }
        Ok(value)
    }

    /// The value under `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(name, _)| name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The element at `index`, if this is an array that long.
    pub fn at(&self, index: usize) -> Option<&Json> {
        match self {
            Json::Array(items) => items.get(index),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(number) => Some(*number),
            _ => None,
        }
    }

    /// The string, if this is one.
    #[cfg_attr(not(test), allow(dead_code))] // only the quick-run test reads strings
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(text) => Some(text),
            _ => None,
        }
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_whitespace(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn expect(&mut self, literal: &str) -> Result<(), String> {
        if self.bytes[self.at..].starts_with(literal.as_bytes()) {
            self.at += literal.len();
            Ok(())
        } else {
            Err(format!("expected `{literal}` at byte {}", self.at))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.skip_whitespace();
        match self.bytes.get(self.at) {
            None => Err("unexpected end of input".to_owned()),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.expect("true").map(|()| Json::Bool(true)),
            Some(b'f') => self.expect("false").map(|()| Json::Bool(false)),
            Some(b'n') => self.expect("null").map(|()| Json::Null),
            Some(_) => self.number(),
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.expect("{")?;
        let mut fields = Vec::new();
        self.skip_whitespace();
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
            return Ok(Json::Object(fields));
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            self.skip_whitespace();
            self.expect(":")?;
            fields.push((key, self.value()?));
            self.skip_whitespace();
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(fields));
                }
                _ => return Err(format!("expected `,` or `}}` at byte {}", self.at)),
            }
        }
    }

    fn array(&mut self) -> Result<Json, String> {
        self.expect("[")?;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.bytes.get(self.at) == Some(&b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_whitespace();
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(format!("expected `,` or `]` at byte {}", self.at)),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect("\"")?;
        let mut text = String::new();
        loop {
            let start = self.at;
            while self
                .bytes
                .get(self.at)
                .is_some_and(|b| *b != b'"' && *b != b'\\')
            {
                self.at += 1;
            }
            let run =
                std::str::from_utf8(&self.bytes[start..self.at]).map_err(|e| e.to_string())?;
            text.push_str(run);
            match self.bytes.get(self.at) {
                None => return Err("unterminated string".to_owned()),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(text);
                }
                Some(_) => {
                    let escape = *self.bytes.get(self.at + 1).ok_or("unterminated escape")?;
                    self.at += 2;
                    match escape {
                        b'"' => text.push('"'),
                        b'\\' => text.push('\\'),
                        b'/' => text.push('/'),
                        b'b' => text.push('\u{8}'),
                        b'f' => text.push('\u{c}'),
                        b'n' => text.push('\n'),
                        b'r' => text.push('\r'),
                        b't' => text.push('\t'),
                        b'u' => {
                            let hex = self
                                .bytes
                                .get(self.at..self.at + 4)
                                .ok_or("short \\u escape")?;
                            let hex = std::str::from_utf8(hex).map_err(|e| e.to_string())?;
                            let code = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            self.at += 4;
                            text.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        other => return Err(format!("bad escape `\\{}`", other as char)),
                    }
                }
            }
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).map_err(|e| e.to_string())?;
        text.parse::<f64>()
            .map(Json::Number)
            .map_err(|_| format!("bad number `{text}` at byte {start}"))
    }
}

/// Writes one JSON object on one line, field by field.
#[derive(Debug)]
pub struct ObjectWriter {
    text: String,
    empty: bool,
}

impl Default for ObjectWriter {
    fn default() -> ObjectWriter {
        ObjectWriter {
            text: String::from("{"),
            empty: true,
        }
    }
}

impl ObjectWriter {
    fn key(&mut self, key: &str) {
        if !self.empty {
            self.text.push(',');
        }
        self.empty = false;
        write_string(&mut self.text, key);
        self.text.push(':');
    }

    /// Adds a string field.
    pub fn string(&mut self, key: &str, value: &str) -> &mut ObjectWriter {
        self.key(key);
        write_string(&mut self.text, value);
        self
    }

    /// Adds a number field; non-finite numbers become `null`.
    pub fn number(&mut self, key: &str, value: f64) -> &mut ObjectWriter {
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.text, "{value}");
        } else {
            self.text.push_str("null");
        }
        self
    }

    /// Adds a number field, or `null` for `None`.
    pub fn optional_number(&mut self, key: &str, value: Option<f64>) -> &mut ObjectWriter {
        match value {
            Some(value) => self.number(key, value),
            None => self.null(key),
        }
    }

    /// Adds a string field, or `null` for `None`.
    pub fn optional_string(&mut self, key: &str, value: Option<&str>) -> &mut ObjectWriter {
        match value {
            Some(value) => self.string(key, value),
            None => self.null(key),
        }
    }

    /// Adds a `null` field.
    pub fn null(&mut self, key: &str) -> &mut ObjectWriter {
        self.key(key);
        self.text.push_str("null");
        self
    }

    /// Closes the object and returns its text.
    pub fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.text);
        text.push('}');
        text
    }
}

fn write_string(out: &mut String, value: &str) {
    out.push('"');
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ch if (ch as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", ch as u32);
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
}

// Written without `use`: bench binaries build with `cfg(test)` but no test harness, so an import
// used only by `#[test]` functions would be reported unused there.
#[cfg(test)]
mod tests {
    #[test]
    fn written_objects_parse_back() {
        let line = super::ObjectWriter::default()
            .string("name", "a \"quoted\"\tname")
            .number("iops", 93000.5)
            .optional_number("p99_us", None)
            .finish();
        let parsed = super::Json::parse(&line).unwrap();
        assert_eq!(
            parsed.get("name").and_then(super::Json::as_str),
            Some("a \"quoted\"\tname")
        );
        assert_eq!(
            parsed.get("iops").and_then(super::Json::as_f64),
            Some(93000.5)
        );
        assert_eq!(parsed.get("p99_us"), Some(&super::Json::Null));
    }

    #[test]
    fn parses_nested_fio_shape() {
        let text =
            r#"{"jobs":[{"read":{"iops":1.5e3,"clat_ns":{"percentile":{"50.000000":41216}}}}]}"#;
        let parsed = super::Json::parse(text).unwrap();
        let read = parsed
            .get("jobs")
            .and_then(|jobs| jobs.at(0))
            .and_then(|job| job.get("read"));
        assert_eq!(
            read.and_then(|r| r.get("iops"))
                .and_then(super::Json::as_f64),
            Some(1500.0)
        );
        let p50 = read
            .and_then(|r| r.get("clat_ns"))
            .and_then(|c| c.get("percentile"))
            .and_then(|p| p.get("50.000000"))
            .and_then(super::Json::as_f64);
        assert_eq!(p50, Some(41216.0));
    }
}
