//! API tokens: bearer credentials for HTTP clients and services that have
//! no password (a CI job, a dashboard, a deploy script).
//!
//! A token reads `tdg_<id>_<secret>`: the id is 8 random bytes in hex, the
//! name it is listed and revoked by; the secret is 32 random bytes in
//! base64url. The store keeps the id, the owner, a name, its times and the
//! SHA-256 of the secret — never the secret, which is shown once when the
//! token is made. A secret of 256 random bits needs no salt nor slow hash:
//! guessing one is as hard as guessing the hash's preimage, and a lookup
//! costs one SHA-256 (so HTTP requests can log in by token on the async
//! workers). The hash is compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

use crate::limits::{TOKEN_BYTES_MAX, TOKEN_ID_BYTES, TOKEN_SECRET_BYTES};

/// What every token's text starts with, so that a leaked one is
/// recognisable (secret scanners look for such prefixes).
pub const PREFIX: &str = "tdg_";

/// A token as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its id, the part after `tdg_` and before the secret.
    pub id: String,
    /// The user it logs in as (`User:<user>` in permissions).
    pub user: String,
    /// What it is for, as its maker said.
    pub name: String,
    /// When it was made, in seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// When it stops being taken, if ever.
    pub expires_unix_s: Option<u64>,
}

/// Why a token's text does not log in.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// Not the shape of a token.
    #[error("not a Tidings token (tdg_<id>_<secret>)")]
    Malformed,
    /// No such token, or its secret is wrong: revoked or never made.
    #[error("unknown or revoked token")]
    Unknown,
    /// It was good until its expiry.
    #[error("token {id} expired at {expired_unix_s} (Unix seconds)")]
    Expired {
        /// The token's id.
        id: String,
        /// When.
        expired_unix_s: u64,
    },
}

/// A stored token.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    user: String,
    name: String,
    created_unix_s: u64,
    expires_unix_s: Option<u64>,
    secret_sha256: [u8; 32],
}

impl Token {
    /// A new token for `user`: its text, its id and what is kept of it.
    pub(crate) fn new(
        user: &str,
        name: &str,
        created_unix_s: u64,
        expires_unix_s: Option<u64>,
    ) -> (String, String, Token) {
        let mut id = [0; TOKEN_ID_BYTES];
        crate::random::fill(&mut id);
        let mut secret = [0; TOKEN_SECRET_BYTES];
        crate::random::fill(&mut secret);
        let id = hex(&id);
        let secret = URL_SAFE_NO_PAD.encode(secret);
        let token = Token {
            user: user.to_owned(),
            name: name.to_owned(),
            created_unix_s,
            expires_unix_s,
            secret_sha256: sha2::Sha256::digest(secret.as_bytes()).into(),
        };
        (format!("{PREFIX}{id}_{secret}"), id, token)
    }

    /// A token read back from the store.
    pub(crate) fn restore(
        id: &str,
        user: String,
        name: String,
        created_unix_s: u64,
        expires_unix_s: Option<u64>,
        secret_sha256_hex: &str,
    ) -> Result<Token, String> {
        if id.len() != TOKEN_ID_BYTES * 2 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("the id is not {} hex digits", TOKEN_ID_BYTES * 2));
        }
        let hash = unhex(secret_sha256_hex)
            .and_then(|h| <[u8; 32]>::try_from(h).ok())
            .ok_or("secret_sha256 is not 64 hex digits")?;
        Ok(Token {
            user,
            name,
            created_unix_s,
            expires_unix_s,
            secret_sha256: hash,
        })
    }

    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    pub(crate) fn info(&self, id: &str) -> TokenInfo {
        TokenInfo {
            id: id.to_owned(),
            user: self.user.clone(),
            name: self.name.clone(),
            created_unix_s: self.created_unix_s,
            expires_unix_s: self.expires_unix_s,
        }
    }

    pub(crate) fn hash_hex(&self) -> String {
        hex(&self.secret_sha256)
    }

    /// Whether `secret` is this token's and it has not expired at `now`.
    pub(crate) fn check(
        &self,
        id: &str,
        secret: &str,
        now_unix_s: u64,
    ) -> Result<(), TokenRefusal> {
        let hash: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
        if !bool::from(hash.ct_eq(&self.secret_sha256)) {
            return Err(TokenRefusal::Unknown);
        }
        match self.expires_unix_s {
            Some(at) if now_unix_s >= at => Err(TokenRefusal::Expired {
                id: id.to_owned(),
                expired_unix_s: at,
            }),
            _ => Ok(()),
        }
    }
}

/// The id and secret of a token's text.
pub(crate) fn parse(text: &str) -> Result<(&str, &str), TokenRefusal> {
    if text.len() > TOKEN_BYTES_MAX {
        return Err(TokenRefusal::Malformed);
    }
    let rest = text.strip_prefix(PREFIX).ok_or(TokenRefusal::Malformed)?;
    let id = rest
        .get(..TOKEN_ID_BYTES * 2)
        .ok_or(TokenRefusal::Malformed)?;
    let secret = rest[id.len()..]
        .strip_prefix('_')
        .ok_or(TokenRefusal::Malformed)?;
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.is_empty() {
        return Err(TokenRefusal::Malformed);
    }
    Ok((id, secret))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_reads_back_and_only_its_secret_checks() {
        let (text, id, token) = Token::new("ci", "deploys", 100, Some(200));
        assert!(
            text.starts_with("tdg_") && text.len() <= TOKEN_BYTES_MAX,
            "{text}"
        );
        let (read_id, secret) = parse(&text).unwrap();
        assert_eq!(read_id, id);
        assert_eq!(token.check(&id, secret, 150), Ok(()));
        let mut wrong = secret.to_owned();
        wrong.replace_range(..1, if wrong.starts_with('A') { "B" } else { "A" });
        assert_eq!(token.check(&id, &wrong, 150), Err(TokenRefusal::Unknown));
        assert!(matches!(
            token.check(&id, secret, 200),
            Err(TokenRefusal::Expired {
                expired_unix_s: 200,
                ..
            })
        ));
        let restored = Token::restore(
            &id,
            "ci".into(),
            "deploys".into(),
            100,
            Some(200),
            &token.hash_hex(),
        )
        .unwrap();
        assert_eq!(restored.check(&id, secret, 150), Ok(()));
    }

    #[test]
    fn texts_that_are_not_tokens_are_malformed() {
        for text in [
            "",
            "tdg_",
            "abc",
            "tdg_0123456789abcdef",
            "tdg_0123456789abcdef_",
            "tdg_0123456789abcdeg_secret",
            "tdg_0123456789abcdefXsecret",
            "tdg_é123456789abcdef_secret",
        ] {
            assert_eq!(parse(text), Err(TokenRefusal::Malformed), "{text:?}");
        }
        let long = format!("tdg_0123456789abcdef_{}", "a".repeat(TOKEN_BYTES_MAX));
        assert_eq!(parse(&long), Err(TokenRefusal::Malformed));
    }
}
