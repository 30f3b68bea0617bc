//! Just enough JSON writing for the bench's one-line report.

use std::fmt::Write;

/// A JSON object being written, key by key.
#[derive(Debug)]
pub struct JsonObject {
    text: String,
    empty: bool,
}

impl Default for JsonObject {
    fn default() -> Self {
        Self { text: "{".to_string(), empty: true }
    }
}

impl JsonObject {
    fn key(&mut self, key: &str) {
        if !self.empty {
            self.text.push(',');
        }
        self.empty = false;
        push_string(&mut self.text, key);
        self.text.push(':');
    }

    /// An integer field.
    pub fn int(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let _ = write!(self.text, "{value}");
        self
    }

    /// A number field; `null` if it is not finite (JSON has no NaN).
    pub fn num(&mut self, key: &str, value: f64) -> &mut Self {
        self.opt_num(key, Some(value))
    }

    /// A number field that may be unknown (`null`).
    pub fn opt_num(&mut self, key: &str, value: Option<f64>) -> &mut Self {
        self.key(key);
        match value {
            Some(v) if v.is_finite() => {
                let _ = write!(self.text, "{}", (v * 1000.0).round() / 1000.0);
            }
            _ => self.text.push_str("null"),
        }
        self
    }

    /// A boolean field.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.text.push_str(if value { "true" } else { "false" });
        self
    }

    /// A string field.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_string(&mut self.text, value);
        self
    }

    /// A string field that may be absent (`null`).
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => {
                self.key(key);
                self.text.push_str("null");
                self
            }
        }
    }

    /// A nested object.
    pub fn object(&mut self, key: &str, value: JsonObject) -> &mut Self {
        self.key(key);
        self.text.push_str(&value.finish());
        self
    }

    /// The finished text.
    pub fn finish(mut self) -> String {
        self.text.push('}');
        self.text
    }
}

/// Appends `s` as a quoted, escaped JSON string.
fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json() {
        let mut inner = JsonObject::default();
        inner.num("p50", 12.3456).num("bad", f64::NAN);
        let mut o = JsonObject::default();
        o.int("n", 7)
            .bool("b", true)
            .str("s", "a\"b\\c\n\u{1}")
            .opt_num("x", None)
            .opt_str("e", None)
            .object("o", inner);
        assert_eq!(
            o.finish(),
            r#"{"n":7,"b":true,"s":"a\"b\\c\n\u0001","x":null,"e":null,"o":{"p50":12.346,"bad":null}}"#
        );
        assert_eq!(JsonObject::default().finish(), "{}");
    }
}
