//! The users and permissions of a server, durable under its data dir.
//!
//! One file, `<dir>/auth.state`: an 8-byte header (magic `TDAU`, the format
//! version, two reserved bytes that must be zero) then one journal frame (`tidings_log::format::frame`:
//! length, CRC-32C, body) whose body is the whole state as JSON — users with
//! their SCRAM credentials (salt, iterations, `StoredKey`, `ServerKey`;
//! never a password), API tokens (their id, owner, name, times and the
//! SHA-256 of their secret; never the secret) and the permissions. It is small and rarely changed, so
//! every change writes it whole, with `replace_durably`: a temporary file,
//! synced, renamed over the old one, the directory synced.
//!
//! Recovery, case by case:
//! - no file: nothing was ever saved — no users, no permissions (an open
//!   server, which `serve` refuses to expose beyond loopback);
//! - a leftover `auth.state.tmp`: a change that crashed before its rename,
//!   never answered as done — removed, the file before it stands;
//! - a file whose header, length or checksum is wrong, or whose body does not
//!   read: refused with the file and the reason. It is never taken for an
//!   empty store: that would open a server that was closed.
//!
//! A change is made on a copy, written, then taken: if writing fails the
//! store in memory is still the one on disk before it (the file on disk is
//! the old one or the new one whole; the next change writes it again).
//!
//! One process at a time: an open store holds an exclusive lock on
//! `<dir>/auth.lock`, so `tidings users` cannot change the file under a
//! running server (whose next change would write its own copy over it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::acl::{Acl, AclError, AclFilter, Authorizer};
use crate::limits::{
    AUTH_STATE_BYTES_MAX, TOKENS_MAX, TOKEN_NAME_BYTES_MAX, USERS_MAX, USER_NAME_BYTES_MAX,
};
use crate::scram::{Credential, Mechanism};
use crate::token::{Token, TokenInfo, TokenRefusal};

const MAGIC: [u8; 4] = *b"TDAU";
const HEADER_BYTES: usize = 8;
const FILE: &str = "auth.state";
const LOCK_FILE: &str = "auth.lock";
/// How long [`AuthStore::open`] waits for a held lock: a lock released by a
/// closing store can stay held for a moment by a child process that shares
/// its descriptors until the child's `exec`.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Why the store could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a whole, valid store.
    #[error("{path} is damaged: {reason}; refusing to start without the users and permissions it held (restore it from a backup)")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A user name that cannot be held.
    #[error("user name {0:?}: 1..={USER_NAME_BYTES_MAX} bytes, no control characters")]
    UserName(String),
    /// As many users as a server holds.
    #[error("{USERS_MAX} users are the most one server holds")]
    TooManyUsers,
    /// A permission that cannot be held.
    #[error(transparent)]
    Acl(#[from] AclError),
    /// A token name that cannot be held.
    #[error("token name {0:?}: at most {TOKEN_NAME_BYTES_MAX} bytes, no control characters")]
    TokenName(String),
    /// As many tokens as a server holds.
    #[error("{TOKENS_MAX} tokens are the most one server holds; remove some first")]
    TooManyTokens,
    /// The change would leave nobody able to log in on a server that
    /// requires logins.
    #[error("that would remove the last login (user or token) of this server, leaving nobody able to log in; stop the server and use `tidings users remove` if that is meant")]
    LastLogin,
    /// Another process has the store open.
    #[error("{path} is held by another process (a running `tidings serve`?); stop it first, or change users and permissions through it: users with Kafka's AlterUserScramCredentials (kafka-configs.sh --alter --entity-type users), permissions with its ACL APIs (kafka-acls.sh); tokens only while it is stopped")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

/// A user as listed: the name and, per mechanism, the iteration count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The name.
    pub name: String,
    /// The mechanisms it has a credential for, with their iterations.
    pub mechanisms: Vec<(Mechanism, u32)>,
}

/// The store: users, permissions, and the authorizer made from them.
#[derive(Debug)]
pub struct AuthStore {
    path: PathBuf,
    users: BTreeMap<String, BTreeMap<Mechanism, Credential>>,
    /// API tokens by id.
    tokens: BTreeMap<String, Token>,
    /// Counts the changes to the users' credentials since the store was
    /// opened (what a remembered password depends on).
    credentials_version: u64,
    authorizer: Authorizer,
    super_users: Vec<String>,
    /// Held while the store is open.
    _lock: std::fs::File,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    users: Vec<SavedUser>,
    /// Absent in stores saved before tokens existed.
    #[serde(default)]
    tokens: Vec<SavedToken>,
    acls: Vec<Acl>,
}

#[derive(Serialize, Deserialize)]
struct SavedToken {
    id: String,
    user: String,
    name: String,
    created_unix_s: u64,
    expires_unix_s: Option<u64>,
    secret_sha256: String,
}

#[derive(Serialize, Deserialize)]
struct SavedUser {
    name: String,
    credentials: Vec<SavedCredential>,
}

#[derive(Serialize, Deserialize)]
struct SavedCredential {
    mechanism: Mechanism,
    salt: String,
    iterations: u32,
    stored_key: String,
    server_key: String,
}

/// Whether `name` can be a user's: 1..=255 bytes, no control characters.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= USER_NAME_BYTES_MAX && !name.chars().any(char::is_control)
}

fn check_name(name: &str) -> Result<(), StoreError> {
    if !valid_user_name(name) {
        return Err(StoreError::UserName(name.to_owned()));
    }
    Ok(())
}

impl AuthStore {
    /// Opens the store in `dir` (made if missing); `super_users` (`User:<name>`)
    /// pass every check, as Kafka's `super.users`.
    pub fn open(dir: &Path, super_users: Vec<String>) -> Result<AuthStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let lock = lock(&dir.join(LOCK_FILE))?;
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        match std::fs::remove_file(&tmp) {
            Ok(()) => {
                tracing::warn!(path = %tmp.display(), "removed an unfinished change to the users and permissions")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Io { path: tmp, source }),
        }
        let mut store = AuthStore {
            path: path.clone(),
            users: BTreeMap::new(),
            tokens: BTreeMap::new(),
            credentials_version: 0,
            authorizer: Authorizer::new(super_users.clone()),
            super_users,
            _lock: lock,
        };
        let bytes = match read_bounded(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let damaged = |reason: String| StoreError::Damaged {
            path: path.clone(),
            reason,
        };
        let saved = decode(&bytes).map_err(damaged)?;
        for user in saved.users {
            check_name(&user.name).map_err(|e| damaged(e.to_string()))?;
            let mut credentials = BTreeMap::new();
            for c in user.credentials {
                let key = |field: &str, text: &str| {
                    BASE64
                        .decode(text)
                        .map_err(|_| damaged(format!("user {}: {field} is not base64", user.name)))
                };
                credentials.insert(
                    c.mechanism,
                    Credential {
                        mechanism: c.mechanism,
                        salt: key("salt", &c.salt)?,
                        iterations: c.iterations,
                        stored_key: key("stored_key", &c.stored_key)?,
                        server_key: key("server_key", &c.server_key)?,
                    },
                );
            }
            store.users.insert(user.name, credentials);
        }
        for t in saved.tokens {
            check_name(&t.user).map_err(|e| damaged(format!("token {}: {e}", t.id)))?;
            let token = Token::restore(
                &t.id,
                t.user,
                t.name,
                t.created_unix_s,
                t.expires_unix_s,
                &t.secret_sha256,
            )
            .map_err(|reason| damaged(format!("token {}: {reason}", t.id)))?;
            store.tokens.insert(t.id, token);
        }
        for acl in saved.acls {
            store
                .authorizer
                .add(acl)
                .map_err(|e| damaged(format!("a permission: {e}")))?;
        }
        Ok(store)
    }

    /// The authorizer of the stored permissions.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// The user's credential for `mechanism`.
    pub fn credential(&self, user: &str, mechanism: Mechanism) -> Option<Credential> {
        self.users.get(user)?.get(&mechanism).cloned()
    }

    /// Whether anyone can log in — a user with a password or a token —
    /// so that every client must.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty() || !self.tokens.is_empty()
    }

    /// The salt length and iterations of one stored credential for
    /// `mechanism`, the `pick`-th (modulo their number): what a made-up
    /// credential of an unknown user takes, so that it looks like a real
    /// one. Walks the users; it is asked only for names that have no
    /// credential, whose check then costs thousands of hashes anyway.
    pub fn credential_shape(&self, mechanism: Mechanism, pick: u64) -> Option<(usize, u32)> {
        let with = || self.users.values().filter_map(|c| c.get(&mechanism));
        let count = u64::try_from(with().count()).ok().filter(|&n| n > 0)?;
        let index = usize::try_from(pick % count).ok()?;
        with().nth(index).map(|c| (c.salt.len(), c.iterations))
    }

    /// Counts the changes to the users' credentials since the store was
    /// opened.
    pub fn credentials_version(&self) -> u64 {
        self.credentials_version
    }

    /// How many users there are.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// One user, if it exists.
    pub fn user(&self, name: &str) -> Option<UserInfo> {
        self.users.get(name).map(|credentials| UserInfo {
            name: name.to_owned(),
            mechanisms: credentials
                .values()
                .map(|c| (c.mechanism, c.iterations))
                .collect(),
        })
    }

    /// The users, by name.
    pub fn users(&self) -> Vec<UserInfo> {
        self.users
            .iter()
            .map(|(name, credentials)| UserInfo {
                name: name.clone(),
                mechanisms: credentials
                    .values()
                    .map(|c| (c.mechanism, c.iterations))
                    .collect(),
            })
            .collect()
    }

    /// Sets `user`'s credential for its mechanism (adding the user when new),
    /// durably.
    pub fn set_credential(&mut self, user: &str, credential: Credential) -> Result<(), StoreError> {
        check_name(user)?;
        if !self.users.contains_key(user) && self.users.len() >= USERS_MAX {
            return Err(StoreError::TooManyUsers);
        }
        let mut users = self.users.clone();
        users
            .entry(user.to_owned())
            .or_default()
            .insert(credential.mechanism, credential);
        self.save(&users, &self.tokens, &self.authorizer)?;
        self.users = users;
        self.credentials_version += 1;
        Ok(())
    }

    /// Removes `user`'s credential for `mechanism`, or the whole user —
    /// every credential and every token — durably. Answers whether anything
    /// was removed.
    pub fn remove_user(
        &mut self,
        user: &str,
        mechanism: Option<Mechanism>,
    ) -> Result<bool, StoreError> {
        let mut users = self.users.clone();
        let mut tokens = self.tokens.clone();
        let removed = match (users.get_mut(user), mechanism) {
            (None, Some(_)) => false,
            (_, None) => {
                let before = tokens.len();
                tokens.retain(|_, t| t.user() != user);
                users.remove(user).is_some() | (tokens.len() != before)
            }
            (Some(c), Some(m)) => {
                let removed = c.remove(&m).is_some();
                if c.is_empty() {
                    users.remove(user);
                }
                removed
            }
        };
        if removed {
            self.save(&users, &tokens, &self.authorizer)?;
            self.users = users;
            self.credentials_version += 1;
            self.tokens = tokens;
        }
        Ok(removed)
    }

    /// Sets and removes credentials in one durable change, all or none
    /// (Kafka's AlterUserScramCredentials): each of `set` adds or replaces
    /// a user's credential for its mechanism, each of `remove` takes one
    /// away (a user left with none and no token is gone). Answers, per
    /// removal, whether the user had that credential; what it did not have
    /// is left out of the change.
    pub fn alter_credentials(
        &mut self,
        set: Vec<(String, Credential)>,
        remove: &[(String, Mechanism)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut users = self.users.clone();
        let mut found = Vec::with_capacity(remove.len());
        for (user, mechanism) in remove {
            let had = users
                .get_mut(user)
                .is_some_and(|c| c.remove(mechanism).is_some());
            if users.get(user).is_some_and(BTreeMap::is_empty) {
                users.remove(user);
            }
            found.push(had);
        }
        for (user, credential) in set {
            check_name(&user)?;
            if !users.contains_key(&user) && users.len() >= USERS_MAX {
                return Err(StoreError::TooManyUsers);
            }
            users
                .entry(user)
                .or_default()
                .insert(credential.mechanism, credential);
        }
        if users.is_empty() && self.tokens.is_empty() && self.has_users() {
            return Err(StoreError::LastLogin);
        }
        if users != self.users {
            self.save(&users, &self.tokens, &self.authorizer)?;
            self.users = users;
            self.credentials_version += 1;
        }
        Ok(found)
    }

    /// Makes a token for `user` (who needs no password: a service may log in
    /// by token alone), durably; answers the token's text — shown once, kept
    /// only as a hash — and what is listed of it.
    pub fn add_token(
        &mut self,
        user: &str,
        name: &str,
        now_unix_s: u64,
        expires_unix_s: Option<u64>,
    ) -> Result<(String, TokenInfo), StoreError> {
        check_name(user)?;
        if name.len() > TOKEN_NAME_BYTES_MAX || name.chars().any(char::is_control) {
            return Err(StoreError::TokenName(name.to_owned()));
        }
        if self.tokens.len() >= TOKENS_MAX {
            return Err(StoreError::TooManyTokens);
        }
        let (text, id, token) = Token::new(user, name, now_unix_s, expires_unix_s);
        let info = token.info(&id);
        let mut tokens = self.tokens.clone();
        tokens.insert(id, token);
        self.save(&self.users, &tokens, &self.authorizer)?;
        self.tokens = tokens;
        Ok((text, info))
    }

    /// The tokens, by id (never their secrets).
    pub fn tokens(&self) -> Vec<TokenInfo> {
        self.tokens.iter().map(|(id, t)| t.info(id)).collect()
    }

    /// Revokes the token `id`, durably; answers whether it existed.
    pub fn remove_token(&mut self, id: &str) -> Result<bool, StoreError> {
        if !self.tokens.contains_key(id) {
            return Ok(false);
        }
        let mut tokens = self.tokens.clone();
        tokens.remove(id);
        self.save(&self.users, &tokens, &self.authorizer)?;
        self.tokens = tokens;
        Ok(true)
    }

    /// The user a token's text logs in as, at `now_unix_s`.
    pub fn token_user(&self, text: &str, now_unix_s: u64) -> Result<&str, TokenRefusal> {
        let (id, secret) = crate::token::parse(text)?;
        let token = self.tokens.get(id).ok_or(TokenRefusal::Unknown)?;
        token.check(id, secret, now_unix_s)?;
        Ok(token.user())
    }

    /// Adds permissions, durably, all or none; answers which were new.
    pub fn add_acls(&mut self, acls: Vec<Acl>) -> Result<Vec<bool>, StoreError> {
        let mut authorizer = self.authorizer.clone();
        let mut new = Vec::with_capacity(acls.len());
        for acl in acls {
            new.push(authorizer.add(acl)?);
        }
        if new.contains(&true) {
            self.save(&self.users, &self.tokens, &authorizer)?;
            self.authorizer = authorizer;
        }
        Ok(new)
    }

    /// Removes the permissions `filter` selects, durably; answers them.
    pub fn remove_acls(&mut self, filter: &AclFilter) -> Result<Vec<Acl>, StoreError> {
        let mut authorizer = self.authorizer.clone();
        let removed = authorizer.remove(filter);
        if !removed.is_empty() {
            self.save(&self.users, &self.tokens, &authorizer)?;
            self.authorizer = authorizer;
        }
        Ok(removed)
    }

    /// The super users it was opened with.
    pub fn super_users(&self) -> &[String] {
        &self.super_users
    }

    fn save(
        &self,
        users: &BTreeMap<String, BTreeMap<Mechanism, Credential>>,
        tokens: &BTreeMap<String, Token>,
        authorizer: &Authorizer,
    ) -> Result<(), StoreError> {
        let saved = Saved {
            users: users
                .iter()
                .map(|(name, credentials)| SavedUser {
                    name: name.clone(),
                    credentials: credentials
                        .values()
                        .map(|c| SavedCredential {
                            mechanism: c.mechanism,
                            salt: BASE64.encode(&c.salt),
                            iterations: c.iterations,
                            stored_key: BASE64.encode(&c.stored_key),
                            server_key: BASE64.encode(&c.server_key),
                        })
                        .collect(),
                })
                .collect(),
            tokens: tokens
                .iter()
                .map(|(id, t)| {
                    let info = t.info(id);
                    SavedToken {
                        id: info.id,
                        user: info.user,
                        name: info.name,
                        created_unix_s: info.created_unix_s,
                        expires_unix_s: info.expires_unix_s,
                        secret_sha256: t.hash_hex(),
                    }
                })
                .collect(),
            acls: authorizer.list(&AclFilter::default()),
        };
        let body = serde_json::to_vec(&saved).expect("the state serializes");
        let mut bytes = Vec::with_capacity(HEADER_BYTES + 8 + body.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&tidings_log::format::FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0, 0]);
        tidings_log::format::frame(&mut bytes, &body);
        if bytes.len() > AUTH_STATE_BYTES_MAX {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(format!(
                    "{} bytes; the store is at most {AUTH_STATE_BYTES_MAX}",
                    bytes.len()
                )),
            });
        }
        tidings_log::format::replace_durably(&self.path, &bytes).map_err(|source| StoreError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Where a server keeps its users and permissions: `<data dir>/auth`.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("auth")
}

/// Takes the store's lock, waiting up to [`LOCK_WAIT`] for it.
fn lock(path: &Path) -> Result<std::fs::File, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io)?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

/// The file, refused before it is read when it is larger than a store is.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let len = std::fs::metadata(path)?.len();
    if len > AUTH_STATE_BYTES_MAX as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes; the store is at most {AUTH_STATE_BYTES_MAX}"),
        ));
    }
    std::fs::read(path)
}

fn decode(bytes: &[u8]) -> Result<Saved, String> {
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or_else(|| format!("{} bytes, shorter than its header", bytes.len()))?;
    if header[..4] != MAGIC {
        return Err(format!("magic {:?} is not {MAGIC:?}", &header[..4]));
    }
    if header[6..] != [0, 0] {
        return Err(format!(
            "reserved header bytes {:?} are not zero",
            &header[6..]
        ));
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != tidings_log::format::FORMAT_VERSION {
        return Err(format!(
            "format version {version}; this build reads {}",
            tidings_log::format::FORMAT_VERSION
        ));
    }
    let (frames, end) = tidings_log::format::frames(bytes, HEADER_BYTES, AUTH_STATE_BYTES_MAX);
    match (&frames[..], end == bytes.len()) {
        ([body], true) => {
            serde_json::from_slice(body).map_err(|e| format!("its body does not read: {e}"))
        }
        _ => Err(format!(
            "expected one whole frame after the header; the valid frames end at byte {end} of {}",
            bytes.len()
        )),
    }
}
