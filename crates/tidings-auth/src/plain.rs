//! SASL PLAIN (RFC 4616): `[authzid] NUL user NUL password`, checked
//! against the user's SCRAM credential, so one stored credential serves
//! both mechanisms and no password is ever kept. Meant for TLS connections
//! only: the password crosses the wire as it is.

use crate::limits::{
    PASSWORD_BYTES_MAX, SCRAM_ITERATIONS_DEFAULT, SCRAM_MESSAGE_BYTES_MAX, USER_NAME_BYTES_MAX,
};
use crate::scram::{Credential, Mechanism, ScramError};

/// Reads a PLAIN message: the user and password it carries.
pub fn parse(message: &[u8]) -> Result<(String, String), ScramError> {
    if message.len() > SCRAM_MESSAGE_BYTES_MAX {
        return Err(ScramError::Malformed(format!(
            "{} bytes; a message is at most {SCRAM_MESSAGE_BYTES_MAX}",
            message.len()
        )));
    }
    let text =
        std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8".into()))?;
    let mut fields = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(ScramError::Malformed(
            "PLAIN is three fields separated by NUL".into(),
        ));
    };
    if user.is_empty() || user.len() > USER_NAME_BYTES_MAX {
        return Err(ScramError::Malformed(format!(
            "a user name is 1..={USER_NAME_BYTES_MAX} bytes"
        )));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(ScramError::Malformed(format!(
            "a password is at most {PASSWORD_BYTES_MAX} bytes"
        )));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(ScramError::Unsupported(
            "an authorization identity other than the user".into(),
        ));
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// Checks a PLAIN message against the credentials `lookup` finds for its
/// user (either SCRAM mechanism will do). An unknown user costs the same
/// hashing as a known one and fails the same way.
pub fn authenticate(
    message: &[u8],
    lookup: impl Fn(&str, Mechanism) -> Option<Credential>,
) -> Result<String, ScramError> {
    authenticate_with_decoy(message, lookup, |_| Credential {
        mechanism: Mechanism::Sha256,
        salt: vec![0; 16],
        iterations: SCRAM_ITERATIONS_DEFAULT,
        stored_key: Vec::new(),
        server_key: Vec::new(),
    })
}

/// As [`authenticate`], checking an unknown user's password against the
/// credential `decoy` makes for the name (one without keys, which nothing
/// matches, of the shape a known user's has).
pub fn authenticate_with_decoy(
    message: &[u8],
    lookup: impl Fn(&str, Mechanism) -> Option<Credential>,
    decoy: impl FnOnce(&str) -> Credential,
) -> Result<String, ScramError> {
    let (user, password) = parse(message)?;
    let credential = Mechanism::ALL.into_iter().find_map(|m| lookup(&user, m));
    match credential {
        Some(c) if c.verifies(&password) => Ok(user),
        Some(_) => Err(ScramError::Failed),
        None => {
            // The work a known user's check does, on a credential nothing
            // matches.
            let _ = decoy(&user).verifies(&password);
            Err(ScramError::Failed)
        }
    }
}
