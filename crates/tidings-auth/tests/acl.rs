//! The authorizer against a plain model of Kafka's rules: every request a
//! small world can make, decided both ways, over random permission sets,
//! additions and removals; then the cases users meet, each by name.

use proptest::prelude::*;
use tidings_auth::{
    Acl, AclError, AclFilter, Authorizer, Decision, Operation, PatternFilter, PatternType,
    Permission, Reason, Request, ResourceType,
};

const PRINCIPALS: [&str; 3] = ["User:alice", "User:bob", "User:*"];
const HOSTS: [&str; 3] = ["*", "10.0.0.1", "::1"];
const NAMES: [&str; 6] = ["o", "or", "orders", "orders.eu", "ord\u{e9}r", "payments"];
const TYPES: [ResourceType; 4] = [
    ResourceType::Topic,
    ResourceType::Group,
    ResourceType::Stream,
    ResourceType::Cluster,
];
/// Every operation a permission can name: what requests ask, and `All`.
fn granted() -> Vec<Operation> {
    std::iter::once(Operation::All)
        .chain(Operation::REQUESTED)
        .collect()
}

/// Kafka's rules, read straight off the documentation, one permission at a
/// time.
fn model(acls: &[Acl], super_users: &[&str], r: &Request<'_>) -> bool {
    if super_users.contains(&r.principal) || acls.is_empty() {
        return true;
    }
    let applies = |a: &Acl| {
        (a.principal == r.principal || a.principal == "User:*")
            && (a.host == "*" || a.host == r.host)
            && a.resource_type == r.resource_type
            && match a.pattern_type {
                PatternType::Literal => a.name == r.name || a.name == "*",
                PatternType::Prefixed => r.name.starts_with(a.name.as_str()),
            }
    };
    let implies = |granted: Operation, asked: Operation| {
        granted == Operation::All
            || granted == asked
            || (asked == Operation::Describe
                && matches!(
                    granted,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
            || (asked == Operation::DescribeConfigs && granted == Operation::AlterConfigs)
    };
    if acls.iter().any(|a| {
        applies(a)
            && a.permission == Permission::Deny
            && (a.operation == r.operation || a.operation == Operation::All)
    }) {
        return false;
    }
    acls.iter().any(|a| {
        applies(a) && a.permission == Permission::Allow && implies(a.operation, r.operation)
    })
}

fn acl_strategy() -> impl Strategy<Value = Acl> {
    (
        0..PRINCIPALS.len(),
        0..HOSTS.len(),
        0..TYPES.len(),
        prop_oneof![
            // Literal names, "*" among them; prefixes a name starts with.
            (0..NAMES.len() + 1)
                .prop_map(|i| (PatternType::Literal, NAMES.get(i).copied().unwrap_or("*"))),
            prop::sample::select(vec!["o", "or", "ord", "orders.", "p", "ord\u{e9}"])
                .prop_map(|p| (PatternType::Prefixed, p)),
        ],
        prop::sample::select(granted()),
        prop::bool::ANY,
    )
        .prop_map(|(p, h, t, (pattern_type, name), o, deny)| Acl {
            principal: PRINCIPALS[p].to_owned(),
            host: HOSTS[h].to_owned(),
            resource_type: TYPES[t],
            pattern_type,
            name: name.to_owned(),
            operation: o,
            permission: if deny {
                Permission::Deny
            } else {
                Permission::Allow
            },
        })
}

/// Every request of the small world agrees with the model.
fn agrees(
    authorizer: &Authorizer,
    acls: &[Acl],
    super_users: &[&str],
) -> Result<(), TestCaseError> {
    for principal in ["User:alice", "User:bob", "User:root"] {
        for host in ["10.0.0.1", "10.0.0.2", "::1"] {
            for resource_type in TYPES {
                for name in NAMES {
                    for operation in Operation::REQUESTED {
                        let r = Request {
                            principal,
                            host,
                            operation,
                            resource_type,
                            name,
                        };
                        prop_assert_eq!(
                            authorizer.authorize(&r).allowed(),
                            model(acls, super_users, &r),
                            "{:?} with {:?}",
                            r,
                            acls
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn decisions_match_the_model_through_additions_and_removals(
        acls in prop::collection::vec(acl_strategy(), 0..14),
        removal in (prop::option::of(0..PRINCIPALS.len()), prop::option::of(0..TYPES.len()), prop::option::of(0..NAMES.len()), prop::bool::ANY),
    ) {
        let super_users = ["User:root"];
        let mut authorizer = Authorizer::new(super_users.iter().map(|s| (*s).to_owned()));
        let mut held: Vec<Acl> = Vec::new();
        for acl in acls {
            let new = authorizer.add(acl.clone()).unwrap();
            prop_assert_eq!(new, !held.contains(&acl));
            if new {
                held.push(acl);
            }
        }
        prop_assert_eq!(authorizer.len(), held.len());
        agrees(&authorizer, &held, &super_users)?;

        // Remove by a filter, as DeleteAcls does; the filter's own test is
        // the same selection made by hand.
        let (principal, resource_type, name, matching) = removal;
        let filter = AclFilter {
            principal: principal.map(|p| PRINCIPALS[p].to_owned()),
            resource_type: resource_type.map(|t| TYPES[t]),
            pattern: match (name, matching) {
                (Some(n), true) => PatternFilter::Matching(NAMES[n].to_owned()),
                (Some(n), false) => PatternFilter::Exact(PatternType::Literal, Some(NAMES[n].to_owned())),
                (None, _) => PatternFilter::Any,
            },
            ..AclFilter::default()
        };
        let selected = |a: &Acl| {
            principal.is_none_or(|p| a.principal == PRINCIPALS[p])
                && resource_type.is_none_or(|t| a.resource_type == TYPES[t])
                && match (name, matching) {
                    (Some(n), true) => match a.pattern_type {
                        PatternType::Literal => a.name == NAMES[n] || a.name == "*",
                        PatternType::Prefixed => NAMES[n].starts_with(a.name.as_str()),
                    },
                    (Some(n), false) => a.pattern_type == PatternType::Literal && a.name == NAMES[n],
                    (None, _) => true,
                }
        };
        let mut listed = authorizer.list(&filter);
        let mut expected: Vec<Acl> = held.iter().filter(|a| selected(a)).cloned().collect();
        listed.sort();
        expected.sort();
        prop_assert_eq!(&listed, &expected);
        let mut removed = authorizer.remove(&filter);
        removed.sort();
        prop_assert_eq!(removed, expected);
        held.retain(|a| !selected(a));
        prop_assert_eq!(authorizer.len(), held.len());
        agrees(&authorizer, &held, &super_users)?;
    }
}

fn acl(
    principal: &str,
    rt: ResourceType,
    pt: PatternType,
    name: &str,
    op: Operation,
    p: Permission,
) -> Acl {
    Acl {
        principal: principal.to_owned(),
        host: "*".to_owned(),
        resource_type: rt,
        pattern_type: pt,
        name: name.to_owned(),
        operation: op,
        permission: p,
    }
}

fn ask<'a>(principal: &'a str, op: Operation, rt: ResourceType, name: &'a str) -> Request<'a> {
    Request {
        principal,
        host: "10.0.0.1",
        operation: op,
        resource_type: rt,
        name,
    }
}

#[test]
fn an_open_server_allows_and_one_permission_closes_it() {
    let mut a = Authorizer::new([]);
    let read = ask("User:alice", Operation::Read, ResourceType::Topic, "orders");
    assert_eq!(a.authorize(&read), Decision::Allowed(Reason::Open));
    let grant = acl(
        "User:bob",
        ResourceType::Topic,
        PatternType::Literal,
        "orders",
        Operation::Read,
        Permission::Allow,
    );
    a.add(grant.clone()).unwrap();
    assert_eq!(a.authorize(&read), Decision::Denied(Reason::NoneGrants));
    assert_eq!(
        a.authorize(&ask(
            "User:bob",
            Operation::Read,
            ResourceType::Topic,
            "orders"
        )),
        Decision::Allowed(Reason::Acl(grant))
    );
}

#[test]
fn deny_wins_over_allow_and_all() {
    let mut a = Authorizer::new([]);
    a.add(acl(
        "User:*",
        ResourceType::Topic,
        PatternType::Prefixed,
        "orders",
        Operation::All,
        Permission::Allow,
    ))
    .unwrap();
    let deny = acl(
        "User:alice",
        ResourceType::Topic,
        PatternType::Literal,
        "orders.eu",
        Operation::Write,
        Permission::Deny,
    );
    a.add(deny.clone()).unwrap();
    assert_eq!(
        a.authorize(&ask(
            "User:alice",
            Operation::Write,
            ResourceType::Topic,
            "orders.eu"
        )),
        Decision::Denied(Reason::Acl(deny))
    );
    // Only that operation is denied; reads still go through the prefix.
    assert!(a
        .authorize(&ask(
            "User:alice",
            Operation::Read,
            ResourceType::Topic,
            "orders.eu"
        ))
        .allowed());
    assert!(a
        .authorize(&ask(
            "User:alice",
            Operation::Write,
            ResourceType::Topic,
            "orders.us"
        ))
        .allowed());
}

#[test]
fn read_write_delete_and_alter_imply_describe_but_a_deny_of_read_does_not_deny_it() {
    let mut a = Authorizer::new([]);
    a.add(acl(
        "User:alice",
        ResourceType::Group,
        PatternType::Literal,
        "billing",
        Operation::Read,
        Permission::Allow,
    ))
    .unwrap();
    assert!(a
        .authorize(&ask(
            "User:alice",
            Operation::Describe,
            ResourceType::Group,
            "billing"
        ))
        .allowed());
    assert!(!a
        .authorize(&ask(
            "User:alice",
            Operation::Alter,
            ResourceType::Group,
            "billing"
        ))
        .allowed());
    a.add(acl(
        "User:alice",
        ResourceType::Group,
        PatternType::Literal,
        "billing",
        Operation::Describe,
        Permission::Allow,
    ))
    .unwrap();
    a.add(acl(
        "User:alice",
        ResourceType::Group,
        PatternType::Literal,
        "billing",
        Operation::Read,
        Permission::Deny,
    ))
    .unwrap();
    assert!(!a
        .authorize(&ask(
            "User:alice",
            Operation::Read,
            ResourceType::Group,
            "billing"
        ))
        .allowed());
    assert!(a
        .authorize(&ask(
            "User:alice",
            Operation::Describe,
            ResourceType::Group,
            "billing"
        ))
        .allowed());
}

#[test]
fn super_users_pass_and_hosts_narrow() {
    let mut a = Authorizer::new(["User:admin".to_owned()]);
    let mut from = acl(
        "User:alice",
        ResourceType::Cluster,
        PatternType::Literal,
        "kafka-cluster",
        Operation::Create,
        Permission::Allow,
    );
    from.host = "10.0.0.9".to_owned();
    a.add(from).unwrap();
    assert!(a
        .authorize(&ask(
            "User:admin",
            Operation::Delete,
            ResourceType::Stream,
            "x"
        ))
        .allowed());
    let mut create = ask(
        "User:alice",
        Operation::Create,
        ResourceType::Cluster,
        "kafka-cluster",
    );
    assert!(!a.authorize(&create).allowed(), "from another host");
    create.host = "10.0.0.9";
    assert!(a.authorize(&create).allowed());
}

#[test]
fn bad_permissions_are_refused_with_the_reason() {
    let mut a = Authorizer::new([]);
    let good = acl(
        "User:alice",
        ResourceType::Topic,
        PatternType::Literal,
        "orders",
        Operation::Read,
        Permission::Allow,
    );
    for (bad, said) in [
        (
            Acl {
                principal: "alice".into(),
                ..good.clone()
            },
            AclError::Principal("alice".into()),
        ),
        (
            Acl {
                principal: "User:".into(),
                ..good.clone()
            },
            AclError::Principal("User:".into()),
        ),
        (
            Acl {
                host: "example.com".into(),
                ..good.clone()
            },
            AclError::Host("example.com".into()),
        ),
        (
            Acl {
                name: String::new(),
                ..good.clone()
            },
            AclError::Name(String::new()),
        ),
        (
            Acl {
                pattern_type: PatternType::Prefixed,
                name: "*".into(),
                ..good.clone()
            },
            AclError::PrefixedStar,
        ),
    ] {
        assert_eq!(a.add(bad), Err(said));
    }
    assert!(a.is_empty(), "nothing refused was kept");
    assert_eq!(a.add(good.clone()), Ok(true));
    assert_eq!(a.add(good), Ok(false), "adding one held is no error");
    assert_eq!(a.len(), 1);
}

/// Kafka's `authorizeByResourceType`: may the principal write some topic?
#[test]
fn some_topic_is_writable_when_a_permission_allows_one_and_no_deny_covers_all() {
    let acl = |principal: &str, name: &str, pattern_type, operation, permission| Acl {
        principal: principal.to_owned(),
        host: "*".to_owned(),
        resource_type: ResourceType::Topic,
        pattern_type,
        name: name.to_owned(),
        operation,
        permission,
    };
    let asks = |a: &Authorizer, principal: &str| {
        a.allows_some(&Request {
            principal,
            host: "10.0.0.1",
            operation: Operation::Write,
            resource_type: ResourceType::Topic,
            name: "ignored",
        })
    };
    let mut a = Authorizer::new(["User:admin".to_owned()]);
    assert!(asks(&a, "User:bob"), "open");
    let grant = acl(
        "User:alice",
        "orders",
        PatternType::Prefixed,
        Operation::Write,
        Permission::Allow,
    );
    a.add(grant).unwrap();
    assert!(asks(&a, "User:alice"));
    assert!(!asks(&a, "User:bob"));
    assert!(asks(&a, "User:admin"), "super user");
    let read_only = acl(
        "User:bob",
        "*",
        PatternType::Literal,
        Operation::Read,
        Permission::Allow,
    );
    a.add(read_only).unwrap();
    assert!(!asks(&a, "User:bob"), "Read does not imply Write");
    let all = acl(
        "User:bob",
        "x",
        PatternType::Literal,
        Operation::All,
        Permission::Allow,
    );
    a.add(all).unwrap();
    assert!(asks(&a, "User:bob"), "All implies Write");
    // A deny of the same literal, or of a prefix of the allowed pattern,
    // covers it.
    let deny_x = acl(
        "User:bob",
        "x",
        PatternType::Literal,
        Operation::Write,
        Permission::Deny,
    );
    a.add(deny_x).unwrap();
    assert!(!asks(&a, "User:bob"), "its only grant denied");
    let deny_prefix = acl(
        "User:alice",
        "ord",
        PatternType::Prefixed,
        Operation::All,
        Permission::Deny,
    );
    a.add(deny_prefix).unwrap();
    assert!(!asks(&a, "User:alice"), "orders* is within ord*");
    let elsewhere = acl(
        "User:alice",
        "payments",
        PatternType::Literal,
        Operation::Write,
        Permission::Allow,
    );
    a.add(elsewhere).unwrap();
    assert!(asks(&a, "User:alice"), "payments is not denied");
    let deny = acl(
        "User:*",
        "*",
        PatternType::Literal,
        Operation::Write,
        Permission::Deny,
    );
    a.add(deny).unwrap();
    assert!(
        !asks(&a, "User:alice") && !asks(&a, "User:bob"),
        "denied everywhere"
    );
}
