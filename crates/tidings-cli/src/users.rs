//! `tidings users`: the users clients log in as, kept in the server's data
//! directory. The one command besides `serve` that opens the data directory
//! itself, as Kafka's `kafka-storage format --add-scram` does: it works while
//! the server is stopped (the store's lock refuses it while one runs), and
//! the server reads the users when it starts.
//!
//! A password is read from `TIDINGS_NEW_PASSWORD` or, without it, from the first
//! line of standard input — never from an argument, which other users of the
//! machine could read in the process list. Only SCRAM credentials are kept
//! (salt, iterations and two keys); PLAIN logins are checked against them.
//!
//! `tidings users token` makes, lists and revokes API tokens, bearer
//! credentials for HTTP clients: a new token is printed once and kept only
//! as a hash.

use std::io::{BufRead as _, Read as _};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde::Serialize;
use tidings_auth::limits::{PASSWORD_BYTES_MAX, SCRAM_ITERATIONS_DEFAULT};
use tidings_auth::scram::{Credential, Mechanism};
use tidings_auth::AuthStore;

use crate::output::{Mode, Output};

/// Where the data directory is, as `serve` takes it.
#[derive(Debug, clap::Args)]
pub(crate) struct DataDir {
    /// The server's data directory.
    #[arg(long, env = "TIDINGS_DATA_DIR", default_value = "./tidings-data")]
    pub(crate) data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Users {
    /// Add a user, or set a user's password (read from TIDINGS_NEW_PASSWORD or
    /// the first line of standard input).
    Add {
        /// The user's name.
        name: String,
        /// The SCRAM mechanisms to keep a credential for (PLAIN logins use
        /// either).
        #[arg(
            long = "mechanism",
            value_name = "MECHANISM",
            value_delimiter = ',',
            default_value = "SCRAM-SHA-256,SCRAM-SHA-512",
            value_parser = mechanism
        )]
        mechanisms: Vec<Mechanism>,
        /// PBKDF2 iterations of the credential (4096..=16384).
        #[arg(long, default_value_t = SCRAM_ITERATIONS_DEFAULT)]
        iterations: u32,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List the users and the mechanisms each can log in with.
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// API tokens: bearer credentials for HTTP clients (a CI job, a
    /// dashboard), each logging in as a user, who needs no password.
    #[command(subcommand)]
    Token(Token),
    /// Remove a user — its credentials and its tokens — or only its
    /// credential for one mechanism.
    Remove {
        /// The user's name.
        name: String,
        /// Remove only this mechanism's credential.
        #[arg(long, value_name = "MECHANISM", value_parser = mechanism)]
        mechanism: Option<Mechanism>,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Token {
    /// Make a token that logs in as USER; it is printed once, and kept only
    /// as a hash.
    Add {
        /// The user it logs in as (`User:<USER>` in permissions).
        user: String,
        /// What it is for, shown in listings.
        #[arg(long, default_value = "")]
        name: String,
        /// When it stops being taken: a count of s, m, h or d (90d, 12h).
        #[arg(long, value_name = "DURATION", value_parser = lifetime_s)]
        expires_in: Option<u64>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List the tokens: id, user, name, when made, when they expire.
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Revoke a token by its id (the hex after `tdg_`).
    Remove {
        /// The token's id.
        id: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// Seconds of `90d`, `12h`, `15m` or `30s`.
fn lifetime_s(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?}: a whole number then s, m, h or d (90d, 12h)");
    let unit_s = match text.chars().last().ok_or_else(bad)? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let count: u64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
    match count.checked_mul(unit_s) {
        Some(0) | None => Err(bad()),
        Some(s) => Ok(s),
    }
}

/// A time in seconds since the epoch as RFC 3339, UTC.
fn rfc3339(unix_s: u64) -> String {
    i64::try_from(unix_s)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix_s} (Unix seconds)"))
}

fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mechanism(name: &str) -> Result<Mechanism, String> {
    Mechanism::from_name(name)
        .ok_or_else(|| format!("{name:?}: the mechanisms are SCRAM-SHA-256 and SCRAM-SHA-512"))
}

pub(crate) fn open(dir: &DataDir) -> Result<AuthStore> {
    let auth = tidings_auth::store::dir_in(&dir.data_dir);
    AuthStore::open(&auth, Vec::new()).with_context(|| {
        format!(
            "cannot open the users and permissions in {}",
            auth.display()
        )
    })
}

/// The password: `TIDINGS_NEW_PASSWORD`, or the first line of standard input.
fn password() -> Result<String> {
    let password = match std::env::var("TIDINGS_NEW_PASSWORD") {
        Ok(p) => p,
        Err(std::env::VarError::NotUnicode(_)) => bail!("TIDINGS_NEW_PASSWORD is not UTF-8"),
        Err(std::env::VarError::NotPresent) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .take(PASSWORD_BYTES_MAX as u64 + 2)
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
    };
    if password.is_empty() {
        bail!("no password: set TIDINGS_NEW_PASSWORD or write it on standard input");
    }
    if password.len() > PASSWORD_BYTES_MAX {
        bail!("a password is at most {PASSWORD_BYTES_MAX} bytes");
    }
    Ok(password)
}

#[derive(Serialize)]
struct ListedToken {
    id: String,
    user: String,
    name: String,
    created_unix_s: u64,
    expires_unix_s: Option<u64>,
}

fn tokens(command: Token, out: &mut Output<std::io::StdoutLock<'static>>) -> Result<()> {
    match command {
        Token::Add {
            user,
            name,
            expires_in,
            dir,
        } => {
            let mut store = open(&dir)?;
            let now = now_unix_s();
            let expires = expires_in.map(|s| now.saturating_add(s));
            let (text, info) = store.add_token(&user, &name, now, expires)?;
            out.text_line(&text)?;
            out.json_line(&serde_json::json!({
                "token": text,
                "id": info.id,
                "user": info.user,
                "expires_unix_s": info.expires_unix_s,
            }))?;
            // The listing is for a person; the token alone is on stdout.
            eprintln!(
                "token {} logs in as {user}{}; it is shown this once",
                info.id,
                match expires {
                    Some(at) => format!(" until {}", rfc3339(at)),
                    None => String::new(),
                }
            );
        }
        Token::List { dir } => {
            let listed: Vec<ListedToken> = open(&dir)?
                .tokens()
                .into_iter()
                .map(|t| ListedToken {
                    id: t.id,
                    user: t.user,
                    name: t.name,
                    created_unix_s: t.created_unix_s,
                    expires_unix_s: t.expires_unix_s,
                })
                .collect();
            let now = now_unix_s();
            out.answer(&listed, |tokens: &Vec<ListedToken>| {
                if tokens.is_empty() {
                    return "no tokens".to_owned();
                }
                let lines: Vec<String> = tokens
                    .iter()
                    .map(|t| {
                        let expiry = match t.expires_unix_s {
                            None => "never expires".to_owned(),
                            Some(at) if at <= now => format!("expired {}", rfc3339(at)),
                            Some(at) => format!("expires {}", rfc3339(at)),
                        };
                        format!(
                            "{}  {}  {:?}  made {}, {expiry}",
                            t.id,
                            t.user,
                            t.name,
                            rfc3339(t.created_unix_s)
                        )
                    })
                    .collect();
                lines.join("\n")
            })?;
        }
        Token::Remove { id, dir } => {
            // A whole token pasted here names its id; its secret is
            // never echoed.
            let id = id.strip_prefix(tidings_auth::token::PREFIX).unwrap_or(&id);
            let id = id.split('_').next().unwrap_or(id);
            if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("a token's id is the 16 hex digits after tdg_ (`tidings users token list` shows them)");
            }
            let mut store = open(&dir)?;
            if !store.remove_token(id)? {
                bail!("no token with id {id:?} (`tidings users token list` shows them)");
            }
            out.text_line(&format!("revoked token {id}"))?;
            out.json_line(&serde_json::json!({ "revoked": id }))?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct Listed {
    name: String,
    mechanisms: Vec<ListedMechanism>,
}

#[derive(Serialize)]
struct ListedMechanism {
    mechanism: &'static str,
    iterations: u32,
}

pub(crate) fn users(command: Users, mode: Mode) -> Result<()> {
    let mut out = Output::new(std::io::stdout().lock(), mode);
    match command {
        Users::Add {
            name,
            mechanisms,
            iterations,
            dir,
        } => {
            let mut store = open(&dir)?;
            let password = password()?;
            for m in &mechanisms {
                let credential = Credential::new(*m, &password, iterations)
                    .with_context(|| format!("a {} credential", m.name()))?;
                store.set_credential(&name, credential)?;
            }
            let names: Vec<_> = mechanisms.iter().map(|m| m.name()).collect();
            out.text_line(&format!("user {name}: {}", names.join(", ")))?;
            out.json_line(&serde_json::json!({ "user": name, "mechanisms": names }))?;
        }
        Users::List { dir } => {
            let listed: Vec<Listed> = open(&dir)?
                .users()
                .into_iter()
                .map(|u| Listed {
                    name: u.name,
                    mechanisms: u
                        .mechanisms
                        .into_iter()
                        .map(|(m, iterations)| ListedMechanism {
                            mechanism: m.name(),
                            iterations,
                        })
                        .collect(),
                })
                .collect();
            out.answer(&listed, |users: &Vec<Listed>| {
                if users.is_empty() {
                    return "no users: the server is open to anyone who reaches it (on loopback by default)".to_owned();
                }
                let lines: Vec<String> = users
                    .iter()
                    .map(|u| {
                        let ms: Vec<_> = u
                            .mechanisms
                            .iter()
                            .map(|m| format!("{} ({} iterations)", m.mechanism, m.iterations))
                            .collect();
                        format!("{}  {}", u.name, ms.join(", "))
                    })
                    .collect();
                lines.join("\n")
            })?;
        }
        Users::Token(token) => tokens(token, &mut out)?,
        Users::Remove {
            name,
            mechanism,
            dir,
        } => {
            let mut store = open(&dir)?;
            if !store.remove_user(&name, mechanism)? {
                bail!("no such user {name:?}");
            }
            out.text_line(&format!("removed {name}"))?;
            out.json_line(&serde_json::json!({ "removed": name }))?;
        }
    }
    out.flush()
}
