//! Client authentication: the tokens of `--token-file`, compared in constant time.
//!
//! The set can be replaced while the server runs (SIGHUP re-reads the file): every hub holds a
//! clone of one [`Tokens`], which shares the set behind a read-write lock that only a `HELLO`
//! reads, never the message path.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::ConfigError;
use crate::limits::TOKEN_BYTES_MAX;

/// The tokens a server accepts in `HELLO`. Cheap to clone, and every clone shares one set, so
/// that [`Tokens::replace_with`] changes it for every hub at once; never printed.
#[derive(Clone)]
pub struct Tokens(Arc<RwLock<Arc<Vec<Vec<u8>>>>>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} redacted)", self.len())
    }
}

impl Tokens {
    /// Tokens from a list (tests and embedders).
    pub fn new(tokens: Vec<Vec<u8>>) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(tokens))))
    }

    fn current(&self) -> Arc<Vec<Vec<u8>>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many tokens the set holds (for reload logs: never the tokens themselves).
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// True when the set holds no token (never the case for one read from a file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes every clone of `self` accept exactly the tokens of `fresh` from now on (SIGHUP):
    /// connections already in are untouched; the next `HELLO` is checked against the new set.
    pub fn replace_with(&self, fresh: &Tokens) {
        let set = fresh.current();
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = set;
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
        self.current().iter().fold(false, |found, token| found | constant_time_eq(token, offered))
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
    fn a_replaced_set_applies_to_every_clone() {
        let tokens = Tokens::new(vec![b"old".to_vec()]);
        let held_by_a_hub = tokens.clone();
        tokens.replace_with(&Tokens::new(vec![b"new".to_vec(), b"newer".to_vec()]));
        assert!(held_by_a_hub.accepts(b"new") && held_by_a_hub.accepts(b"newer"));
        assert!(!held_by_a_hub.accepts(b"old"), "a removed token is refused");
        assert_eq!(held_by_a_hub.len(), 2);
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
