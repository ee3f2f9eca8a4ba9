//! DescribeAcls, CreateAcls and DeleteAcls: Kafka's admin APIs for
//! permissions, on the same store `tidings acls` keeps and every listener
//! asks. Listing needs Describe on the cluster, changing Alter, as in Kafka.
//! Changes are durable before they are answered.
//!
//! Kafka's codes map one to one onto `tidings_auth`'s model, for topics,
//! groups and the cluster; the event store's streams have no Kafka resource
//! type, so their permissions are not listed here and cannot be made here
//! (`tidings acls` keeps them). A filter naming a resource type Tidings has
//! not (transactional ids, delegation tokens, users) matches nothing.

use std::sync::Arc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidings_auth::acl::{
    Acl, AclFilter, Operation, PatternFilter, PatternType, Permission, ResourceType,
};
use tidings_auth::Gate;

use crate::access::Access;

const ANY: i8 = 1;

fn resource_type(code: i8) -> Option<ResourceType> {
    match code {
        2 => Some(ResourceType::Topic),
        3 => Some(ResourceType::Group),
        4 => Some(ResourceType::Cluster),
        _ => None,
    }
}

fn resource_code(t: ResourceType) -> Option<i8> {
    match t {
        ResourceType::Topic => Some(2),
        ResourceType::Group => Some(3),
        ResourceType::Cluster => Some(4),
        ResourceType::Stream => None,
    }
}

const OPERATIONS: [(i8, Operation); 11] = [
    (2, Operation::All),
    (3, Operation::Read),
    (4, Operation::Write),
    (5, Operation::Create),
    (6, Operation::Delete),
    (7, Operation::Alter),
    (8, Operation::Describe),
    (9, Operation::ClusterAction),
    (10, Operation::DescribeConfigs),
    (11, Operation::AlterConfigs),
    (12, Operation::IdempotentWrite),
];

fn operation(code: i8) -> Option<Operation> {
    OPERATIONS.iter().find(|(c, _)| *c == code).map(|(_, o)| *o)
}

fn operation_code(o: Operation) -> i8 {
    OPERATIONS
        .iter()
        .find(|(_, op)| *op == o)
        .map_or(0, |(c, _)| *c)
}

fn permission(code: i8) -> Option<Permission> {
    match code {
        2 => Some(Permission::Deny),
        3 => Some(Permission::Allow),
        _ => None,
    }
}

fn permission_code(p: Permission) -> i8 {
    match p {
        Permission::Deny => 2,
        Permission::Allow => 3,
    }
}

fn pattern_code(p: PatternType) -> i8 {
    match p {
        PatternType::Literal => 3,
        PatternType::Prefixed => 4,
    }
}

/// A Kafka binding filter as the model's, or why it cannot be one. `None`
/// when it names something Tidings has not: it matches nothing.
struct Filter {
    resource_type: i8,
    name: Option<StrBytes>,
    pattern_type: i8,
    principal: Option<StrBytes>,
    host: Option<StrBytes>,
    operation: i8,
    permission: i8,
}

/// A filter's code: `Some(None)` for ANY, `Some(Some(v))` for a value,
/// `None` for a value Tidings has not (it matches nothing).
fn any_or<T>(code: i8, read: fn(i8) -> Option<T>, what: &str) -> Result<Option<Option<T>>, String> {
    match code {
        ANY => Ok(Some(None)),
        c => match read(c) {
            Some(v) => Ok(Some(Some(v))),
            None if c <= 0 => Err(format!("{what} {c} is not a filter")),
            None => Ok(None),
        },
    }
}

fn filter(f: Filter) -> Result<Option<AclFilter>, String> {
    let Some(resource_type) = any_or(f.resource_type, resource_type, "resource type")? else {
        return Ok(None);
    };
    let Some(operation) = any_or(f.operation, operation, "operation")? else {
        return Ok(None);
    };
    let Some(permission) = any_or(f.permission, permission, "permission type")? else {
        return Ok(None);
    };
    let name = f.name.map(|n| n.as_str().to_owned());
    let pattern = match (f.pattern_type, name) {
        (ANY, None) => PatternFilter::Any,
        // Any pattern type with this exact name: `filters` adds the
        // prefixed twin.
        (ANY, Some(n)) => PatternFilter::Exact(PatternType::Literal, Some(n)),
        (2, Some(n)) => PatternFilter::Matching(n),
        (2, None) => PatternFilter::Any,
        (3, n) => PatternFilter::Exact(PatternType::Literal, n),
        (4, n) => PatternFilter::Exact(PatternType::Prefixed, n),
        (c, _) => return Err(format!("pattern type {c} is not a filter")),
    };
    Ok(Some(AclFilter {
        principal: f.principal.map(|p| p.as_str().to_owned()),
        host: f.host.map(|h| h.as_str().to_owned()),
        resource_type,
        pattern,
        operation,
        permission,
    }))
}

/// The filters a Kafka filter stands for: one, or, for "any pattern type
/// with this name", the literal and the prefixed one.
fn filters(f: Filter) -> Result<Vec<AclFilter>, String> {
    let any_named = f.pattern_type == ANY && f.name.is_some();
    let Some(first) = filter(f)? else {
        return Ok(Vec::new());
    };
    if !any_named {
        return Ok(vec![first]);
    }
    let PatternFilter::Exact(_, name) = &first.pattern else {
        return Ok(vec![first]);
    };
    let prefixed = AclFilter {
        pattern: PatternFilter::Exact(PatternType::Prefixed, name.clone()),
        ..first.clone()
    };
    Ok(vec![first, prefixed])
}

fn listed(gate: &Gate, filters: &[AclFilter]) -> Vec<Acl> {
    let mut all: Vec<Acl> = gate.with_store(|s| {
        filters
            .iter()
            .flat_map(|f| s.authorizer().list(f))
            .collect()
    });
    all.sort();
    all.dedup();
    all.retain(|a| resource_code(a.resource_type).is_some());
    all
}

pub(crate) fn describe_acls(
    gate: Option<&Arc<Gate>>,
    access: &Access,
    request: &DescribeAclsRequest,
) -> DescribeAclsResponse {
    let failed = |code: ResponseError, message: String| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let gate = match allowed(gate, access, Operation::Describe) {
        Ok(gate) => gate,
        Err((code, message)) => return failed(code, message),
    };
    let wanted = filters(Filter {
        resource_type: request.resource_type_filter,
        name: request.resource_name_filter.clone(),
        pattern_type: request.pattern_type_filter,
        principal: request.principal_filter.clone(),
        host: request.host_filter.clone(),
        operation: request.operation,
        permission: request.permission_type,
    });
    let wanted = match wanted {
        Ok(w) => w,
        Err(e) => return failed(ResponseError::InvalidRequest, e),
    };
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for acl in listed(gate, &wanted) {
        let code = resource_code(acl.resource_type).expect("kept above");
        let description = AclDescription::default()
            .with_principal(StrBytes::from_string(acl.principal.clone()))
            .with_host(StrBytes::from_string(acl.host.clone()))
            .with_operation(operation_code(acl.operation))
            .with_permission_type(permission_code(acl.permission));
        let pattern = pattern_code(acl.pattern_type);
        match resources.iter_mut().find(|r| {
            r.resource_type == code
                && r.pattern_type == pattern
                && r.resource_name.as_str() == acl.name
        }) {
            Some(r) => r.acls.push(description),
            None => resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(code)
                    .with_resource_name(StrBytes::from_string(acl.name.clone()))
                    .with_pattern_type(pattern)
                    .with_acls(vec![description]),
            ),
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}

/// A binding Kafka asks to create, as the model's.
fn binding(c: &kafka_protocol::messages::create_acls_request::AclCreation) -> Result<Acl, String> {
    let resource_type = resource_type(c.resource_type).ok_or_else(|| {
        format!(
            "resource type {}: topics (2), groups (3) and the cluster (4) have permissions",
            c.resource_type
        )
    })?;
    let pattern_type = match c.resource_pattern_type {
        3 => PatternType::Literal,
        4 => PatternType::Prefixed,
        p => {
            return Err(format!(
                "pattern type {p}: a permission is literal (3) or prefixed (4)"
            ))
        }
    };
    let operation = operation(c.operation)
        .ok_or_else(|| format!("operation {} is not one a permission names", c.operation))?;
    let permission = permission(c.permission_type).ok_or_else(|| {
        format!(
            "permission type {}: allow (3) or deny (2)",
            c.permission_type
        )
    })?;
    let acl = Acl {
        principal: c.principal.as_str().to_owned(),
        host: c.host.as_str().to_owned(),
        resource_type,
        pattern_type,
        name: c.resource_name.as_str().to_owned(),
        operation,
        permission,
    };
    acl.check().map_err(|e| e.to_string())?;
    Ok(acl)
}

/// The gate, when the principal may do `operation` on the cluster and
/// this listener has permissions at all; else the code and reason.
pub(crate) fn allowed<'a>(
    gate: Option<&'a Arc<Gate>>,
    access: &Access,
    operation: Operation,
) -> Result<&'a Arc<Gate>, (ResponseError, String)> {
    access.cluster(operation).map_err(|f| (f.code, f.message))?;
    gate.ok_or_else(|| {
        (
            ResponseError::SecurityDisabled,
            "this listener has no permissions".to_owned(),
        )
    })
}

pub(crate) async fn create_acls(
    gate: Option<&Arc<Gate>>,
    access: &Access,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let result = |code: ResponseError, message: String| {
        AclCreationResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let gate = match allowed(gate, access, Operation::Alter) {
        Ok(gate) => Arc::clone(gate),
        Err((code, message)) => {
            let results = request
                .creations
                .iter()
                .map(|_| result(code, message.clone()))
                .collect();
            return CreateAclsResponse::default().with_results(results);
        }
    };
    let bindings: Vec<Result<Acl, String>> = request.creations.iter().map(binding).collect();
    let valid: Vec<Acl> = bindings
        .iter()
        .filter_map(|b| b.as_ref().ok().cloned())
        .collect();
    // All the valid ones in one durable change.
    let stored = tokio::task::spawn_blocking(move || gate.change(|s| s.add_acls(valid)))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let results = bindings
        .into_iter()
        .map(|b| match (b, &stored) {
            (Err(reason), _) => result(ResponseError::InvalidRequest, reason),
            (Ok(_), Ok(_)) => AclCreationResult::default(),
            (Ok(_), Err(e)) => result(ResponseError::KafkaStorageError, e.clone()),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub(crate) async fn delete_acls(
    gate: Option<&Arc<Gate>>,
    access: &Access,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let failed = |code: ResponseError, message: String| {
        DeleteAclsFilterResult::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let gate = match allowed(gate, access, Operation::Alter) {
        Ok(gate) => gate,
        Err((code, message)) => {
            let results = request
                .filters
                .iter()
                .map(|_| failed(code, message.clone()))
                .collect();
            return DeleteAclsResponse::default().with_filter_results(results);
        }
    };
    let mut results = Vec::with_capacity(request.filters.len());
    for f in request.filters {
        let wanted = filters(Filter {
            resource_type: f.resource_type_filter,
            name: f.resource_name_filter,
            pattern_type: f.pattern_type_filter,
            principal: f.principal_filter,
            host: f.host_filter,
            operation: f.operation,
            permission: f.permission_type,
        });
        let wanted = match wanted {
            Ok(w) => w,
            Err(e) => {
                results.push(failed(ResponseError::InvalidRequest, e));
                continue;
            }
        };
        let changing = Arc::clone(gate);
        let removed = tokio::task::spawn_blocking(move || {
            changing.change(|s| {
                let mut removed = Vec::new();
                for filter in &wanted {
                    // Per Kafka resource type: the streams' permissions
                    // are not Kafka's to remove.
                    for t in [
                        ResourceType::Topic,
                        ResourceType::Group,
                        ResourceType::Cluster,
                    ] {
                        if filter.resource_type.is_some_and(|wanted| wanted != t) {
                            continue;
                        }
                        let typed = AclFilter {
                            resource_type: Some(t),
                            ..filter.clone()
                        };
                        removed.extend(s.remove_acls(&typed)?);
                    }
                }
                Ok::<_, tidings_auth::StoreError>(removed)
            })
        })
        .await;
        match removed {
            Ok(Ok(removed)) => results.push(
                DeleteAclsFilterResult::default().with_matching_acls(
                    removed
                        .iter()
                        .map(|acl| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(resource_code(acl.resource_type).unwrap_or(0))
                                .with_resource_name(StrBytes::from_string(acl.name.clone()))
                                .with_pattern_type(pattern_code(acl.pattern_type))
                                .with_principal(StrBytes::from_string(acl.principal.clone()))
                                .with_host(StrBytes::from_string(acl.host.clone()))
                                .with_operation(operation_code(acl.operation))
                                .with_permission_type(permission_code(acl.permission))
                        })
                        .collect(),
                ),
            ),
            Ok(Err(e)) => results.push(failed(ResponseError::KafkaStorageError, e.to_string())),
            Err(e) => results.push(failed(ResponseError::KafkaStorageError, e.to_string())),
        }
    }
    let removed_some = results.iter().any(|r| !r.matching_acls.is_empty());
    if removed_some && gate.with_store(|s| s.authorizer().is_empty()) {
        tracing::warn!(
            "DeleteAcls removed the last permission: every logged-in user may now do anything"
        );
    }
    DeleteAclsResponse::default().with_filter_results(results)
}
