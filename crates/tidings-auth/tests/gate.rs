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
