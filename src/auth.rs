//! Client authentication: the tokens of `--token-file`, compared in constant time.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::config::ConfigError;
use crate::limits::TOKEN_BYTES_MAX;

/// The tokens a server accepts in `HELLO`. Cheap to clone; never printed.
#[derive(Clone)]
pub struct Tokens(Arc<Vec<Vec<u8>>>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl Tokens {
    /// Tokens from a list (tests and embedders).
    pub fn new(tokens: Vec<Vec<u8>>) -> Self {
        Self(Arc::new(tokens))
    }

    /// Reads one token per line; blank lines and surrounding whitespace are ignored.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read(path)
            .map_err(|e| ConfigError(format!("cannot read --token-file {}: {e}", path.display())))?;
        let tokens: Vec<Vec<u8>> = text
            .split(|b| *b == b'\n')
            .map(|line| line.trim_ascii().to_vec())
            .filter(|line| !line.is_empty())
            .collect();
        if tokens.is_empty() {
            return Err(ConfigError(format!("--token-file {} holds no token", path.display())));
        }
        if tokens.iter().any(|t| t.len() > TOKEN_BYTES_MAX) {
            return Err(ConfigError(format!("tokens in {} must be at most {TOKEN_BYTES_MAX} bytes", path.display())));
        }
        Ok(Self::new(tokens))
    }

    /// Whether `offered` is one of the tokens; compares against every token, each in constant
    /// time, so the time taken says nothing about which bytes were right.
    pub fn accepts(&self, offered: &[u8]) -> bool {
        self.0.iter().fold(false, |found, token| found | constant_time_eq(token, offered))
    }
}

/// Equality whose running time depends only on the lengths, not on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xFF);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn accepts_any_listed_token_only() {
        let tokens = Tokens::new(vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(tokens.accepts(b"one"));
        assert!(tokens.accepts(b"two"));
        assert!(!tokens.accepts(b"three"));
        assert!(!tokens.accepts(b""));
        assert_eq!(format!("{tokens:?}"), "Tokens(2 redacted)");
    }

    #[test]
    fn reads_one_token_per_line() {
        let path = std::env::temp_dir().join(format!("fanout-tokens-{}", std::process::id()));
        std::fs::write(&path, "  alpha \n\nbeta\n").unwrap();
        let tokens = Tokens::read(&path).unwrap();
        assert!(tokens.accepts(b"alpha") && tokens.accepts(b"beta") && !tokens.accepts(b" alpha "));
        std::fs::write(&path, "\n  \n").unwrap();
        assert!(Tokens::read(&path).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
