//! SASL PLAIN against stored SCRAM credentials.

use tidings_auth::plain;
use tidings_auth::{Credential, Mechanism, ScramError};

fn lookup(c: &Credential) -> impl Fn(&str, Mechanism) -> Option<Credential> + '_ {
    move |user, mechanism| (user == "alice" && mechanism == c.mechanism).then(|| c.clone())
}

#[test]
fn a_password_is_checked_against_either_credential() {
    for mechanism in Mechanism::ALL {
        let c = Credential::new(mechanism, "s3cret", 4096).unwrap();
        assert_eq!(
            plain::authenticate(b"\0alice\0s3cret", lookup(&c)),
            Ok("alice".to_owned())
        );
        assert_eq!(
            plain::authenticate(b"alice\0alice\0s3cret", lookup(&c)),
            Ok("alice".to_owned())
        );
        assert_eq!(
            plain::authenticate(b"\0alice\0guess", lookup(&c)),
            Err(ScramError::Failed)
        );
        assert_eq!(
            plain::authenticate(b"\0mallory\0s3cret", lookup(&c)),
            Err(ScramError::Failed)
        );
    }
}

#[test]
fn malformed_messages_are_named() {
    let c = Credential::new(Mechanism::Sha256, "s3cret", 4096).unwrap();
    for (message, said) in [
        (&b"alice\0s3cret"[..], "three fields"),
        (b"\0alice\0s3cret\0more", "three fields"),
        (b"\0\0s3cret", "user name"),
        (b"bob\0alice\0s3cret", "authorization identity"),
        (b"\0alice\0\xff", "UTF-8"),
    ] {
        let e = plain::authenticate(message, lookup(&c)).unwrap_err();
        assert!(e.to_string().contains(said), "{message:?}: {e}");
    }
    let long = [b"\0alice\0".as_slice(), &[b'x'; 5000]].concat();
    assert!(plain::authenticate(&long, lookup(&c))
        .unwrap_err()
        .to_string()
        .contains("at most"));
}
