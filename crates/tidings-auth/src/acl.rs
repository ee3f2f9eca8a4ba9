//! Permissions: who may do what to which resource, Kafka's ACL model, the
//! one authorizer every front end asks.
//!
//! A permission ([`Acl`]) says that a principal (`User:alice`, or `User:*`
//! for everyone) from a host (an address, or `*`) is allowed or denied an
//! operation on the resources a pattern names: one name (`Literal`, where
//! `*` is every name of the type) or every name that starts with it
//! (`Prefixed`). A request is decided by [`Authorizer::authorize`]:
//!
//! 1. a super user is allowed everything;
//! 2. with no permission at all the server is open (a laptop): allowed;
//! 3. any matching `Deny` for the operation (or `All`) denies — deny wins;
//! 4. any matching `Allow` for the operation, for `All`, or for an
//!    operation that implies it (`Describe` is implied by `Read`, `Write`,
//!    `Delete` and `Alter`; `DescribeConfigs` by `AlterConfigs`) allows;
//! 5. otherwise denied: once permissions exist, what none grants is refused.
//!
//! Rules 1 and 3–5 are those of Kafka's `AclAuthorizer` with
//! `allow.everyone.if.no.acl.found=false`, so Kafka's DescribeAcls,
//! CreateAcls and DeleteAcls map onto it one to one. Rule 2 is Tidings' own,
//! for a server that has users but no permissions yet: every user may do
//! anything. Removing the last permission therefore opens the server to
//! every logged-in user again (`tidings acls remove` and DeleteAcls say so).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::limits::{ACLS_MAX, RESOURCE_NAME_BYTES_MAX, USER_NAME_BYTES_MAX};

/// What a permission is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group: a stream group, a queue group, a Kafka group.
    Group,
    /// An event-store stream.
    Stream,
    /// The server itself (Kafka's `kafka-cluster`): creating topics,
    /// managing permissions and users.
    Cluster,
}

/// How a permission's name is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PatternType {
    /// The name itself; `*` is every name.
    Literal,
    /// Every name that starts with it.
    Prefixed,
}

/// What is done to a resource (Kafka's operations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation.
    All,
    /// Consume, read events, join a group, answer deliveries.
    Read,
    /// Publish.
    Write,
    /// Create.
    Create,
    /// Delete.
    Delete,
    /// Change: alter a topic, reset a group, redrive or purge dead letters.
    Alter,
    /// See that it exists and how it is.
    Describe,
    /// Kafka's inter-broker actions (never needed by a client).
    ClusterAction,
    /// Read configuration.
    DescribeConfigs,
    /// Change configuration.
    AlterConfigs,
    /// Kafka's idempotent produce.
    IdempotentWrite,
}

impl Operation {
    /// Every operation a request can ask for (`All` is only granted).
    pub const REQUESTED: [Operation; 10] = [
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
    ];

    /// The operations whose `Allow` also allows this one.
    fn allowed_by(self) -> &'static [Operation] {
        match self {
            Operation::Describe => &[
                Operation::Describe,
                Operation::Read,
                Operation::Write,
                Operation::Delete,
                Operation::Alter,
            ],
            Operation::DescribeConfigs => &[Operation::DescribeConfigs, Operation::AlterConfigs],
            Operation::Read => &[Operation::Read],
            Operation::Write => &[Operation::Write],
            Operation::Create => &[Operation::Create],
            Operation::Delete => &[Operation::Delete],
            Operation::Alter => &[Operation::Alter],
            Operation::ClusterAction => &[Operation::ClusterAction],
            Operation::AlterConfigs => &[Operation::AlterConfigs],
            Operation::IdempotentWrite => &[Operation::IdempotentWrite],
            Operation::All => &[],
        }
    }
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// Grants.
    Allow,
    /// Refuses, whatever grants.
    Deny,
}

/// The principal of everyone.
pub const EVERYONE: &str = "User:*";
/// The host of anywhere.
pub const ANY_HOST: &str = "*";
/// The literal name of every resource of a type.
pub const EVERY_NAME: &str = "*";

/// One permission.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    /// `User:<name>`, or [`EVERYONE`].
    pub principal: String,
    /// An IP address, or [`ANY_HOST`].
    pub host: String,
    /// What it is about.
    pub resource_type: ResourceType,
    /// How `name` matches.
    pub pattern_type: PatternType,
    /// The name or prefix.
    pub name: String,
    /// What it allows or denies.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

/// Why a permission cannot be held.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The principal is not `User:<name>`.
    #[error("principal {0:?}: it is User:<name> (1..={USER_NAME_BYTES_MAX} bytes) or User:*")]
    Principal(String),
    /// The host is neither `*` nor an IP address.
    #[error("host {0:?}: it is * or an IP address")]
    Host(String),
    /// The name is empty or too long.
    #[error("resource name {0:?}: it is 1..={RESOURCE_NAME_BYTES_MAX} bytes")]
    Name(String),
    /// A prefixed `*`: it would read as every name but match only names
    /// that start with a star.
    #[error("a prefixed pattern of \"*\": use the literal \"*\" for every name")]
    PrefixedStar,
    /// The server holds as many as it may.
    #[error("{ACLS_MAX} permissions are the most one server holds")]
    Full,
}

impl Acl {
    /// Whether the permission can be held: its principal, host and name
    /// well formed.
    pub fn check(&self) -> Result<(), AclError> {
        match self.principal.strip_prefix("User:") {
            Some(name) if !name.is_empty() && name.len() <= USER_NAME_BYTES_MAX => {}
            _ => return Err(AclError::Principal(self.principal.clone())),
        }
        if self.host != ANY_HOST && self.host.parse::<IpAddr>().is_err() {
            return Err(AclError::Host(self.host.clone()));
        }
        if self.name.is_empty() || self.name.len() > RESOURCE_NAME_BYTES_MAX {
            return Err(AclError::Name(self.name.clone()));
        }
        if self.pattern_type == PatternType::Prefixed && self.name == EVERY_NAME {
            return Err(AclError::PrefixedStar);
        }
        Ok(())
    }

    fn applies_to(&self, request: &Request<'_>) -> bool {
        (self.principal == request.principal || self.principal == EVERYONE)
            && (self.host == ANY_HOST || self.host == request.host)
    }
}

/// One request to decide.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Who asks: `User:<name>` (`User:ANONYMOUS` when unauthenticated).
    pub principal: &'a str,
    /// From where: the peer's IP address as text.
    pub host: &'a str,
    /// What it would do.
    pub operation: Operation,
    /// To what kind of resource.
    pub resource_type: ResourceType,
    /// To which.
    pub name: &'a str,
}

/// The decision and what it rests on, for the request's log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed: a super user, an open server, or this permission.
    Allowed(Reason),
    /// Denied: this permission, or none granting it.
    Denied(Reason),
}

/// What a decision rests on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The principal is a super user.
    SuperUser,
    /// No permission is configured: the server is open.
    Open,
    /// This permission.
    Acl(Acl),
    /// Permissions exist and none grants it.
    NoneGrants,
}

impl Decision {
    /// Whether the request may go on.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }
}

/// Which permissions a listing or a removal selects (Kafka's
/// `AclBindingFilter`): every field left `None` matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclFilter {
    /// This principal exactly.
    pub principal: Option<String>,
    /// This host exactly.
    pub host: Option<String>,
    /// This resource type.
    pub resource_type: Option<ResourceType>,
    /// How the name is compared.
    pub pattern: PatternFilter,
    /// This operation exactly.
    pub operation: Option<Operation>,
    /// This permission.
    pub permission: Option<Permission>,
}

/// How a filter selects by pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern.
    #[default]
    Any,
    /// This pattern type, and this name when given.
    Exact(PatternType, Option<String>),
    /// Every pattern that matches this resource name: the literal name,
    /// the literal `*`, and each prefix of it (Kafka's `MATCH`).
    Matching(String),
}

impl AclFilter {
    /// Whether `acl` is selected.
    pub fn selects(&self, acl: &Acl) -> bool {
        let pattern = match &self.pattern {
            PatternFilter::Any => true,
            PatternFilter::Exact(t, name) => {
                acl.pattern_type == *t && name.as_ref().is_none_or(|n| *n == acl.name)
            }
            PatternFilter::Matching(name) => matches(acl.pattern_type, &acl.name, name),
        };
        pattern
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && self.resource_type.is_none_or(|t| t == acl.resource_type)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

/// Whether a pattern names `name`.
fn matches(pattern_type: PatternType, pattern: &str, name: &str) -> bool {
    match pattern_type {
        PatternType::Literal => pattern == name || pattern == EVERY_NAME,
        PatternType::Prefixed => name.starts_with(pattern),
    }
}

/// The permissions of a server and its super users, indexed by resource so
/// a decision looks at the patterns that can name the resource only: its
/// literal name, `*`, and each of its prefixes.
#[derive(Clone, Debug, Default)]
pub struct Authorizer {
    super_users: BTreeSet<String>,
    /// By (type, pattern type), then name: the permissions of that pattern.
    by_pattern: BTreeMap<(ResourceType, PatternType), BTreeMap<String, BTreeSet<Acl>>>,
    count: usize,
}

impl Authorizer {
    /// No permissions (an open server) and these super users.
    pub fn new(super_users: impl IntoIterator<Item = String>) -> Authorizer {
        Authorizer {
            super_users: super_users.into_iter().collect(),
            ..Authorizer::default()
        }
    }

    /// How many permissions it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds none (the server is open).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds `acl`; answers whether it is new (adding one held already is
    /// not an error, as in Kafka).
    pub fn add(&mut self, acl: Acl) -> Result<bool, AclError> {
        acl.check()?;
        if self
            .pattern(acl.resource_type, acl.pattern_type, &acl.name)
            .is_some_and(|s| s.contains(&acl))
        {
            return Ok(false);
        }
        if self.count >= ACLS_MAX {
            return Err(AclError::Full);
        }
        self.by_pattern
            .entry((acl.resource_type, acl.pattern_type))
            .or_default()
            .entry(acl.name.clone())
            .or_default()
            .insert(acl);
        self.count += 1;
        Ok(true)
    }

    /// Removes every permission `filter` selects; answers them.
    pub fn remove(&mut self, filter: &AclFilter) -> Vec<Acl> {
        let mut removed = Vec::new();
        self.by_pattern.retain(|_, names| {
            names.retain(|_, acls| {
                acls.retain(|acl| {
                    let selected = filter.selects(acl);
                    if selected {
                        removed.push(acl.clone());
                    }
                    !selected
                });
                !acls.is_empty()
            });
            !names.is_empty()
        });
        self.count -= removed.len();
        removed
    }

    /// The permissions `filter` selects, in a stable order.
    pub fn list(&self, filter: &AclFilter) -> Vec<Acl> {
        self.by_pattern
            .values()
            .flat_map(BTreeMap::values)
            .flatten()
            .filter(|acl| filter.selects(acl))
            .cloned()
            .collect()
    }

    /// Decides `request` (the rules in the module's documentation).
    pub fn authorize(&self, request: &Request<'_>) -> Decision {
        if self.super_users.contains(request.principal) {
            return Decision::Allowed(Reason::SuperUser);
        }
        if self.count == 0 {
            return Decision::Allowed(Reason::Open);
        }
        let mut allow: Option<&Acl> = None;
        for acl in self.naming(request.resource_type, request.name) {
            if !acl.applies_to(request) {
                continue;
            }
            match acl.permission {
                Permission::Deny
                    if acl.operation == request.operation || acl.operation == Operation::All =>
                {
                    return Decision::Denied(Reason::Acl(acl.clone()));
                }
                Permission::Allow
                    if allow.is_none()
                        && (acl.operation == Operation::All
                            || request.operation.allowed_by().contains(&acl.operation)) =>
                {
                    allow = Some(acl);
                }
                _ => {}
            }
        }
        match allow {
            Some(acl) => Decision::Allowed(Reason::Acl(acl.clone())),
            None => Decision::Denied(Reason::NoneGrants),
        }
    }

    /// Whether the request's principal may do its operation to some
    /// resource of its type, whatever the name (Kafka's
    /// `authorizeByResourceType`, which lets a producer that may write some
    /// topic be idempotent): a super user, an open server, or an `Allow`
    /// for it whose pattern no `Deny` for it covers — a deny of every name
    /// (literal `*`) covers all; a deny of the same literal name covers
    /// that name; a deny of a prefix covers every pattern starting with it.
    /// The request's name is not read.
    pub fn allows_some(&self, request: &Request<'_>) -> bool {
        if self.super_users.contains(request.principal) || self.count == 0 {
            return true;
        }
        let applying = |permission: Permission| {
            self.by_pattern
                .iter()
                .filter(|((t, _), _)| *t == request.resource_type)
                .flat_map(|(_, names)| names.values().flatten())
                .filter(move |acl| acl.applies_to(request) && acl.permission == permission)
        };
        let denies: Vec<&Acl> = applying(Permission::Deny)
            .filter(|acl| acl.operation == request.operation || acl.operation == Operation::All)
            .collect();
        let covered = |allow: &Acl| {
            denies.iter().any(|deny| match deny.pattern_type {
                PatternType::Literal => {
                    deny.name == EVERY_NAME
                        || (allow.pattern_type == PatternType::Literal && deny.name == allow.name)
                }
                PatternType::Prefixed => allow.name.starts_with(&deny.name),
            })
        };
        applying(Permission::Allow)
            .filter(|acl| {
                acl.operation == Operation::All
                    || request.operation.allowed_by().contains(&acl.operation)
            })
            .any(|allow| !covered(allow))
    }

    /// The permissions of one pattern.
    fn pattern(
        &self,
        resource_type: ResourceType,
        pattern_type: PatternType,
        name: &str,
    ) -> Option<&BTreeSet<Acl>> {
        self.by_pattern
            .get(&(resource_type, pattern_type))?
            .get(name)
    }

    /// The permissions whose pattern names `name`: literal `name` and `*`,
    /// and prefixed at each of its prefixes.
    fn naming<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Acl> + 'a {
        let every = (name != EVERY_NAME).then_some(EVERY_NAME);
        let literal = std::iter::once(name)
            .chain(every)
            .filter_map(move |n| self.pattern(resource_type, PatternType::Literal, n));
        let prefixed = name
            .char_indices()
            .map(|(i, c)| &name[..i + c.len_utf8()])
            .filter_map(move |p| self.pattern(resource_type, PatternType::Prefixed, p));
        literal.chain(prefixed).flatten()
    }
}
