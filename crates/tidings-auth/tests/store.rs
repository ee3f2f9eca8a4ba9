//! The stored users and permissions: what is saved comes back; an
//! unfinished change is dropped; a damaged file — cut at any byte, any byte
//! flipped — is refused, never taken for an empty (open) store; a change
//! that cannot be written leaves the store as it was.

use std::path::Path;

use tidings_auth::{
    Acl, AclFilter, AuthStore, Credential, Mechanism, Operation, PatternFilter, PatternType,
    Permission, Request, ResourceType, StoreError,
};

fn acl(principal: &str, name: &str, operation: Operation, permission: Permission) -> Acl {
    Acl {
        principal: principal.to_owned(),
        host: "*".to_owned(),
        resource_type: ResourceType::Topic,
        pattern_type: PatternType::Prefixed,
        name: name.to_owned(),
        operation,
        permission,
    }
}

fn read(store: &AuthStore, principal: &str, topic: &str) -> bool {
    store
        .authorizer()
        .authorize(&Request {
            principal,
            host: "127.0.0.1",
            operation: Operation::Read,
            resource_type: ResourceType::Topic,
            name: topic,
        })
        .allowed()
}

/// A store with two users (one with both mechanisms) and two permissions.
fn filled(dir: &Path) -> AuthStore {
    let mut store = AuthStore::open(dir, vec!["User:admin".to_owned()]).unwrap();
    for (user, mechanism) in [
        ("alice", Mechanism::Sha256),
        ("alice", Mechanism::Sha512),
        ("bob", Mechanism::Sha512),
    ] {
        let c = Credential::new(mechanism, &format!("{user}-pw"), 4096).unwrap();
        store.set_credential(user, c).unwrap();
    }
    let new = store
        .add_acls(vec![
            acl("User:alice", "orders", Operation::Read, Permission::Allow),
            acl(
                "User:bob",
                "orders.secret",
                Operation::All,
                Permission::Deny,
            ),
        ])
        .unwrap();
    assert_eq!(new, [true, true]);
    store
}

#[test]
fn what_is_saved_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let before = filled(dir.path());
    let (users, acls) = (
        before.users(),
        before.authorizer().list(&AclFilter::default()),
    );
    let credentials: Vec<_> = ["alice", "bob"]
        .into_iter()
        .flat_map(|u| Mechanism::ALL.map(|m| before.credential(u, m)))
        .collect();
    drop(before);
    let after = AuthStore::open(dir.path(), vec!["User:admin".to_owned()]).unwrap();
    assert_eq!(after.users(), users);
    let reread: Vec<_> = ["alice", "bob"]
        .into_iter()
        .flat_map(|u| Mechanism::ALL.map(|m| after.credential(u, m)))
        .collect();
    assert_eq!(reread, credentials);
    assert!(after
        .credential("alice", Mechanism::Sha512)
        .unwrap()
        .verifies("alice-pw"));
    assert_eq!(after.authorizer().list(&AclFilter::default()), acls);
    assert!(read(&after, "User:alice", "orders.eu"));
    assert!(
        !read(&after, "User:bob", "orders.eu"),
        "closed once permissions exist"
    );
    assert!(read(&after, "User:admin", "orders.secret"), "super user");
    // No password is in the file.
    let bytes = std::fs::read(dir.path().join("auth.state")).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("-pw"));
}

#[test]
fn removals_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = filled(dir.path());
    assert!(store.remove_user("alice", Some(Mechanism::Sha256)).unwrap());
    assert!(store.remove_user("bob", None).unwrap());
    assert!(!store.remove_user("carol", None).unwrap());
    let filter = AclFilter {
        pattern: PatternFilter::Matching("orders.secret.x".to_owned()),
        permission: Some(Permission::Deny),
        ..AclFilter::default()
    };
    assert_eq!(store.remove_acls(&filter).unwrap().len(), 1);
    drop(store);
    let again = AuthStore::open(dir.path(), Vec::new()).unwrap();
    assert_eq!(again.users().len(), 1);
    assert_eq!(again.users()[0].mechanisms, [(Mechanism::Sha512, 4096)]);
    assert_eq!(again.authorizer().len(), 1);
}

#[test]
fn no_file_is_an_empty_store_and_an_unfinished_change_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let empty = AuthStore::open(dir.path(), Vec::new()).unwrap();
    assert!(!empty.has_users() && empty.authorizer().is_empty());
    drop(empty);
    let saved = filled(dir.path()).users();
    // A change that crashed before its rename left its temporary file.
    let tmp = dir.path().join("auth.state.tmp");
    std::fs::write(&tmp, b"half a change").unwrap();
    let reopened = AuthStore::open(dir.path(), Vec::new()).unwrap();
    assert_eq!(reopened.users(), saved);
    assert!(!tmp.exists(), "removed");
}

#[test]
fn one_process_at_a_time_has_the_store_open() {
    let dir = tempfile::tempdir().unwrap();
    let open = AuthStore::open(dir.path(), Vec::new()).unwrap();
    match AuthStore::open(dir.path(), Vec::new()) {
        Err(e @ StoreError::Locked { .. }) => {
            assert!(e.to_string().contains("auth.lock is held"), "{e}")
        }
        other => panic!("opened twice: {other:?}"),
    }
    drop(open);
    AuthStore::open(dir.path(), Vec::new()).expect("free again once closed");
}

fn refused(dir: &Path) -> String {
    match AuthStore::open(dir, Vec::new()) {
        Err(e @ StoreError::Damaged { .. }) => e.to_string(),
        other => panic!("opened a damaged store: {other:?}"),
    }
}

#[test]
fn a_file_cut_at_any_byte_or_with_any_byte_changed_is_refused() {
    let whole_dir = tempfile::tempdir().unwrap();
    drop(filled(whole_dir.path()));
    let whole = std::fs::read(whole_dir.path().join("auth.state")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.state");
    // Every length short of whole (the header's 8 bytes, the frame's 8, the
    // body), then a byte too many.
    for len in (0..whole.len()).chain([whole.len() + 1]) {
        let mut image = whole.clone();
        image.resize(len, 0);
        std::fs::write(&path, &image).unwrap();
        let said = refused(dir.path());
        assert!(said.contains("auth.state is damaged"), "{len}: {said}");
    }
    // Every byte changed: the magic, the version, the length, the checksum,
    // the body (caught by the checksum).
    for at in 0..whole.len() {
        let mut image = whole.clone();
        image[at] ^= 0x20;
        std::fs::write(&path, &image).unwrap();
        let said = refused(dir.path());
        assert!(
            said.contains("restore it from a backup"),
            "byte {at}: {said}"
        );
    }
}

#[test]
fn a_change_that_cannot_be_written_leaves_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = AuthStore::open(dir.path(), Vec::new()).unwrap();
    // A directory where the file goes: the rename over it fails.
    std::fs::create_dir_all(dir.path().join("auth.state").join("in-the-way")).unwrap();
    let c = Credential::new(Mechanism::Sha256, "pw", 4096).unwrap();
    assert!(matches!(
        store.set_credential("alice", c),
        Err(StoreError::Io { .. })
    ));
    assert!(!store.has_users());
    assert!(store
        .add_acls(vec![acl(
            "User:alice",
            "o",
            Operation::Read,
            Permission::Allow
        )])
        .is_err());
    assert!(store.authorizer().is_empty(), "still open, as on disk");
}

#[test]
fn bad_names_and_permissions_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = AuthStore::open(dir.path(), Vec::new()).unwrap();
    let c = Credential::new(Mechanism::Sha256, "pw", 4096).unwrap();
    for bad in ["", "tab\there", &"x".repeat(256)] {
        assert!(
            matches!(
                store.set_credential(bad, c.clone()),
                Err(StoreError::UserName(_))
            ),
            "{bad:?}"
        );
    }
    let mut bad = acl("User:alice", "o", Operation::Read, Permission::Allow);
    bad.host = "nowhere".to_owned();
    let good = acl("User:bob", "o", Operation::Read, Permission::Allow);
    assert!(store.add_acls(vec![good, bad]).is_err());
    assert!(store.authorizer().is_empty(), "all or none");
    assert!(!dir.path().join("auth.state").exists());
}

/// Tokens come back after a reopen by their text (whose secret is nowhere in
/// the file), stop at their expiry, and go when revoked or when their user
/// is removed; a token alone makes the server require logins.
#[test]
fn tokens_are_kept_as_hashes_and_go_when_revoked_or_their_user_is_removed() {
    use tidings_auth::TokenRefusal;
    let dir = tempfile::tempdir().unwrap();
    let mut store = AuthStore::open(dir.path(), Vec::new()).unwrap();
    let (ci, ci_info) = store.add_token("ci", "deploys", 1_000, None).unwrap();
    assert!(store.has_users(), "a token alone is someone who logs in");
    let (short, _) = store
        .add_token("dash", "dashboard", 1_000, Some(2_000))
        .unwrap();
    let (dash_too, _) = store.add_token("dash", "", 1_000, None).unwrap();
    drop(store);

    let mut store = AuthStore::open(dir.path(), Vec::new()).unwrap();
    assert_eq!(store.tokens().len(), 3);
    assert!(store.tokens().contains(&ci_info));
    assert_eq!(store.token_user(&ci, 5_000), Ok("ci"));
    assert_eq!(store.token_user(&short, 1_999), Ok("dash"));
    assert!(matches!(
        store.token_user(&short, 2_000),
        Err(TokenRefusal::Expired { .. })
    ));
    // Another token's id with this secret, and a secret one letter off.
    let (_, secret) = ci.rsplit_once('_').unwrap();
    let (short_prefix, _) = short.rsplit_once('_').unwrap();
    assert_eq!(
        store.token_user(&format!("{short_prefix}_{secret}"), 1_500),
        Err(TokenRefusal::Unknown)
    );
    let mut off = ci.clone();
    let last = off.pop().unwrap();
    off.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(store.token_user(&off, 1_500), Err(TokenRefusal::Unknown));
    let bytes = std::fs::read(dir.path().join("auth.state")).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains(secret));

    assert!(store.remove_token(&ci_info.id).unwrap());
    assert!(!store.remove_token(&ci_info.id).unwrap());
    assert!(
        store.remove_user("dash", None).unwrap(),
        "a user of tokens alone"
    );
    drop(store);
    let store = AuthStore::open(dir.path(), Vec::new()).unwrap();
    for text in [&ci, &short, &dash_too] {
        assert_eq!(store.token_user(text, 1_500), Err(TokenRefusal::Unknown));
    }
    assert!(!store.has_users(), "open again");
}

/// A store saved before tokens existed (no `tokens` key) opens as it was.
#[test]
fn a_store_from_before_tokens_opens() {
    let dir = tempfile::tempdir().unwrap();
    let body = br#"{"users":[],"acls":[]}"#;
    let mut bytes = b"TDAU".to_vec();
    bytes.extend_from_slice(&tidings_log::format::FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0, 0]);
    tidings_log::format::frame(&mut bytes, body);
    std::fs::write(dir.path().join("auth.state"), bytes).unwrap();
    let store = AuthStore::open(dir.path(), Vec::new()).unwrap();
    assert!(!store.has_users() && store.tokens().is_empty());
}
