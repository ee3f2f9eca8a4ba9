//! The route table: every method and path the API answers, the operation it
//! is, and whether a draining server still takes it. The router, the draining
//! rules and the OpenAPI check all read this one list.

/// An HTTP method the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
}

impl Method {
    /// The method as HTTP spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// What a draining server (one shutting down) does with a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Draining {
    /// New work: answered 503 `shutting_down`.
    Refused,
    /// Finishes work already handed out (answers to leases, commits,
    /// heartbeats, leaving a group): still taken, so consumers can wind down.
    Taken,
    /// Watches the server (health, metrics): still answered, and not logged at
    /// info level, as probes come every few seconds.
    Probe,
}

/// Every operation of the API, named as the OpenAPI document's `operationId`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /openapi.json`.
    OpenApi,
    /// `GET /v1/limits`.
    GetLimits,
    /// `GET /v1/topics`.
    ListTopics,
    /// `POST /v1/topics`.
    CreateTopic,
    /// `GET /v1/topics/{topic}`.
    DescribeTopic,
    /// `PATCH /v1/topics/{topic}`.
    AlterTopic,
    /// `DELETE /v1/topics/{topic}`.
    DeleteTopic,
    /// `GET /v1/topics/{topic}/events`.
    ReadEvents,
    /// `POST /v1/topics/{topic}/events`.
    PublishEvents,
    /// `GET /v1/streams/{stream}`.
    DescribeStream,
    /// `DELETE /v1/streams/{stream}`.
    DeleteStream,
    /// `GET /v1/streams/{stream}/events`.
    ReadStream,
    /// `POST /v1/streams/{stream}/events`.
    AppendToStream,
    /// `GET /v1/store/events`.
    ReadAll,
    /// `GET /v1/groups`.
    ListGroups,
    /// `GET /v1/groups/{group}`.
    DescribeGroup,
    /// `DELETE /v1/groups/{group}`.
    DeleteGroup,
    /// `POST /v1/groups/{group}/reset`.
    ResetGroup,
    /// `POST /v1/groups/{group}/members`.
    JoinGroup,
    /// `DELETE /v1/groups/{group}/members/{member}`.
    LeaveGroup,
    /// `GET /v1/groups/{group}/members/{member}/events`.
    PollGroup,
    /// `POST /v1/groups/{group}/members/{member}/commit`.
    CommitOffsets,
    /// `POST /v1/groups/{group}/members/{member}/heartbeat`.
    HeartbeatMember,
    /// `GET /v1/queues`.
    ListQueues,
    /// `POST /v1/queues`.
    CreateQueue,
    /// `GET /v1/queues/{group}`.
    DescribeQueue,
    /// `DELETE /v1/queues/{group}`.
    DeleteQueue,
    /// `POST /v1/queues/{group}/receive`.
    ReceiveDeliveries,
    /// `POST /v1/queues/{group}/acks`.
    AckLeases,
    /// `POST /v1/queues/{group}/leases/{lease}/ack`.
    AckLease,
    /// `POST /v1/queues/{group}/leases/{lease}/nack`.
    NackLease,
    /// `POST /v1/queues/{group}/leases/{lease}/reject`.
    RejectLease,
    /// `POST /v1/queues/{group}/leases/{lease}/extend`.
    ExtendLease,
    /// `POST /v1/queues/{group}/leases/{lease}/release`.
    ReleaseLease,
    /// `GET /v1/queues/{group}/dead-letters`.
    ListDeadLetters,
    /// `DELETE /v1/queues/{group}/dead-letters`.
    PurgeDeadLetters,
    /// `POST /v1/queues/{group}/dead-letters/redrive`.
    RedriveDeadLetters,
    /// `GET /v1/queues/{group}/dead-letters/{offset}`.
    GetDeadLetter,
    /// `GET /v1/sagas/{saga}/instances`.
    ListSagaInstances,
    /// `GET /v1/sagas/{saga}/instances/{key}`.
    DescribeSagaInstance,
    /// `GET /v1/catalog`.
    GetCatalog,
    /// `GET /v1/catalog/asyncapi`.
    GetCatalogAsyncApi,
}

impl Operation {
    /// The `operationId` of the operation in the OpenAPI document.
    pub fn id(self) -> &'static str {
        match self {
            Operation::Health => "health",
            Operation::Metrics => "metrics",
            Operation::OpenApi => "openapi",
            Operation::GetLimits => "getLimits",
            Operation::ListTopics => "listTopics",
            Operation::CreateTopic => "createTopic",
            Operation::DescribeTopic => "describeTopic",
            Operation::AlterTopic => "alterTopic",
            Operation::DeleteTopic => "deleteTopic",
            Operation::ReadEvents => "readEvents",
            Operation::PublishEvents => "publishEvents",
            Operation::DescribeStream => "describeStream",
            Operation::DeleteStream => "deleteStream",
            Operation::ReadStream => "readStream",
            Operation::AppendToStream => "appendToStream",
            Operation::ReadAll => "readAll",
            Operation::ListGroups => "listGroups",
            Operation::DescribeGroup => "describeGroup",
            Operation::DeleteGroup => "deleteGroup",
            Operation::ResetGroup => "resetGroup",
            Operation::JoinGroup => "joinGroup",
            Operation::LeaveGroup => "leaveGroup",
            Operation::PollGroup => "pollGroup",
            Operation::CommitOffsets => "commitOffsets",
            Operation::HeartbeatMember => "heartbeatMember",
            Operation::ListQueues => "listQueues",
            Operation::CreateQueue => "createQueue",
            Operation::DescribeQueue => "describeQueue",
            Operation::DeleteQueue => "deleteQueue",
            Operation::ReceiveDeliveries => "receiveDeliveries",
            Operation::AckLeases => "ackLeases",
            Operation::AckLease => "ackLease",
            Operation::NackLease => "nackLease",
            Operation::RejectLease => "rejectLease",
            Operation::ExtendLease => "extendLease",
            Operation::ReleaseLease => "releaseLease",
            Operation::ListDeadLetters => "listDeadLetters",
            Operation::PurgeDeadLetters => "purgeDeadLetters",
            Operation::RedriveDeadLetters => "redriveDeadLetters",
            Operation::GetDeadLetter => "getDeadLetter",
            Operation::ListSagaInstances => "listSagaInstances",
            Operation::DescribeSagaInstance => "describeSagaInstance",
            Operation::GetCatalog => "getCatalog",
            Operation::GetCatalogAsyncApi => "getCatalogAsyncApi",
        }
    }
}

/// One route: a method and a path template (`{name}` marks a parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path template, as the router and the OpenAPI document spell it.
    pub path: &'static str,
    /// What the route does.
    pub operation: Operation,
    /// What a draining server does with it.
    pub draining: Draining,
}

const fn route(
    method: Method,
    path: &'static str,
    operation: Operation,
    draining: Draining,
) -> Route {
    Route {
        method,
        path,
        operation,
        draining,
    }
}

use Draining::{Probe, Refused, Taken};
use Method::{Delete, Get, Patch, Post};

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    route(Get, "/healthz", Operation::Health, Probe),
    route(Get, "/metrics", Operation::Metrics, Probe),
    route(Get, "/openapi.json", Operation::OpenApi, Refused),
    route(Get, "/v1/limits", Operation::GetLimits, Refused),
    route(Get, "/v1/topics", Operation::ListTopics, Refused),
    route(Post, "/v1/topics", Operation::CreateTopic, Refused),
    route(Get, "/v1/topics/{topic}", Operation::DescribeTopic, Refused),
    route(Patch, "/v1/topics/{topic}", Operation::AlterTopic, Refused),
    route(
        Delete,
        "/v1/topics/{topic}",
        Operation::DeleteTopic,
        Refused,
    ),
    route(
        Get,
        "/v1/topics/{topic}/events",
        Operation::ReadEvents,
        Refused,
    ),
    route(
        Post,
        "/v1/topics/{topic}/events",
        Operation::PublishEvents,
        Refused,
    ),
    route(
        Get,
        "/v1/streams/{stream}",
        Operation::DescribeStream,
        Refused,
    ),
    route(
        Delete,
        "/v1/streams/{stream}",
        Operation::DeleteStream,
        Refused,
    ),
    route(
        Get,
        "/v1/streams/{stream}/events",
        Operation::ReadStream,
        Refused,
    ),
    route(
        Post,
        "/v1/streams/{stream}/events",
        Operation::AppendToStream,
        Refused,
    ),
    route(Get, "/v1/store/events", Operation::ReadAll, Refused),
    route(Get, "/v1/groups", Operation::ListGroups, Refused),
    route(Get, "/v1/groups/{group}", Operation::DescribeGroup, Refused),
    route(
        Delete,
        "/v1/groups/{group}",
        Operation::DeleteGroup,
        Refused,
    ),
    route(
        Post,
        "/v1/groups/{group}/reset",
        Operation::ResetGroup,
        Refused,
    ),
    route(
        Post,
        "/v1/groups/{group}/members",
        Operation::JoinGroup,
        Refused,
    ),
    route(
        Delete,
        "/v1/groups/{group}/members/{member}",
        Operation::LeaveGroup,
        Taken,
    ),
    route(
        Get,
        "/v1/groups/{group}/members/{member}/events",
        Operation::PollGroup,
        Refused,
    ),
    route(
        Post,
        "/v1/groups/{group}/members/{member}/commit",
        Operation::CommitOffsets,
        Taken,
    ),
    route(
        Post,
        "/v1/groups/{group}/members/{member}/heartbeat",
        Operation::HeartbeatMember,
        Taken,
    ),
    route(Get, "/v1/queues", Operation::ListQueues, Refused),
    route(Post, "/v1/queues", Operation::CreateQueue, Refused),
    route(Get, "/v1/queues/{group}", Operation::DescribeQueue, Refused),
    route(
        Delete,
        "/v1/queues/{group}",
        Operation::DeleteQueue,
        Refused,
    ),
    route(
        Post,
        "/v1/queues/{group}/receive",
        Operation::ReceiveDeliveries,
        Refused,
    ),
    route(Post, "/v1/queues/{group}/acks", Operation::AckLeases, Taken),
    route(
        Post,
        "/v1/queues/{group}/leases/{lease}/ack",
        Operation::AckLease,
        Taken,
    ),
    route(
        Post,
        "/v1/queues/{group}/leases/{lease}/nack",
        Operation::NackLease,
        Taken,
    ),
    route(
        Post,
        "/v1/queues/{group}/leases/{lease}/reject",
        Operation::RejectLease,
        Taken,
    ),
    route(
        Post,
        "/v1/queues/{group}/leases/{lease}/extend",
        Operation::ExtendLease,
        Taken,
    ),
    route(
        Post,
        "/v1/queues/{group}/leases/{lease}/release",
        Operation::ReleaseLease,
        Taken,
    ),
    route(
        Get,
        "/v1/queues/{group}/dead-letters",
        Operation::ListDeadLetters,
        Refused,
    ),
    route(
        Delete,
        "/v1/queues/{group}/dead-letters",
        Operation::PurgeDeadLetters,
        Refused,
    ),
    route(
        Post,
        "/v1/queues/{group}/dead-letters/redrive",
        Operation::RedriveDeadLetters,
        Refused,
    ),
    route(
        Get,
        "/v1/queues/{group}/dead-letters/{offset}",
        Operation::GetDeadLetter,
        Refused,
    ),
    route(
        Get,
        "/v1/sagas/{saga}/instances",
        Operation::ListSagaInstances,
        Refused,
    ),
    route(
        Get,
        "/v1/sagas/{saga}/instances/{key}",
        Operation::DescribeSagaInstance,
        Refused,
    ),
    route(Get, "/v1/catalog", Operation::GetCatalog, Refused),
    route(
        Get,
        "/v1/catalog/asyncapi",
        Operation::GetCatalogAsyncApi,
        Refused,
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn each_operation_and_each_method_and_path_appear_once() {
        let operations: BTreeSet<&str> = ROUTES.iter().map(|r| r.operation.id()).collect();
        assert_eq!(operations.len(), ROUTES.len());
        let routes: BTreeSet<(&str, &str)> =
            ROUTES.iter().map(|r| (r.method.as_str(), r.path)).collect();
        assert_eq!(routes.len(), ROUTES.len());
    }

    #[test]
    fn the_openapi_document_describes_exactly_these_routes() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI_JSON).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                let id = op["operationId"].as_str().unwrap_or_default().to_owned();
                documented.insert((method.to_uppercase(), path.clone(), id));
            }
        }
        let ours: BTreeSet<(String, String, String)> = ROUTES
            .iter()
            .map(|r| {
                (
                    r.method.as_str().to_owned(),
                    r.path.to_owned(),
                    r.operation.id().to_owned(),
                )
            })
            .collect();
        assert_eq!(documented, ours);
    }
}
