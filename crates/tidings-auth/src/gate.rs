//! What every listener holds: the store behind a lock and a secret of the
//! process, and the questions a listener asks of them — must this
//! connection log in, is this login good, may this principal do this.
//!
//! Logging in is required as soon as the store has a user; a store without
//! users is an open server (a laptop), which `serve` keeps on loopback.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use hmac::{KeyInit as _, Mac as _};

use crate::acl::{Decision, Operation, Request, ResourceType};
use crate::limits::{
    PASSWORDS_REMEMBERED_MAX, PASSWORD_BYTES_MAX, SCRAM_ITERATIONS_DEFAULT, SCRAM_SALT_BYTES,
    USER_NAME_BYTES_MAX,
};
use crate::scram::{Credential, Mechanism, ScramError, ServerExchange, ServerFirst};
use crate::store::AuthStore;

/// Who a request comes from, as permissions name it: `User:<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal(String);

impl Principal {
    /// The principal of a request on an open server, Kafka's
    /// `User:ANONYMOUS`.
    pub fn anonymous() -> Principal {
        Principal("User:ANONYMOUS".to_owned())
    }

    /// The principal of a logged-in user.
    pub fn user(name: &str) -> Principal {
        Principal(format!("User:{name}"))
    }

    /// `User:<name>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SASL mechanism the server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    /// `PLAIN`: the password itself, checked against the stored credential.
    Plain,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    Scram(Mechanism),
}

impl Login {
    /// Every mechanism, in the order the server offers them.
    pub const ALL: [Login; 3] = [
        Login::Plain,
        Login::Scram(Mechanism::Sha256),
        Login::Scram(Mechanism::Sha512),
    ];

    /// Its SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Login::Plain => "PLAIN",
            Login::Scram(m) => m.name(),
        }
    }

    /// The mechanism a SASL name names.
    pub fn from_name(name: &str) -> Option<Login> {
        Login::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// The users and permissions of a running server, shared by its listeners.
pub struct Gate {
    store: RwLock<AuthStore>,
    /// Whether clients must log in, kept beside the store so that every
    /// request asks without the lock: set once the store has a user or a
    /// token, and never cleared while the process runs — a server that was
    /// closed when it started listening (maybe beyond loopback, which it
    /// allows only then) never opens by a change that leaves nobody to log
    /// in as.
    required: AtomicBool,
    /// Counts the changes to credentials: a password verified across one is
    /// not remembered (the change may have removed it).
    changes: AtomicU64,
    /// Salts the made-up credentials of unknown users (see [`ServerExchange`]),
    /// and keys the fingerprints of passwords lately verified.
    decoy_key: [u8; 32],
    /// Passwords verified within [`PASSWORD_REMEMBERED_FOR`], by a keyed
    /// fingerprint of user and password (never the password): an HTTP
    /// client sends its password with every request, and checking it costs
    /// thousands of HMACs.
    remembered: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

/// How long a verified password is taken without hashing it again. Every
/// change to the store forgets them all, so nothing remembered outlives a
/// changed or removed credential.
pub const PASSWORD_REMEMBERED_FOR: Duration = Duration::from_secs(300);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("required", &self.required())
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate over `store`.
    pub fn new(store: AuthStore) -> Gate {
        let mut decoy_key = [0; 32];
        crate::random::fill(&mut decoy_key);
        Gate {
            required: AtomicBool::new(store.has_users()),
            changes: AtomicU64::new(0),
            store: RwLock::new(store),
            decoy_key,
            remembered: Mutex::new(HashMap::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, AuthStore> {
        // A panic while holding the lock leaves the store as it was on disk
        // (changes are taken only once written), so the state is sound.
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether connections must log in: the store has had a user or a
    /// token since the process started.
    pub fn required(&self) -> bool {
        self.required.load(Ordering::Acquire)
    }

    /// Checks a SASL PLAIN message. Hashes the password (thousands of
    /// HMACs): call it off the async workers.
    pub fn plain(&self, message: &[u8]) -> Result<Principal, ScramError> {
        // The lock is held for the lookup only, not the hashing.
        crate::plain::authenticate_with_decoy(
            message,
            |user, m| self.read().credential(user, m),
            |user| self.credential_or_decoy(user, Mechanism::Sha256),
        )
        .map(|user| Principal::user(&user))
    }

    /// HMAC-SHA-256 of `parts` under the process's secret.
    fn keyed(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.decoy_key)
            .expect("HMAC takes a key of any length");
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// The user's credential for `mechanism`, or, for a user without one,
    /// a decoy that fails every check: its salt made from the process's
    /// secret and the name (the same each time, as a real one), its salt
    /// length and iterations those of a stored credential picked by the
    /// name — so neither what SCRAM shows (`s=`, `i=`) nor the work a
    /// PLAIN check does tells an unknown user from a known one, whatever
    /// shapes the users' credentials have (AlterUserScramCredentials takes
    /// the client's salt and iterations).
    fn credential_or_decoy(&self, user: &str, mechanism: Mechanism) -> Credential {
        let store = self.read();
        if let Some(c) = store.credential(user, mechanism) {
            return c;
        }
        let mac = |parts: &[&[u8]]| self.keyed(parts);
        let pick = mac(&[b"shape", mechanism.name().as_bytes(), user.as_bytes()]);
        let pick = u64::from_le_bytes(pick[..8].try_into().expect("8 bytes"));
        let (salt_bytes, iterations) = store
            .credential_shape(mechanism, pick)
            .unwrap_or((SCRAM_SALT_BYTES, SCRAM_ITERATIONS_DEFAULT));
        drop(store);
        let mut salt = Vec::with_capacity(salt_bytes + 32);
        for block in 0u8.. {
            if salt.len() >= salt_bytes {
                break;
            }
            salt.extend_from_slice(&mac(&[
                b"salt",
                mechanism.name().as_bytes(),
                user.as_bytes(),
                &[block],
            ]));
        }
        salt.truncate(salt_bytes);
        Credential {
            mechanism,
            salt,
            iterations,
            // No key: every proof and password fails against it.
            stored_key: Vec::new(),
            server_key: Vec::new(),
        }
    }

    /// Checks a user's password (HTTP basic authentication) against the
    /// stored credential, or against what was verified lately. A miss
    /// hashes the password: call it off the async workers.
    pub fn password(&self, user: &str, password: &str) -> Result<Principal, ScramError> {
        if user.is_empty()
            || user.len() > USER_NAME_BYTES_MAX
            || password.len() > PASSWORD_BYTES_MAX
        {
            return Err(ScramError::Failed);
        }
        let fingerprint = self.keyed(&[user.as_bytes(), &[0], password.as_bytes()]);
        let now = Instant::now();
        {
            let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((who, at)) = remembered.get(&fingerprint) {
                if who == user && now.duration_since(*at) < PASSWORD_REMEMBERED_FOR {
                    return Ok(Principal::user(user));
                }
            }
        }
        let message = format!("\0{user}\0{password}");
        let changes = self.changes.load(Ordering::Acquire);
        let principal = self.plain(message.as_bytes())?;
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if self.changes.load(Ordering::Acquire) != changes {
            return Ok(principal);
        }
        if remembered.len() >= PASSWORDS_REMEMBERED_MAX {
            remembered.retain(|_, (_, at)| now.duration_since(*at) < PASSWORD_REMEMBERED_FOR);
            if remembered.len() >= PASSWORDS_REMEMBERED_MAX {
                remembered.clear();
            }
        }
        remembered.insert(fingerprint, (user.to_owned(), now));
        Ok(principal)
    }

    /// Checks an API token (HTTP `Authorization: Bearer`): one SHA-256, so
    /// it may run on the async workers.
    pub fn token(&self, text: &str) -> Result<Principal, crate::TokenRefusal> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.read().token_user(text, now).map(Principal::user)
    }

    /// Starts a SCRAM exchange with the client's first message; the answer
    /// is the server's first message and the exchange to finish.
    pub fn scram(
        &self,
        mechanism: Mechanism,
        client_first: &[u8],
    ) -> Result<(ServerFirst, String), ScramError> {
        ServerExchange::new(mechanism, self.decoy_key).start(client_first, |user| {
            Some(self.credential_or_decoy(user, mechanism))
        })
    }

    /// Decides whether `principal`, from `host`, may do `operation` to the
    /// resource.
    pub fn authorize(
        &self,
        principal: &Principal,
        host: IpAddr,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        let host = host.to_string();
        self.read().authorizer().authorize(&Request {
            principal: principal.as_str(),
            host: &host,
            operation,
            resource_type,
            name,
        })
    }

    /// Whether `principal` may do `operation` to some resource of the type
    /// (see [`crate::Authorizer::allows_some`]).
    pub fn allows_some(
        &self,
        principal: &Principal,
        host: IpAddr,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        let host = host.to_string();
        self.read().authorizer().allows_some(&Request {
            principal: principal.as_str(),
            host: &host,
            operation,
            resource_type,
            name: "",
        })
    }

    /// Runs `f` on the store, for listings.
    pub fn with_store<T>(&self, f: impl FnOnce(&AuthStore) -> T) -> T {
        f(&self.read())
    }

    /// Runs `f` on the store to change it (its changes are durable before
    /// they are taken). Blocks on the disk: call it off the async workers.
    /// Passwords verified before a change to the credentials are forgotten.
    pub fn change<T>(&self, f: impl FnOnce(&mut AuthStore) -> T) -> T {
        let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
        let before = store.credentials_version();
        let answer = f(&mut store);
        if store.has_users() {
            self.required.store(true, Ordering::Release);
        }
        // Permissions and tokens do not change what a password proves.
        if store.credentials_version() != before {
            self.changes.fetch_add(1, Ordering::AcqRel);
            self.remembered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        answer
    }
}
