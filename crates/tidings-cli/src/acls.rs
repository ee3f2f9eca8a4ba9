//! `tidings acls`: who may do what, in Kafka's ACL model, kept beside the
//! users in a stopped server's data directory (see `users`). With no
//! permission at all the server lets every logged-in user do anything; once
//! there is one, what no permission allows is refused (deny wins over
//! allow), except for the server's `--super-user`s.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use tidings_auth::acl::{Acl, AclFilter, Operation, PatternFilter, PatternType, Permission};
use tidings_auth::acl::{ResourceType, ANY_HOST};

use crate::output::{Mode, Output};
use crate::users::{open, DataDir};

#[derive(Debug, Subcommand)]
pub(crate) enum Acls {
    /// Add permissions: each operation for the principal on the resource.
    Add(Binding),
    /// List the permissions.
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Remove permissions: each operation for the principal on the resource.
    Remove(Binding),
}

/// One principal, its operations, allowed or denied, on one resource.
#[derive(Debug, Args)]
pub(crate) struct Binding {
    /// The principal: a user's name, `User:<name>`, or `*` for every user.
    #[arg(long)]
    principal: String,
    /// The operations (Read, Write, Create, Delete, Alter, Describe,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite, All).
    #[arg(long = "operation", value_delimiter = ',', required = true, value_parser = operation)]
    operations: Vec<Operation>,
    /// Deny rather than allow.
    #[arg(long)]
    deny: bool,
    /// Only from this IP address (every host by default).
    #[arg(long, default_value = ANY_HOST)]
    host: String,
    /// A topic, or `*` for every topic.
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A consumer group (stream or queue, HTTP or Kafka), or `*`.
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// An event-store stream (`$all` for reading across streams), or `*`.
    #[arg(long, group = "resource")]
    stream: Option<String>,
    /// The server itself: creating topics, metrics, the catalog, the
    /// schema registry.
    #[arg(long, group = "resource")]
    cluster: bool,
    /// The name is a prefix: every resource whose name starts with it.
    #[arg(long)]
    prefixed: bool,
    #[command(flatten)]
    dir: DataDir,
}

fn operation(name: &str) -> Result<Operation, String> {
    Operation::REQUESTED
        .into_iter()
        .chain([Operation::All])
        .find(|o| format!("{o:?}").eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("{name:?} is not an operation"))
}

impl Binding {
    fn acls(&self) -> Result<Vec<Acl>> {
        let (resource_type, name) = match (&self.topic, &self.group, &self.stream, self.cluster) {
            (Some(t), None, None, false) => (ResourceType::Topic, t.clone()),
            (None, Some(g), None, false) => (ResourceType::Group, g.clone()),
            (None, None, Some(s), false) => (ResourceType::Stream, s.clone()),
            (None, None, None, true) => (ResourceType::Cluster, "kafka-cluster".to_owned()),
            _ => bail!("name the resource: --topic, --group, --stream or --cluster"),
        };
        let principal = match self.principal.as_str() {
            "*" => "User:*".to_owned(),
            p if p.starts_with("User:") => p.to_owned(),
            p => format!("User:{p}"),
        };
        let acls: Vec<Acl> = self
            .operations
            .iter()
            .map(|&operation| Acl {
                principal: principal.clone(),
                host: self.host.clone(),
                resource_type,
                pattern_type: if self.prefixed {
                    PatternType::Prefixed
                } else {
                    PatternType::Literal
                },
                name: name.clone(),
                operation,
                permission: if self.deny {
                    Permission::Deny
                } else {
                    Permission::Allow
                },
            })
            .collect();
        for acl in &acls {
            acl.check()?;
        }
        Ok(acls)
    }
}

#[derive(Serialize)]
struct Listed {
    principal: String,
    permission: String,
    operation: String,
    resource_type: String,
    pattern_type: String,
    name: String,
    host: String,
}

fn listed(acl: &Acl) -> Listed {
    Listed {
        principal: acl.principal.clone(),
        permission: format!("{:?}", acl.permission),
        operation: format!("{:?}", acl.operation),
        resource_type: format!("{:?}", acl.resource_type),
        pattern_type: format!("{:?}", acl.pattern_type),
        name: acl.name.clone(),
        host: acl.host.clone(),
    }
}

fn line(l: &Listed) -> String {
    format!(
        "{} {} {} on {} {} {:?} from {}",
        l.principal, l.permission, l.operation, l.resource_type, l.pattern_type, l.name, l.host
    )
}

pub(crate) fn acls(command: Acls, mode: Mode) -> Result<()> {
    let mut out = Output::new(std::io::stdout().lock(), mode);
    match command {
        Acls::Add(binding) => {
            let acls = binding.acls()?;
            let mut store = open(&binding.dir)?;
            store.add_acls(acls.clone())?;
            for acl in &acls {
                let l = listed(acl);
                out.text_line(&format!("added {}", line(&l)))?;
                out.json_line(&l)?;
            }
        }
        Acls::List { dir } => {
            let all: Vec<Listed> = open(&dir)?
                .authorizer()
                .list(&AclFilter::default())
                .iter()
                .map(listed)
                .collect();
            out.answer(&all, |all: &Vec<Listed>| {
                if all.is_empty() {
                    return "no permissions: every logged-in user may do anything".to_owned();
                }
                all.iter().map(line).collect::<Vec<_>>().join("\n")
            })?;
        }
        Acls::Remove(binding) => {
            let acls = binding.acls()?;
            let mut store = open(&binding.dir)?;
            let mut removed = 0;
            for acl in &acls {
                let filter = AclFilter {
                    principal: Some(acl.principal.clone()),
                    host: Some(acl.host.clone()),
                    resource_type: Some(acl.resource_type),
                    pattern: PatternFilter::Exact(acl.pattern_type, Some(acl.name.clone())),
                    operation: Some(acl.operation),
                    permission: Some(acl.permission),
                };
                for gone in store.remove_acls(&filter)? {
                    removed += 1;
                    let l = listed(&gone);
                    out.text_line(&format!("removed {}", line(&l)))?;
                    out.json_line(&l)?;
                }
            }
            if removed == 0 {
                bail!("no such permission");
            }
            if store.authorizer().is_empty() {
                eprintln!(
                    "warning: no permissions are left: every logged-in user may now do anything"
                );
            }
        }
    }
    out.flush()
}
