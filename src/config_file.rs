//! The `fanout serve --config FILE` format: `key = value` lines, a strict subset of TOML.
//!
//! ```toml
//! # comments run to the end of the line
//! listen = "0.0.0.0:7400"          # strings in double quotes (\" \\ \n \t \u00e9 escapes) or 'single'
//! max_connections = 50_000         # integers, `_` allowed between digits
//! peers = ["node-b:7501",          # arrays of values, over several lines if need be
//!          "node-c:7501"]
//! ```
//!
//! Booleans (`true`, `false`) are values too, and the only values of a switch such as
//! `tls_only`. Tables (`[section]`), dotted keys, floats and dates
//! are not: a line that uses them is an error naming its line. Every key is one `fanout serve`
//! flag (the caller checks which); a key given twice is an error.
//!
//! Why by hand, not the `toml` crate: the four value types and errors that name the line take
//! this one file, while `toml` would bring serde and a parser framework for one file read at
//! start-up and on SIGHUP, and we would still check every key against the flags ourselves.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use clap::{ArgAction, Command};

/// Flags of `fanout serve` that are not settings, so never keys.
const NOT_SETTINGS: [&str; 4] = ["config", "check_config", "help", "version"];

/// One `key = value` setting of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key as written.
    pub key: String,
    /// The value: one for a scalar, any number for an array.
    pub values: Vec<Value>,
    /// True when the value was an array (`[...]`), even of one or no element.
    pub array: bool,
    /// Line of the key, counting from 1: every error about the entry names it.
    pub line: usize,
}

/// One scalar value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A quoted string, escapes resolved.
    Str(String),
    /// An integer, as written without `_` (the flag's own parser checks its range).
    Int(String),
    /// `true` or `false`.
    Bool(bool),
}

impl Value {
    /// The value as a flag would take it on the command line.
    pub fn as_flag_text(&self) -> String {
        match self {
            Value::Str(s) | Value::Int(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

/// What is wrong with the file, and on which line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Line of the fault, counting from 1.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The keys a config file may hold: every `fanout serve` flag that is a setting, named like the
/// flag with `_` for `-` (`--max-connections` is `max_connections`; `--peer` is `peers`).
pub fn keys(serve: &Command) -> Vec<String> {
    serve.get_arguments().map(|a| a.get_id().to_string()).filter(|id| !NOT_SETTINGS.contains(&id.as_str())).collect()
}

/// Makes every entry of `entries` (read from `path`) the default of the `serve` flag it names,
/// so a flag given on the command line overrides it. Each value is checked by the flag's own
/// parser first; every error names the file, the line and the key. Returns the command and the
/// keys the file set.
pub fn apply(mut serve: Command, entries: &[Entry], path: &Path) -> Result<(Command, BTreeSet<String>), String> {
    let known = keys(&serve);
    let mut set = BTreeSet::new();
    for entry in entries {
        let at = format!("{}:{}", path.display(), entry.line);
        let Some(arg) = serve.get_arguments().find(|a| a.get_id() == entry.key.as_str() && known.contains(&entry.key))
        else {
            return Err(format!("{at}: unknown key `{}` (known keys: {})", entry.key, known.join(", ")));
        };
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            // A switch (`--tls-only`): `key = true` or `key = false`, nothing else.
            let [Value::Bool(on)] = entry.values[..] else {
                return Err(format!("{at}: `{}` takes true or false", entry.key));
            };
            let id = entry.key.clone();
            serve = serve.mut_arg(&id, |a| a.default_value(if on { "true" } else { "false" }));
            set.insert(id);
            continue;
        }
        let many = matches!(arg.get_action(), ArgAction::Append);
        if entry.array != many {
            let wanted = if many { "an array, e.g. [\"a\", \"b\"]" } else { "one value, not an array" };
            return Err(format!("{at}: `{}` takes {wanted}", entry.key));
        }
        let values: Vec<String> = entry.values.iter().map(Value::as_flag_text).collect();
        // The flag's own parser, on a throwaway command holding only this flag: the same checks
        // and messages as on the command line.
        let check = Command::new("fanout-config").no_binary_name(true).arg(arg.clone().required(false));
        let long = format!("--{}", arg.get_long().unwrap_or(entry.key.as_str()));
        let argv = values.iter().flat_map(|v| [long.clone(), v.clone()]);
        if let Err(e) = check.try_get_matches_from(argv) {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            return Err(format!("{at}: {}: {first}", entry.key));
        }
        let id = entry.key.clone();
        serve = if many {
            serve.mut_arg(&id, |a| a.default_values(values))
        } else {
            serve.mut_arg(&id, |a| a.default_value(values[0].clone()))
        };
        set.insert(id);
    }
    Ok((serve, set))
}

/// Parses a whole file.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut parser = Parser { chars: text.chars().collect(), at: 0, line: 1 };
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        parser.skip_blank_lines();
        if parser.peek().is_none() {
            return Ok(entries);
        }
        let entry = parser.entry()?;
        if let Some(first) = entries.iter().find(|e| e.key == entry.key) {
            return Err(
                parser.error_at(entry.line, format!("key `{}` given twice (first on line {})", entry.key, first.line))
            );
        }
        entries.push(entry);
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    line: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        self.error_at(self.line, message)
    }

    fn error_at(&self, line: usize, message: impl Into<String>) -> ParseError {
        ParseError { line, message: message.into() }
    }

    /// Spaces and tabs.
    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    /// A comment to the end of the line, if one starts here.
    fn skip_comment(&mut self) {
        if self.peek() == Some('#') {
            while !matches!(self.peek(), None | Some('\n')) {
                self.bump();
            }
        }
    }

    /// Spaces, comments and line ends, up to the next key (or the end).
    fn skip_blank_lines(&mut self) {
        loop {
            self.skip_spaces();
            self.skip_comment();
            match self.peek() {
                Some('\n') => {
                    self.bump();
                }
                Some('\r') if self.chars.get(self.at + 1) == Some(&'\n') => {
                    self.bump();
                }
                _ => return,
            }
        }
    }

    /// The end of an entry's line: spaces, a comment, then a line end or the end of the file.
    fn end_of_line(&mut self) -> Result<(), ParseError> {
        self.skip_spaces();
        self.skip_comment();
        if self.peek() == Some('\r') {
            self.bump();
        }
        match self.bump() {
            None | Some('\n') => Ok(()),
            Some(c) => Err(self.error(format!("unexpected {c:?} after the value (one `key = value` per line)"))),
        }
    }

    fn entry(&mut self) -> Result<Entry, ParseError> {
        let line = self.line;
        if self.peek() == Some('[') {
            return Err(self.error("tables ([section]) are not supported: write every key at the top level"));
        }
        let mut key = String::new();
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-') {
            key.push(c);
            self.bump();
        }
        if key.is_empty() {
            let shown = self.peek().map_or("the end of the file".to_string(), |c| format!("{c:?}"));
            return Err(self.error(format!("expected a key (letters, digits, `_`, `-`), found {shown}")));
        }
        self.skip_spaces();
        match self.bump() {
            Some('=') => {}
            Some('.') => return Err(self.error(format!("dotted keys are not supported (`{key}.`)"))),
            _ => return Err(self.error_at(line, format!("expected `=` after the key `{key}`"))),
        }
        self.skip_spaces();
        let (values, array) =
            if self.peek() == Some('[') { (self.array()?, true) } else { (vec![self.scalar()?], false) };
        self.end_of_line()?;
        Ok(Entry { key, values, array, line })
    }

    /// `[v, v, ...]`, possibly over several lines with comments, trailing comma allowed.
    fn array(&mut self) -> Result<Vec<Value>, ParseError> {
        let opened_on = self.line;
        self.bump(); // '['
        let mut values = Vec::new();
        loop {
            self.skip_blank_lines();
            match self.peek() {
                Some(']') => {
                    self.bump();
                    return Ok(values);
                }
                None => return Err(self.error_at(opened_on, "an array that is never closed with `]`")),
                Some('[') => return Err(self.error("arrays of arrays are not supported")),
                _ => values.push(self.scalar()?),
            }
            self.skip_blank_lines();
            match self.bump() {
                Some(',') => {}
                Some(']') => return Ok(values),
                None => return Err(self.error_at(opened_on, "an array that is never closed with `]`")),
                _ => return Err(self.error("expected `,` or `]` in the array")),
            }
        }
    }

    fn scalar(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some('"') => self.basic_string().map(Value::Str),
            Some('\'') => self.literal_string().map(Value::Str),
            Some(c) if c.is_ascii_digit() || c == '+' || c == '-' => self.integer(),
            Some(c) if c.is_ascii_alphabetic() => {
                let mut word = String::new();
                while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    word.push(c);
                    self.bump();
                }
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(self.error(format!("`{word}` is not a value: strings need quotes (\"{word}\")"))),
                }
            }
            None | Some('\n' | '\r' | '#') => Err(self.error("a key without a value")),
            Some(c) => Err(self
                .error(format!("unexpected {c:?}: a value is a \"string\", an integer, true, false or [an, array]"))),
        }
    }

    fn integer(&mut self) -> Result<Value, ParseError> {
        let mut text = String::new();
        if let Some(sign) = self.peek().filter(|c| *c == '+' || *c == '-') {
            if sign == '-' {
                text.push(sign);
            }
            self.bump();
        }
        let mut last_was_digit = false;
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.') {
            match c {
                '0'..='9' => {
                    text.push(c);
                    last_was_digit = true;
                }
                '_' if last_was_digit => last_was_digit = false,
                _ => return Err(self.error("integers are digits, with `_` between digits (no floats, no hex)")),
            }
            self.bump();
        }
        if !last_was_digit {
            return Err(self.error("integers are digits, with `_` between digits (no floats, no hex)"));
        }
        Ok(Value::Int(text))
    }

    fn literal_string(&mut self) -> Result<String, ParseError> {
        let line = self.line;
        self.bump(); // '\''
        let mut text = String::new();
        loop {
            match self.bump() {
                Some('\'') => return Ok(text),
                None | Some('\n') => return Err(self.error_at(line, "a string that is never closed with '")),
                Some(c) => text.push(c),
            }
        }
    }

    fn basic_string(&mut self) -> Result<String, ParseError> {
        let line = self.line;
        self.bump(); // '"'
        let mut text = String::new();
        loop {
            match self.bump() {
                Some('"') => return Ok(text),
                None | Some('\n') => return Err(self.error_at(line, "a string that is never closed with \"")),
                Some('\\') => text.push(self.escape()?),
                Some(c) if c.is_control() && c != '\t' => {
                    return Err(self.error(format!("a control character {c:?} in a string (escape it)")))
                }
                Some(c) => text.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, ParseError> {
        let c = match self.bump() {
            Some('"') => '"',
            Some('\\') => '\\',
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some(kind @ ('u' | 'U')) => {
                let digits = if kind == 'u' { 4 } else { 8 };
                let hex: String = (0..digits).filter_map(|_| self.bump()).collect();
                u32::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|_| hex.len() == digits)
                    .and_then(char::from_u32)
                    .ok_or_else(|| self.error(format!("\\{kind}{hex} is not a Unicode scalar value")))?
            }
            other => return Err(self.error(format!("unknown escape \\{}", other.unwrap_or(' ')))),
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::Str(text.into())
    }

    #[test]
    fn every_value_type_with_comments_and_blank_lines() {
        let text = "# fanout\n\nlisten = \"0.0.0.0:7400\"  # clients\nmax_connections = 50_000\r\n\
                    token_file = '/etc/fanout/tokens'\npeers = [\"a:1\", 'b:2',]\nempty = []\nflag = true\n\
                    neg = -5";
        let entries = parse(text).unwrap();
        let got: Vec<_> = entries.iter().map(|e| (e.key.as_str(), e.values.clone(), e.array, e.line)).collect();
        assert_eq!(
            got,
            vec![
                ("listen", vec![s("0.0.0.0:7400")], false, 3),
                ("max_connections", vec![Value::Int("50000".into())], false, 4),
                ("token_file", vec![s("/etc/fanout/tokens")], false, 5),
                ("peers", vec![s("a:1"), s("b:2")], true, 6),
                ("empty", vec![], true, 7),
                ("flag", vec![Value::Bool(true)], false, 8),
                ("neg", vec![Value::Int("-5".into())], false, 9),
            ]
        );
    }

    #[test]
    fn arrays_span_lines_and_strings_unescape() {
        let text = "peers = [\n  \"a:1\",  # first\n\n  \"b:2\"\n]\nname = \"q\\\"\\\\\\n\\u00e9\"\nafter = 1\n";
        let entries = parse(text).unwrap();
        assert_eq!(entries[0].values, vec![s("a:1"), s("b:2")]);
        assert_eq!(entries[1], Entry { key: "name".into(), values: vec![s("q\"\\\né")], array: false, line: 6 });
        assert_eq!(entries[2].line, 7);
    }

    #[test]
    fn errors_name_their_line() {
        let cases = [
            ("a = 1\nb = 2\na = 3\n", 3, "given twice (first on line 1)"),
            ("\n[server]\n", 2, "tables"),
            ("a = 1\nlisten = 0.0.0.0:7400\n", 2, "integers"),
            ("a = 1\nlisten = localhost\n", 2, "strings need quotes"),
            ("a.b = 1\n", 1, "dotted keys"),
            ("a = \"open\nb = 1\n", 1, "never closed"),
            ("a = [\"x\",\n\"y\"\n", 1, "never closed with `]`"),
            ("a = 1 2\n", 1, "after the value"),
            ("a =\n", 1, "without a value"),
            ("a = 1.5\n", 1, "no floats"),
            ("= 1\n", 1, "expected a key"),
            ("a 1\n", 1, "expected `=`"),
            ("a = \"\\q\"\n", 1, "unknown escape"),
            ("\n\na = [1 2]\n", 3, "`,` or `]`"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_switch_takes_true_or_false_only() {
        let serve =
            || Command::new("serve").arg(clap::Arg::new("tls_only").long("tls-only").action(ArgAction::SetTrue));
        let path = Path::new("fanout.toml");
        for (text, on) in [("tls_only = true\n", true), ("tls_only = false\n", false)] {
            let (command, set) = apply(serve(), &parse(text).unwrap(), path).unwrap();
            assert_eq!(set.into_iter().collect::<Vec<_>>(), vec!["tls_only".to_string()]);
            assert_eq!(command.clone().try_get_matches_from(["serve"]).unwrap().get_flag("tls_only"), on, "{text}");
            let from_flag = command.try_get_matches_from(["serve", "--tls-only"]).unwrap();
            assert!(from_flag.get_flag("tls_only"), "the flag wins over the file");
        }
        let e = apply(serve(), &parse("tls_only = \"yes\"\n").unwrap(), path).unwrap_err();
        assert_eq!(e, "fanout.toml:1: `tls_only` takes true or false");
    }
}
