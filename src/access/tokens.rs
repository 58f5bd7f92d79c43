//! The static bearer tokens file (`tokensFile`): lines `name:token[:role,role...]`, and the
//! constant-time look-up of an `Authorization: Bearer <token>`.
//!
//! Only SHA-256 digests of the tokens are kept. A look-up compares the presented token's digest
//! with every entry's, without stopping at a match, so its time tells nothing about the tokens.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::authn::AccessError;
use super::users::{check_name, lines, parse_roles};

/// Shortest token accepted in the file: a guessable token is a configuration error.
pub const MIN_TOKEN_CHARS: usize = 16;

/// One token of the file.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub name: String,
    digest: [u8; 32],
    pub roles: Vec<String>,
    /// The reload generation since which this line is unchanged.
    pub since: u64,
}

/// The tokens file as read.
#[derive(Default)]
pub struct Tokens {
    entries: Vec<Token>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads the file; `generation` is the reload it belongs to.
    pub fn load(path: &Path, generation: u64) -> Result<Tokens, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            option: "tokensFile",
            path: path.to_path_buf(),
            source,
        })?;
        Tokens::parse(&text, path, generation)
    }

    /// Parses the file's text. An error names the line, never the token. Tokens may not contain
    /// `:` or spaces.
    pub fn parse(text: &str, path: &Path, generation: u64) -> Result<Tokens, AccessError> {
        let mut entries: Vec<Token> = Vec::new();
        for (n, line) in lines(text) {
            let bad = |message: String| AccessError::Line {
                option: "tokensFile",
                path: path.to_path_buf(),
                line: n,
                message,
            };
            let mut parts = line.splitn(3, ':');
            let name = parts.next().unwrap_or("");
            let token = parts
                .next()
                .ok_or_else(|| bad("expected name:token[:role,role...]".into()))?;
            check_name(name).map_err(bad)?;
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(bad(format!(
                    "the token is shorter than {MIN_TOKEN_CHARS} characters"
                )));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad("the token contains spaces or control characters".into()));
            }
            let roles = parse_roles(parts.next()).map_err(bad)?;
            let t = Token {
                name: name.to_string(),
                digest: digest(token.as_bytes()),
                roles,
                since: generation,
            };
            if let Some(other) = entries.iter().find(|e| e.name == t.name) {
                return Err(bad(format!("name {:?} is listed twice", other.name)));
            }
            if let Some(other) = entries.iter().find(|e| e.digest == t.digest) {
                return Err(bad(format!(
                    "the same token is already listed for {:?}",
                    other.name
                )));
            }
            entries.push(t);
        }
        Ok(Tokens { entries })
    }

    /// The entry whose token is `presented`, compared in constant time.
    pub(crate) fn find(&self, presented: &[u8]) -> Option<&Token> {
        let d = digest(presented);
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&d)) {
                found = Some(e);
            }
        }
        found
    }

    /// The entry named `name`.
    pub(crate) fn named(&self, name: &str) -> Option<&Token> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Keeps the generation of every token whose line did not change since `old`.
    pub(crate) fn carry_since(&mut self, old: &Tokens) {
        for t in &mut self.entries {
            if let Some(o) = old.named(&t.name) {
                if o.digest == t.digest && o.roles == t.roles {
                    t.since = o.since;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "tok-aaaaaaaaaaaaaaaa";
    const B: &str = "tok-bbbbbbbbbbbbbbbb";

    fn parse(text: &str) -> Result<Tokens, AccessError> {
        Tokens::parse(text, Path::new("tokens.txt"), 1)
    }

    #[test]
    fn finds_tokens_and_their_roles() {
        let t = parse(&format!("# ci\nci:{A}:deploy,read\nsvc:{B}\n")).unwrap();
        assert_eq!(t.len(), 2);
        let ci = t.find(A.as_bytes()).unwrap();
        assert_eq!(
            (ci.name.as_str(), ci.roles.clone()),
            ("ci", vec!["deploy".into(), "read".into()])
        );
        assert_eq!(t.find(B.as_bytes()).unwrap().name, "svc");
        assert!(t.find(b"tok-cccccccccccccccc").is_none());
        assert!(t.find(&A.as_bytes()[1..]).is_none());
        assert!(t.find(b"").is_none());
    }

    #[test]
    fn bad_lines_name_the_line_and_never_the_token() {
        let cases = [
            ("ci\n".to_string(), 1, "expected name:token"),
            ("ci:short\n".to_string(), 1, "shorter than 16"),
            (format!("ci:{A}\nci:{B}\n"), 2, "listed twice"),
            (format!("ci:{A}\nsvc:{A}\n"), 2, "already listed for \"ci\""),
            (format!("\n\nci:{A}:a b\n"), 3, "bad role"),
            (format!(":{A}\n"), 1, "name is empty"),
        ];
        for (text, line, want) in cases {
            let e = parse(&text).err().expect("an error").to_string();
            assert!(e.contains(&format!("line {line}:")), "{e}");
            assert!(e.contains(want), "{e} lacks {want}");
            assert!(!e.contains(A) && !e.contains("short\""), "{e}");
        }
    }

    #[test]
    fn unchanged_lines_keep_their_generation() {
        let old = Tokens::parse(&format!("ci:{A}\nsvc:{B}\n"), Path::new("t"), 1).unwrap();
        let mut new = Tokens::parse(&format!("ci:{A}\nsvc:{A}x\n"), Path::new("t"), 2).unwrap();
        new.carry_since(&old);
        assert_eq!(new.named("ci").unwrap().since, 1);
        assert_eq!(new.named("svc").unwrap().since, 2);
    }
}
