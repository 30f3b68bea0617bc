//! A small strict JSON reader for the tests that read what the server and the bench print
//! (the introspection endpoints, `fanout bench --json`).

#![allow(dead_code)] // each test crate uses some of it

use std::collections::BTreeMap;

/// A JSON value (RFC 8259; numbers as f64).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true`, `false`.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string.
    Text(String),
    /// An array.
    List(Vec<Json>),
    /// An object.
    Object(BTreeMap<String, Json>),
}

/// A strict reader: broken JSON is an error, never a guess.
pub struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    /// Reads one whole value; anything else in `text` is an error.
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser { bytes: text.as_bytes(), at: 0 };
        let value = p.value()?;
        p.blank();
        if p.at != p.bytes.len() {
            return Err(format!("trailing bytes at {}", p.at));
        }
        Ok(value)
    }

    fn blank(&mut self) {
        while self.bytes.get(self.at).is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            return true;
        }
        false
    }

    fn value(&mut self) -> Result<Json, String> {
        self.blank();
        match self.bytes.get(self.at) {
            Some(b'{') => self.object(),
            Some(b'[') => self.list(),
            Some(b'"') => self.text().map(Json::Text),
            Some(b'n') if self.eat("null") => Ok(Json::Null),
            Some(b't') if self.eat("true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Json::Bool(false)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            other => Err(format!("unexpected {other:?} at {}", self.at)),
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.at += 1;
        let mut map = BTreeMap::new();
        self.blank();
        if self.eat("}") {
            return Ok(Json::Object(map));
        }
        loop {
            self.blank();
            let key = self.text()?;
            self.blank();
            if !self.eat(":") {
                return Err(format!("expected ':' at {}", self.at));
            }
            map.insert(key, self.value()?);
            self.blank();
            if self.eat("}") {
                return Ok(Json::Object(map));
            }
            if !self.eat(",") {
                return Err(format!("expected ',' at {}", self.at));
            }
        }
    }

    fn list(&mut self) -> Result<Json, String> {
        self.at += 1;
        let mut items = Vec::new();
        self.blank();
        if self.eat("]") {
            return Ok(Json::List(items));
        }
        loop {
            items.push(self.value()?);
            self.blank();
            if self.eat("]") {
                return Ok(Json::List(items));
            }
            if !self.eat(",") {
                return Err(format!("expected ',' at {}", self.at));
            }
        }
    }

    fn text(&mut self) -> Result<String, String> {
        if !self.eat("\"") {
            return Err(format!("expected a string at {}", self.at));
        }
        let mut out = String::new();
        loop {
            match self.bytes.get(self.at) {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let escaped = *self.bytes.get(self.at + 1).ok_or("dangling escape")?;
                    self.at += 2;
                    match escaped {
                        b'"' | b'\\' | b'/' => out.push(escaped as char),
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'u' => {
                            let hex = std::str::from_utf8(self.bytes.get(self.at..self.at + 4).ok_or("short \\u")?)
                                .map_err(|e| e.to_string())?;
                            let code = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                            self.at += 4;
                        }
                        other => return Err(format!("bad escape {other}")),
                    }
                }
                Some(&b) if b < 0x20 => return Err("control byte in a string".into()),
                Some(_) => {
                    let start = self.at;
                    while self.bytes.get(self.at).is_some_and(|b| *b != b'"' && *b != b'\\' && *b >= 0x20) {
                        self.at += 1;
                    }
                    out.push_str(std::str::from_utf8(&self.bytes[start..self.at]).map_err(|e| e.to_string())?);
                }
            }
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).map_err(|e| e.to_string())?;
        text.parse().map(Json::Number).map_err(|e| format!("bad number {text}: {e}"))
    }
}

impl Json {
    /// Reads `text`, failing the test if it is not one whole JSON value.
    pub fn parse(text: &str) -> Json {
        Parser::parse(text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text}"))
    }

    /// The field `key`, as the test expects it (else the test fails).
    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Object(fields) => fields.get(key).unwrap_or_else(|| panic!("no field {key:?} in {self:?}")),
            other => panic!("{other:?} is not an object (wanted {key:?})"),
        }
    }

    /// The field `key`, as the test expects it (else the test fails).
    pub fn num(&self, key: &str) -> f64 {
        match self.get(key) {
            Json::Number(n) => *n,
            other => panic!("{key} is {other:?}, not a number"),
        }
    }

    /// The field `key`, as the test expects it (else the test fails).
    pub fn int(&self, key: &str) -> u64 {
        let n = self.num(key);
        assert!(n >= 0.0 && n.fract() == 0.0, "{key} is {n}, not a whole number");
        n as u64
    }

    /// The field `key`, as the test expects it (else the test fails).
    pub fn text(&self, key: &str) -> &str {
        match self.get(key) {
            Json::Text(s) => s,
            other => panic!("{key} is {other:?}, not a string"),
        }
    }

    /// The field `key`, as the test expects it (else the test fails).
    pub fn list(&self, key: &str) -> &[Json] {
        match self.get(key) {
            Json::List(items) => items,
            other => panic!("{key} is {other:?}, not a list"),
        }
    }

    /// The field `key`, as the test expects it (else the test fails).
    pub fn texts(&self, key: &str) -> Vec<String> {
        let texts = self.list(key).iter().map(|item| match item {
            Json::Text(s) => s.clone(),
            other => panic!("{key} holds {other:?}, not a string"),
        });
        texts.collect()
    }
}
