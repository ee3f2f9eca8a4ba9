//! The gate the listeners share: whether a login is required, passwords
//! checked and remembered by fingerprint, and decisions by principal.

use std::net::{IpAddr, Ipv4Addr};

use tidings_auth::acl::{Acl, Operation, PatternType, Permission, ResourceType};
use tidings_auth::scram::{Credential, Mechanism};
use tidings_auth::{AuthStore, Gate, Principal};

fn gate(dir: &std::path::Path) -> Gate {
    let mut store = AuthStore::open(dir, vec!["User:admin".to_owned()]).unwrap();
    let c = Credential::new(Mechanism::Sha512, "alice-pw", 4096).unwrap();
    store.set_credential("alice", c).unwrap();
    Gate::new(store)
}

#[test]
fn a_store_without_users_needs_no_login() {
    let dir = tempfile::tempdir().unwrap();
    let open = Gate::new(AuthStore::open(dir.path(), Vec::new()).unwrap());
    assert!(!open.required());
    drop(open);
    assert!(gate(dir.path()).required());
}

#[test]
fn passwords_are_checked_and_a_remembered_one_is_still_only_its_users() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(dir.path());
    for _ in 0..2 {
        // The second time from what was remembered.
        assert_eq!(
            gate.password("alice", "alice-pw").unwrap(),
            Principal::user("alice")
        );
        assert!(gate.password("alice", "alice-pw ").is_err());
        assert!(gate.password("alice", "").is_err());
        assert!(gate.password("nobody", "alice-pw").is_err());
        assert!(gate.password("", "alice-pw").is_err());
        // The fingerprint binds user and password together.
        assert!(gate.password("alic", "ealice-pw").is_err());
    }
    let long = "x".repeat(2000);
    assert!(
        gate.password("alice", &long).is_err(),
        "longer than a password is"
    );
}

#[test]
fn decisions_follow_the_stored_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let host = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let alice = Principal::user("alice");
    let g = gate(dir.path());
    let read = |g: &Gate, who: &Principal, topic: &str| {
        g.authorize(who, host, Operation::Read, ResourceType::Topic, topic)
            .allowed()
    };
    assert!(read(&g, &alice, "orders"), "open without permissions");
    g.change(|s| {
        s.add_acls(vec![Acl {
            principal: "User:alice".to_owned(),
            host: "*".to_owned(),
            resource_type: ResourceType::Topic,
            pattern_type: PatternType::Prefixed,
            name: "orders".to_owned(),
            operation: Operation::Read,
            permission: Permission::Allow,
        }])
    })
    .unwrap();
    assert!(read(&g, &alice, "orders.eu"));
    assert!(!read(&g, &alice, "payments"));
    assert!(!read(&g, &Principal::anonymous(), "orders"));
    assert!(
        read(&g, &Principal::user("admin"), "payments"),
        "super user"
    );
}

/// Users change on a running server (AlterUserScramCredentials): a changed
/// or removed password is not taken from what was remembered, a token is
/// taken, and logins stay required once they were.
#[test]
fn a_change_forgets_remembered_passwords_and_login_follows_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let gate = gate(dir.path());
    assert!(gate.password("alice", "alice-pw").is_ok());
    let fresh = Credential::new(Mechanism::Sha512, "new-pw", 4096).unwrap();
    gate.change(|s| s.alter_credentials(vec![("alice".to_owned(), fresh)], &[]))
        .unwrap();
    assert!(
        gate.password("alice", "alice-pw").is_err(),
        "the old password"
    );
    assert!(gate.password("alice", "new-pw").is_ok());
    let (token, _) = gate.change(|s| s.add_token("ci", "", 1, None)).unwrap();
    assert_eq!(gate.token(&token).unwrap(), Principal::user("ci"));
    let removed = gate
        .change(|s| s.alter_credentials(Vec::new(), &[("alice".to_owned(), Mechanism::Sha512)]))
        .unwrap();
    assert_eq!(removed, [true]);
    assert!(gate.password("alice", "new-pw").is_err(), "removed");
    assert!(gate.required(), "the token is still someone");
    gate.change(|s| s.remove_user("ci", None)).unwrap();
    assert!(
        gate.required(),
        "a closed server stays closed while it runs, with nobody left to log in as"
    );
}

/// What SCRAM shows an unknown user (salt length, iterations) is the shape
/// of a stored credential, so credentials made elsewhere (a client's salt
/// and iterations, through AlterUserScramCredentials) do not single out
/// the made-up ones; the same name gets the same salt each time.
#[test]
fn an_unknown_user_is_shown_the_shape_of_a_real_credential() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let mut store = AuthStore::open(dir.path(), Vec::new()).unwrap();
    // As the Java client sends it: its own salt length and iterations.
    let c =
        Credential::from_salted_password(Mechanism::Sha256, vec![9; 28], 4096, &[1; 32]).unwrap();
    store.set_credential("carol", c).unwrap();
    let gate = Gate::new(store);
    let shown = |user: &str| {
        let first = format!("n,,n={user},r=abc");
        let (_, server_first) = gate.scram(Mechanism::Sha256, first.as_bytes()).unwrap();
        let field = |name: &str| {
            server_first
                .split(',')
                .find_map(|f| f.strip_prefix(name))
                .unwrap()
                .to_owned()
        };
        let salt = base64::engine::general_purpose::STANDARD
            .decode(field("s="))
            .unwrap();
        (salt, field("i="))
    };
    let (real_salt, real_iterations) = shown("carol");
    let (salt, iterations) = shown("nobody");
    assert_eq!(
        (salt.len(), iterations.as_str()),
        (real_salt.len(), real_iterations.as_str())
    );
    assert_eq!(shown("nobody").0, salt, "the same each time");
    assert_ne!(shown("somebody").0, salt);
    assert!(gate.plain(b"\0nobody\0pw").is_err());
}
