//! Where the client commands find the server and how they log in.
//!
//! Three layers, the first that says anything winning:
//! 1. flags: `--server`, `--token`, `--user`;
//! 2. the environment: `TIDINGS_URL`, `TIDINGS_TOKEN`, `TIDINGS_USER` with
//!    `TIDINGS_PASSWORD`;
//! 3. the client's configuration file: `--client-config`, else
//!    `TIDINGS_CLIENT_CONFIG`, else `$XDG_CONFIG_HOME/tidings/client.toml`
//!    (`~/.config/tidings/client.toml`), with the keys `server`, `token`,
//!    `user` and `password`.
//!
//! The login is taken whole from one layer — a token from the flags is
//! never paired with a password from the file, and `--user` wins over a
//! `TIDINGS_TOKEN` in the environment. A token and a user in the same
//! layer are refused as ambiguous. The default file is read only when the
//! flags and the environment leave the server or the login unsaid. A file that holds a secret (a token
//! or a password) and that other users of the machine may read is refused,
//! as ssh refuses such a key: the secret is no longer one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tidings_client::Client;

/// The client's configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientFile {
    server: Option<String>,
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

/// How requests log in.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Login {
    Anonymous,
    Token(String),
    Password { user: String, password: String },
}

/// What the flags and the environment said, as clap read them.
pub(crate) struct Given<'a> {
    /// `--server`/`TIDINGS_URL`, and whether it was given rather than defaulted.
    pub(crate) server: (&'a str, Option<&'static str>),
    /// `--token`/`TIDINGS_TOKEN`, and whether it was a flag.
    pub(crate) token: Option<(&'a str, bool)>,
    /// `--user`/`TIDINGS_USER`, and whether it was a flag.
    pub(crate) user: Option<(&'a str, bool)>,
    pub(crate) client_config: Option<&'a Path>,
}

/// The default file: `$XDG_CONFIG_HOME/tidings/client.toml`, or under
/// `~/.config`.
fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("tidings").join("client.toml"))
}

/// Reads the file at `path`; a missing file is an empty one only when it
/// was not named explicitly.
fn read(path: &Path, named: bool) -> Result<ClientFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
            return Ok(ClientFile::default())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: ClientFile =
        toml::from_str(&text).with_context(|| format!("{} does not read", path.display()))?;
    if file.token.is_some() || file.password.is_some() {
        private(path)?;
    }
    Ok(file)
}

/// Refuses a file of secrets that others may read.
#[cfg(unix)]
fn private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} holds a token or password but its permissions are {:o}: other users of this machine can read it; run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn private(_path: &Path) -> Result<()> {
    Ok(())
}

/// The server and login the layers give, and a client for them.
pub(crate) fn client(given: &Given<'_>) -> Result<Client> {
    // clap has read TIDINGS_CLIENT_CONFIG into the flag.
    let unsaid = given.server.1.is_none() || (given.token.is_none() && given.user.is_none());
    let (path, named) = match given.client_config {
        Some(p) => (Some(p.to_owned()), true),
        None if unsaid => (default_path(), false),
        None => (None, false),
    };
    let file = match &path {
        Some(p) => read(p, named)?,
        None => ClientFile::default(),
    };
    let from_file = |what: &str| {
        path.as_ref()
            .map_or_else(String::new, |p| format!("{what} in {}", p.display()))
    };
    let (server, server_from) = match (given.server, &file.server) {
        ((server, Some(from)), _) => (server.to_owned(), from.to_owned()),
        (_, Some(server)) => (server.clone(), from_file("server")),
        ((server, None), None) => (server.to_owned(), "--server".to_owned()),
    };
    let login = login(given, file, &from_file("the login"))?;
    let client = Client::new(&server).with_context(|| format!("{server_from} {server:?}"))?;
    Ok(match login {
        Login::Anonymous => client,
        Login::Token(token) => client.with_token(&token)?,
        Login::Password { user, password } => client.with_login(&user, &password),
    })
}

/// The login of the first layer that names one.
fn login(given: &Given<'_>, file: ClientFile, file_name: &str) -> Result<Login> {
    // A flag beats the environment; two of one layer are ambiguous.
    let (token, user) = match (given.token, given.user) {
        (Some((t, true)), Some((_, false))) => (Some(t), None),
        (Some((_, false)), Some((u, true))) => (None, Some(u)),
        (t, u) => (t.map(|(t, _)| t), u.map(|(u, _)| u)),
    };
    match (token, user) {
        (Some(_), Some(_)) => {
            bail!("a token (--token/TIDINGS_TOKEN) and a user (--user/TIDINGS_USER) were both given; give one")
        }
        (Some(token), None) => return Ok(Login::Token(token.to_owned())),
        (None, Some(user)) => {
            let password = std::env::var("TIDINGS_PASSWORD").map_err(|_| {
                anyhow::anyhow!("--user {user}: set the password in TIDINGS_PASSWORD")
            })?;
            return Ok(Login::Password {
                user: user.to_owned(),
                password,
            });
        }
        (None, None) => {}
    }
    match (file.token, file.user, file.password) {
        (Some(_), Some(_), _) => bail!("{file_name}: a token and a user; give one"),
        (Some(token), None, None) => Ok(Login::Token(token)),
        (Some(_), None, Some(_)) => bail!("{file_name}: a password without a user"),
        (None, Some(user), Some(password)) => Ok(Login::Password { user, password }),
        (None, Some(user), None) => bail!("{file_name}: user {user:?} without a password"),
        (None, None, Some(_)) => bail!("{file_name}: a password without a user"),
        (None, None, None) => Ok(Login::Anonymous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ClientFile {
        toml::from_str(text).unwrap()
    }

    fn given<'a>(token: Option<&'a str>, user: Option<&'a str>) -> Given<'a> {
        Given {
            server: ("http://127.0.0.1:8080", None),
            token: token.map(|t| (t, false)),
            user: user.map(|u| (u, false)),
            client_config: None,
        }
    }

    #[test]
    fn the_first_layer_with_a_login_gives_all_of_it() {
        let f = || file("token = \"tdg_file\"");
        assert_eq!(
            login(&given(Some("tdg_flag"), None), f(), "f").unwrap(),
            Login::Token("tdg_flag".into())
        );
        assert_eq!(
            login(&given(None, None), f(), "f").unwrap(),
            Login::Token("tdg_file".into())
        );
        assert_eq!(
            login(
                &given(None, None),
                file("user = \"u\"\npassword = \"p\""),
                "f"
            )
            .unwrap(),
            Login::Password {
                user: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            login(&given(None, None), ClientFile::default(), "f").unwrap(),
            Login::Anonymous
        );
    }

    #[test]
    fn a_flag_beats_the_environment_of_the_other_login() {
        let token_flag = Given {
            token: Some(("tdg_flag", true)),
            ..given(None, Some("alice"))
        };
        assert_eq!(
            login(&token_flag, ClientFile::default(), "f").unwrap(),
            Login::Token("tdg_flag".into())
        );
        let both_flags = Given {
            token: Some(("t", true)),
            user: Some(("u", true)),
            ..given(None, None)
        };
        assert!(login(&both_flags, ClientFile::default(), "f").is_err());
    }

    #[test]
    fn ambiguous_or_half_logins_are_refused() {
        assert!(login(&given(Some("t"), Some("u")), ClientFile::default(), "f").is_err());
        for text in [
            "token = \"t\"\nuser = \"u\"",
            "user = \"u\"",
            "password = \"p\"",
            "token = \"t\"\npassword = \"p\"",
        ] {
            let e = login(&given(None, None), file(text), "the login in x.toml").unwrap_err();
            assert!(e.to_string().contains("x.toml"), "{text}: {e}");
        }
        assert!(toml::from_str::<ClientFile>("tokne = \"t\"").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_file_of_secrets_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, "token = \"tdg_x\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&path, true).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&path, true).unwrap().token.as_deref(), Some("tdg_x"));
        // A file naming only the server may be read by anyone.
        std::fs::write(&path, "server = \"https://x:1\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read(&path, true).is_ok());
        assert!(read(&dir.path().join("none.toml"), false).is_ok());
        assert!(read(&dir.path().join("none.toml"), true).is_err());
    }
}
