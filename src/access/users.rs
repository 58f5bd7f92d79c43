//! The users file (`usersFile`): lines `name:hash[:role,role...]` with argon2 (PHC) or bcrypt
//! hashes, and the check of an RFC 7617 Basic `user:password` against it.
//!
//! Verifying a hash costs tens of milliseconds of CPU by design. It runs on the blocking pool,
//! at most one per core at a time, and a successful check is remembered for [`CACHE_TTL`] (at
//! most [`CACHE_MAX`] entries), so a client that reconnects often does not burn a core each time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::authn::AccessError;

/// How long a successful check is remembered: the same user and password (and the same hash in
/// the file) are let in again without verifying the hash.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// Most remembered checks; when full, expired ones are dropped, and if none has expired, all.
pub const CACHE_MAX: usize = 4096;

/// A password hash of the users file, checked for form when the file is read.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Hash {
    /// PHC string: `$argon2id$v=19$m=...,t=...,p=...$salt$hash` (also argon2i, argon2d).
    Argon2(String),
    /// `$2b$`, `$2a$` or `$2y$` form, 60 characters.
    Bcrypt(String),
}

impl Hash {
    fn parse(s: &str) -> Result<Hash, String> {
        if s.starts_with("$argon2") {
            let parsed = argon2::PasswordHash::new(s)
                .map_err(|e| format!("the argon2 hash is not a valid PHC string ({e})"))?;
            argon2::Algorithm::try_from(parsed.algorithm)
                .map_err(|_| "the hash names an unknown argon2 variant".to_string())?;
            argon2::Params::try_from(&parsed)
                .map_err(|e| format!("the argon2 parameters are not usable ({e})"))?;
            Ok(Hash::Argon2(s.to_string()))
        } else if ["$2b$", "$2a$", "$2y$"].iter().any(|p| s.starts_with(p)) {
            s.parse::<bcrypt::HashParts>()
                .map_err(|e| format!("the bcrypt hash is malformed ({e})"))?;
            Ok(Hash::Bcrypt(s.to_string()))
        } else {
            Err("the hash must be argon2 in PHC form ($argon2id$...) or bcrypt ($2b$...)".into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Hash::Argon2(s) | Hash::Bcrypt(s) => s,
        }
    }

    /// The slow part: run on the blocking pool.
    fn verify(&self, password: &[u8]) -> bool {
        use argon2::PasswordVerifier;
        match self {
            Hash::Argon2(phc) => argon2::PasswordHash::new(phc).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password, &h)
                    .is_ok()
            }),
            // As htpasswd and most bcrypt tools: only the first 72 bytes of a password count.
            Hash::Bcrypt(s) => bcrypt::verify(password, s).unwrap_or(false),
        }
    }
}

/// One user of the file.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub hash: Hash,
    pub roles: Vec<String>,
    /// The reload generation since which this line is unchanged (`authn` closes sessions that
    /// authenticated before a change).
    pub since: u64,
}

/// The users file as read.
#[derive(Default)]
pub struct Users {
    by_name: HashMap<String, User>,
    /// A hash to verify unknown names against, so a wrong name costs what a wrong password
    /// costs and timing does not tell which names exist.
    decoy: Option<Hash>,
}

impl Users {
    pub(crate) fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Reads the file; `generation` is the reload it belongs to.
    pub fn load(path: &Path, generation: u64) -> Result<Users, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            option: "usersFile",
            path: path.to_path_buf(),
            source,
        })?;
        Users::parse(&text, path, generation)
    }

    /// Parses the file's text. An error names the line and what is wrong with it, never the
    /// hash.
    pub fn parse(text: &str, path: &Path, generation: u64) -> Result<Users, AccessError> {
        let mut by_name = HashMap::new();
        let mut decoy = None;
        for (n, line) in lines(text) {
            let bad = |message: String| AccessError::Line {
                option: "usersFile",
                path: path.to_path_buf(),
                line: n,
                message,
            };
            let mut parts = line.splitn(3, ':');
            let name = parts.next().unwrap_or("");
            let hash = parts
                .next()
                .ok_or_else(|| bad("expected name:hash[:role,role...]".into()))?;
            check_name(name).map_err(bad)?;
            let hash = Hash::parse(hash).map_err(bad)?;
            let roles = parse_roles(parts.next()).map_err(bad)?;
            if decoy.is_none() {
                decoy = Some(hash.clone());
            }
            let user = User {
                hash,
                roles,
                since: generation,
            };
            if by_name.insert(name.to_string(), user).is_some() {
                return Err(bad(format!("user {name:?} is listed twice")));
            }
        }
        Ok(Users { by_name, decoy })
    }

    /// Keeps the generation of every user whose line did not change since `old`.
    pub(crate) fn carry_since(&mut self, old: &Users) {
        for (name, user) in &mut self.by_name {
            if let Some(o) = old.by_name.get(name) {
                if o.hash == user.hash && o.roles == user.roles {
                    user.since = o.since;
                }
            }
        }
    }
}

/// The meaningful lines of a users or tokens file, numbered from 1: no blank lines, no `#`
/// comments, no trailing `\r`.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// A name ACL rules can match: not empty, no spaces or control characters.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the name {name:?} contains spaces or control characters"
        ));
    }
    Ok(())
}

/// `role,role...`: each non-empty, no spaces.
pub(crate) fn parse_roles(field: Option<&str>) -> Result<Vec<String>, String> {
    let Some(field) = field else {
        return Ok(Vec::new());
    };
    let mut roles = Vec::new();
    for r in field.split(',').map(str::trim) {
        if r.is_empty() || r.chars().any(|c| c.is_whitespace() || c == ':') {
            return Err(format!(
                "bad role {r:?}: roles are a comma-separated list of names"
            ));
        }
        roles.push(r.to_string());
    }
    Ok(roles)
}

/// Checks passwords against hashes off the async threads, one per core at a time, remembering
/// successes for a while.
pub struct Verifier {
    slots: Arc<Semaphore>,
    cache: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Default for Verifier {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Verifier {
            slots: Arc::new(Semaphore::new(cores)),
            cache: Mutex::new(HashMap::new()),
        }
    }
}

/// What a remembered check is filed under: the name, the password and the hash it was checked
/// against, so a changed hash in the file is never answered from memory.
fn cache_key(name: &str, password: &[u8], hash: &Hash) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [name.as_bytes(), password, hash.as_str().as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

impl Verifier {
    /// Whether `password` is `name`'s in `users`. An unknown name is checked against a decoy
    /// hash and fails, so it takes as long as a wrong password.
    pub async fn check(&self, users: &Users, name: &str, password: &[u8]) -> bool {
        let (hash, known) = match (users.get(name), &users.decoy) {
            (Some(u), _) => (u.hash.clone(), true),
            (None, Some(decoy)) => (decoy.clone(), false),
            (None, None) => return false,
        };
        let key = cache_key(name, password, &hash);
        if known && self.remembered(&key) {
            return true;
        }
        let Ok(_slot) = self.slots.clone().acquire_owned().await else {
            return false;
        };
        let password = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .unwrap_or(false);
        if ok && known {
            self.remember(key);
        }
        ok && known
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(key).is_some_and(|until| *until > Instant::now())
    }

    fn remember(&self, key: [u8; 32]) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, until| *until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, now + CACHE_TTL);
    }

    /// Forgets every remembered check (a reload of the users file).
    pub fn forget(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    #[cfg(test)]
    fn remembered_count(&self) -> usize {
        self.cache.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argon2_hash(password: &str) -> String {
        use argon2::password_hash::{PasswordHasher, SaltString};
        // Small parameters: the test checks the format, not the cost.
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        a.hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn parse(text: &str) -> Result<Users, AccessError> {
        Users::parse(text, Path::new("users.txt"), 1)
    }

    #[test]
    fn parses_names_hashes_and_roles() {
        let a = argon2_hash("pw-alice");
        let b = bcrypt::hash("pw-bob", 4).unwrap();
        let text = format!("# comment\n\nalice:{a}:ops, readers\r\n  bob:{b}\n");
        let users = parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users.get("alice").unwrap().roles, vec!["ops", "readers"]);
        assert!(users.get("bob").unwrap().roles.is_empty());
        assert!(matches!(users.get("bob").unwrap().hash, Hash::Bcrypt(_)));
    }

    #[test]
    fn bad_lines_name_the_line_and_never_the_hash() {
        let a = argon2_hash("pw");
        let cut = &a[..a.len() - 10];
        let cases = [
            (format!("alice:{a}\nbob\n"), 2, "expected name:hash"),
            (format!("alice:{a}\n:{a}\n"), 2, "name is empty"),
            (format!("al ice:{a}\n"), 1, "spaces"),
            ("carol:plaintext\n".to_string(), 1, "argon2 in PHC form"),
            (format!("x:{cut}Z!\n"), 1, "argon2"),
            ("x:$2b$04$tooshort\n".to_string(), 1, "bcrypt"),
            (format!("alice:{a}\nalice:{a}\n"), 2, "twice"),
            (format!("alice:{a}:ops,,x\n"), 1, "bad role"),
        ];
        for (text, line, want) in cases {
            let e = parse(&text).err().expect("an error").to_string();
            assert!(e.contains(&format!("line {line}:")), "{e}");
            assert!(e.contains(want), "{e} lacks {want}");
            // No piece of a hash: not even its salt.
            assert!(!e.contains("v=19$") && !e.contains("$04$"), "{e}");
        }
    }

    #[tokio::test]
    async fn checks_argon2_and_bcrypt_and_remembers_success() {
        let a = argon2_hash("pw-alice");
        let b = bcrypt::hash("pw-bob", 4).unwrap();
        let users = parse(&format!("alice:{a}\nbob:{b}\n")).unwrap();
        let v = Verifier::default();
        assert!(v.check(&users, "alice", b"pw-alice").await);
        assert!(v.check(&users, "bob", b"pw-bob").await);
        assert_eq!(v.remembered_count(), 2);
        assert!(!v.check(&users, "alice", b"pw-bob").await);
        assert!(!v.check(&users, "bob", b"").await);
        // An unknown name fails even with a password that fits the decoy hash.
        assert!(!v.check(&users, "mallory", b"pw-alice").await);
        assert_eq!(v.remembered_count(), 2);
        // A changed hash is not answered from memory.
        let users = parse(&format!("alice:{}\n", argon2_hash("new"))).unwrap();
        assert!(!v.check(&users, "alice", b"pw-alice").await);
        assert!(v.check(&users, "alice", b"new").await);
    }

    #[test]
    fn unchanged_lines_keep_their_generation() {
        let a = argon2_hash("a");
        let b = argon2_hash("b");
        let old = Users::parse(&format!("alice:{a}\nbob:{a}\n"), Path::new("u"), 1).unwrap();
        let mut new = Users::parse(
            &format!("alice:{a}\nbob:{b}\ncarol:{a}\n"),
            Path::new("u"),
            2,
        )
        .unwrap();
        new.carry_since(&old);
        assert_eq!(new.get("alice").unwrap().since, 1);
        assert_eq!(new.get("bob").unwrap().since, 2);
        assert_eq!(new.get("carol").unwrap().since, 2);
    }

    #[test]
    fn the_cache_is_bounded() {
        let v = Verifier::default();
        for i in 0..(CACHE_MAX + 10) as u64 {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&i.to_be_bytes());
            v.remember(k);
        }
        assert!(v.remembered_count() <= CACHE_MAX);
    }
}
