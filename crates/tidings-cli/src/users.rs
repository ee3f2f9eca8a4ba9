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
    /// Remove a user, or only its credential for one mechanism.
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
