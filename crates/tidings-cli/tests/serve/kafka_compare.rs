//! The same Java client scenarios against Tidings and against Apache Kafka
//! itself (4.3, KRaft, started on loopback by the test command with
//! `scripts/kafka`): what the clients observe must agree — where each keyed
//! record lands and at which offset, how a group on two topics shares them
//! and resumes, and the error each bad request gets.

use std::process::Command;

use serde_json::Value;

use crate::support::{offline, ok, Server};

/// The Apache Kafka broker the test command started.
fn kafka() -> String {
    std::env::var("TIDINGS_TEST_KAFKA").expect(
        "TIDINGS_TEST_KAFKA must name an Apache Kafka broker (scripts/test starts one with scripts/kafka)",
    )
}

/// Runs a Java scenario of `tests/clients/java` against `bootstrap`.
fn java(class: &str, args: &[&str], against: &str) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/java");
    let out = Command::new("java")
        .current_dir(dir)
        .args(["-cp", "lib/*", &format!("{class}.java")])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{class} against {against} failed (run ./scripts/test to install the Java client): {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_java_clients_at_their_defaults_see_the_same_on_tidings_as_on_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ours = server.kafka_addr.to_string();
    // Fresh names on the long-lived Kafka broker; the same on both.
    let prefix = format!("java{}", std::process::id());
    let mut on_tidings = java("KafkaDefaults", &[&ours, &prefix], "Tidings");
    let mut on_kafka = java("KafkaDefaults", &[&kafka(), &prefix], "Apache Kafka");
    // How many records each member happened to read depends on timing alone.
    for out in [&mut on_tidings, &mut on_kafka] {
        out.as_object_mut().unwrap().remove("by_member");
    }
    assert_eq!(on_tidings, on_kafka, "left: Tidings, right: Apache Kafka");
}

#[test]
fn bad_requests_get_the_errors_kafka_gives_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let prefix = format!("cmp{}", std::process::id());
    let on_tidings = java(
        "KafkaErrors",
        &[&server.kafka_addr.to_string(), &prefix],
        "Tidings",
    );
    let on_kafka = java("KafkaErrors", &[&kafka(), &prefix], "Apache Kafka");
    assert_eq!(on_tidings, on_kafka, "left: Tidings, right: Apache Kafka");
    // And the answers are the refusals they should be, not a shared failure.
    assert_eq!(on_kafka["create"], "ok", "{on_kafka}");
    assert_eq!(
        on_kafka["create_again"], "TopicExistsException",
        "{on_kafka}"
    );
    assert_eq!(
        on_kafka["delete_busy_group"], "GroupNotEmptyException",
        "{on_kafka}"
    );
}

/// Kafka's user admin APIs through the Java client's Admin
/// (alterUserScramCredentials, describeUserScramCredentials — what
/// kafka-configs.sh sends): on a running Tidings as on Apache Kafka, the
/// same outcome for each user and the same credentials described. The
/// users it adds log in at once (a credential removed stops at once); a
/// connection opened while the server had no users must log in now; a user
/// without Alter on the cluster may not change users.
#[test]
fn the_java_admin_manages_users_of_a_running_server_as_on_kafka() {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::{ApiKey, CreateAclsRequest, CreateAclsResponse};
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    use kafka_protocol::protocol::StrBytes;

    // A server without users: a connection made now, then a first user
    // added without a login.
    let open_dir = tempfile::tempdir().unwrap();
    let open = Server::start(open_dir.path(), &[]);
    let mut early = crate::wire::Wire::open(&open);
    let listed: MetadataResponse = early.call(ApiKey::Metadata, 9, &MetadataRequest::default());
    assert_eq!(listed.error_code, 0);
    let added = java(
        "KafkaUsers",
        &["add", &open.kafka_addr.to_string(), "first", "first-pw"],
        "Tidings",
    );
    assert_eq!(added["add"], "ok");
    // The connection made before must log in now: its next request closes it.
    let refused: std::io::Result<MetadataResponse> =
        early.try_call(ApiKey::Metadata, 9, &MetadataRequest::default());
    assert!(refused.is_err(), "answered without a login");
    // The last login is not removed: the server stays closed.
    let removed = java(
        "KafkaUsers",
        &["remove", &open.kafka_addr.to_string(), "first", "first-pw"],
        "Tidings",
    );
    assert_eq!(removed["remove"], "UnacceptableCredentialException");
    let mut again = crate::wire::Wire::open(&open);
    let refused: std::io::Result<MetadataResponse> =
        again.try_call(ApiKey::Metadata, 9, &MetadataRequest::default());
    assert!(refused.is_err(), "still closed");
    drop(open);

    let dir = tempfile::tempdir().unwrap();
    ok(&offline(
        dir.path(),
        &["users", "add", "admin"],
        "admin-pw\n",
    ));
    let server = Server::start(dir.path(), &["--super-user", "admin"]);
    let ours = server.kafka_addr.to_string();
    let prefix = format!("u{}-", std::process::id());
    let on_tidings = java(
        "KafkaUsers",
        &["manage", &ours, &prefix, "admin", "admin-pw"],
        "Tidings",
    );
    let on_kafka = java("KafkaUsers", &["manage", &kafka(), &prefix], "Apache Kafka");
    assert_eq!(on_tidings, on_kafka, "left: Tidings, right: Apache Kafka");
    assert_eq!(
        on_kafka["described"],
        serde_json::json!({"carol": "SCRAM_SHA_256/8192,SCRAM_SHA_512/4096"})
    );
    for (key, expected) in [
        ("alter carol", "ok"),
        ("alter both", "DuplicateResourceException"),
        ("add carol 512", "ok"),
        ("alter dave", "UnacceptableCredentialException"),
        ("alter erin", "ResourceNotFoundException"),
        ("alter fred", "UnacceptableCredentialException"),
        ("alter twice", "DuplicateResourceException"),
        ("describe unknown", "ResourceNotFoundException"),
        ("delete carol 512", "ok"),
    ] {
        assert_eq!(on_kafka[key], expected, "{key}: {on_kafka}");
    }
    assert_eq!(
        on_kafka["after delete"],
        serde_json::json!({"carol": "SCRAM_SHA_256/8192"})
    );

    let carol = format!("{prefix}carol");
    let login = |mechanism: &str, user: &str| {
        java(
            "KafkaUsers",
            &["login", &ours, mechanism, user, "carol-pw"],
            "Tidings",
        )
    };
    assert_eq!(login("SCRAM-SHA-256", &carol)["login"], "ok");
    assert_eq!(
        login("SCRAM-SHA-512", &carol)["login"],
        "SaslAuthenticationException",
        "the removed credential"
    );

    // A bad name is refused for its user alone; the other is made.
    let batch = java(
        "KafkaUsers",
        &[
            "batch",
            &ours,
            "admin",
            "admin-pw",
            &format!("{prefix}gina"),
        ],
        "Tidings",
    );
    assert_eq!(batch["long"], "UnacceptableCredentialException", "{batch}");
    assert_eq!(batch["good"], "ok", "{batch}");

    // Once there are permissions, changing users needs Alter on the cluster.
    let mut as_carol = crate::wire::Wire::login(&server, &carol, "carol-pw");
    let created: CreateAclsResponse = as_carol.call(
        ApiKey::CreateAcls,
        2,
        &CreateAclsRequest::default().with_creations(vec![AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("orders"))
            .with_resource_pattern_type(3)
            .with_principal(StrBytes::from_string(format!("User:{carol}")))
            .with_host(StrBytes::from_static_str("*"))
            .with_operation(8)
            .with_permission_type(3)]),
    );
    assert_eq!(created.results[0].error_code, 0);
    let refused = login("SCRAM-SHA-256", &carol);
    assert_eq!(refused["login"], "ok");
    assert_eq!(refused["alter"], "ClusterAuthorizationException");
    crate::support::eventually("the change logged with its principal", || {
        let logs = server.logs();
        logs.contains("AlterUserScramCredentials changed a user's credentials")
            && logs.contains("principal=User:admin")
    });
}
