//! What a request may do: every route's permission, decided by the one
//! authorizer (`tidings_auth`) the Kafka listener asks too.
//!
//! [`need`] says, for every operation of the route table (an exhaustive
//! match, so a new route cannot go unclassified), what the request needs:
//! nothing beyond a login; an operation on the resource its first path
//! parameter names (a topic, a group, a stream); an operation on the server
//! (`Cluster`); or checks the handler makes itself, for names in the body
//! and listings filtered to what the principal may see ([`Access`]). The
//! request middleware enforces the first three before the handler runs, so a
//! refused request reads nothing and changes nothing, and answers 403
//! before it could tell whether the resource exists.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tidings_api::{ErrorCode, Operation as Route};
use tidings_auth::acl::{Operation, ResourceType};
use tidings_auth::{Gate, Principal};

use crate::error::ApiError;

/// What a route needs beyond a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing: `/healthz` (not even a login), the API's description and
    /// limits.
    Nothing,
    /// `Operation` on the resource of this type the first path parameter
    /// names.
    Named(ResourceType, Operation),
    /// `Operation` on one resource of a fixed name.
    Fixed(ResourceType, &'static str, Operation),
    /// Checked by the handler (names in the body, filtered listings).
    Handler,
}

/// The name of the event store's global order, as a stream resource: what
/// reading across streams (`$all`, a category) needs `Read` on.
pub(crate) const ALL_STREAMS: &str = "$all";
/// The one resource of type `Cluster`, as Kafka names it.
pub(crate) const CLUSTER: &str = "kafka-cluster";

/// What a request to a route of `route` needs.
pub(crate) fn need(route: Route) -> Need {
    use Need::{Fixed, Handler, Named, Nothing};
    use Operation::{Alter, AlterConfigs, Delete, Describe, Read, Write};
    use ResourceType::{Cluster, Group, Stream, Topic};
    match route {
        Route::Health | Route::OpenApi | Route::GetLimits => Nothing,
        Route::Metrics
        | Route::ListSagaInstances
        | Route::DescribeSagaInstance
        | Route::GetCatalog
        | Route::GetCatalogAsyncApi => Fixed(Cluster, CLUSTER, Describe),
        Route::ListTopics | Route::CreateTopic => Handler,
        Route::DescribeTopic => Named(Topic, Describe),
        Route::AlterTopic => Named(Topic, AlterConfigs),
        Route::DeleteTopic => Named(Topic, Delete),
        Route::ReadEvents => Named(Topic, Read),
        Route::PublishEvents => Named(Topic, Write),
        Route::DescribeStream => Named(Stream, Describe),
        Route::DeleteStream => Named(Stream, Delete),
        Route::ReadStream => Named(Stream, Read),
        Route::AppendToStream => Named(Stream, Write),
        Route::ReadAll => Fixed(Stream, ALL_STREAMS, Read),
        Route::ListGroups | Route::ListQueues => Handler,
        Route::DescribeGroup | Route::DescribeQueue => Named(Group, Describe),
        Route::DeleteGroup | Route::DeleteQueue => Named(Group, Delete),
        Route::ResetGroup | Route::PurgeDeadLetters => Named(Group, Alter),
        // Joining names the topics in its body; creating a queue, its topic;
        // redriving may publish to a topic.
        Route::JoinGroup | Route::CreateQueue | Route::RedriveDeadLetters => Handler,
        Route::LeaveGroup
        | Route::PollGroup
        | Route::CommitOffsets
        | Route::HeartbeatMember
        | Route::ReceiveDeliveries
        | Route::AckLeases
        | Route::AckLease
        | Route::NackLease
        | Route::RejectLease
        | Route::ExtendLease
        | Route::ReleaseLease
        | Route::ListDeadLetters
        | Route::GetDeadLetter => Named(Group, Read),
    }
}

/// What the schema registry's routes need: reading it shows every schema,
/// changing it changes what publishes are accepted.
pub(crate) fn registry_need(method: &axum::http::Method) -> Need {
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        Need::Fixed(ResourceType::Cluster, CLUSTER, Operation::Describe)
    } else {
        Need::Fixed(ResourceType::Cluster, CLUSTER, Operation::Alter)
    }
}

/// Who asks and from where, for the handlers' own checks.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    principal: Principal,
    host: IpAddr,
    gate: Option<Arc<Gate>>,
}

impl Access {
    pub(crate) fn new(
        principal: Principal,
        host: Option<IpAddr>,
        gate: Option<Arc<Gate>>,
    ) -> Access {
        Access {
            principal,
            host: host.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            gate,
        }
    }

    /// Who asks.
    pub(crate) fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Whether the principal may do `operation` to some resource of the
    /// type (for offering a form whose name is yet to be typed).
    pub(crate) fn allows_some(&self, resource_type: ResourceType, operation: Operation) -> bool {
        match &self.gate {
            Some(gate) if self.restricted() => {
                gate.allows_some(&self.principal, self.host, operation, resource_type)
            }
            _ => true,
        }
    }

    /// Whether decisions may refuse anything: the server has permissions
    /// (without any, every principal may do everything).
    pub(crate) fn restricted(&self) -> bool {
        self.gate
            .as_ref()
            .is_some_and(|g| g.with_store(|s| !s.authorizer().is_empty()))
    }

    /// Whether the principal may do `operation` to the resource.
    pub(crate) fn allows(
        &self,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> bool {
        self.decide(resource_type, name, operation).is_ok()
    }

    /// The principal may do `operation` to the resource, or 403 `forbidden`
    /// saying who may not do what.
    pub(crate) fn require(
        &self,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> Result<(), ApiError> {
        self.decide(resource_type, name, operation)
            .inspect_err(|_| {
                tidings_telemetry::denied("http", resource_name(resource_type));
            })
    }

    fn decide(
        &self,
        resource_type: ResourceType,
        name: &str,
        operation: Operation,
    ) -> Result<(), ApiError> {
        let Some(gate) = &self.gate else {
            return Ok(());
        };
        let decision = gate.authorize(&self.principal, self.host, operation, resource_type, name);
        if decision.allowed() {
            return Ok(());
        }
        tracing::debug!(principal = %self.principal, ?operation, ?resource_type, name, ?decision, "refused by the permissions");
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{} may not {operation:?} {} {name:?}",
                self.principal,
                resource_name(resource_type)
            ),
        ))
    }

    /// Checks what a route needs, with `named` the first path parameter.
    pub(crate) fn check(&self, need: Need, named: Option<&str>) -> Result<(), ApiError> {
        match need {
            Need::Nothing | Need::Handler => Ok(()),
            Need::Fixed(resource_type, name, operation) => {
                self.require(resource_type, name, operation)
            }
            Need::Named(resource_type, operation) => {
                let name = named.ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Internal,
                        "a route that names its resource has no path parameter",
                    )
                })?;
                self.require(resource_type, name, operation)
            }
        }
    }
}

/// A resource type as messages and metrics say it.
fn resource_name(resource_type: ResourceType) -> &'static str {
    match resource_type {
        ResourceType::Topic => "topic",
        ResourceType::Group => "group",
        ResourceType::Stream => "stream",
        ResourceType::Cluster => "cluster",
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Access, ApiError> {
        parts.extensions.get::<Access>().cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Internal,
                "a request reached its handler without its access",
            )
        })
    }
}
