"""kafka-python 3's KafkaAdminClient managing permissions on the Kafka
listener (CreateAcls, DescribeAcls, DeleteAcls), logged in with SCRAM as
`user`: creates two bindings for `principal`, lists them, deletes one by a
filter and lists again. Prints one JSON line, or the error. Driven by
crates/tidings-cli/tests/serve/permissions.rs.

    python3 kafka_python_acls.py <broker> <user> <password> <principal>
"""
import json
import sys

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)

broker, user, password, principal = sys.argv[1:5]


def shown(acls):
    return sorted(
        f"{a.principal} {a.permission_type.name} {a.operation.name} "
        f"{a.resource_pattern.resource_type.name} {a.resource_pattern.pattern_type.name} "
        f"{a.resource_pattern.resource_name}"
        for a in acls
    )


try:
    admin = KafkaAdminClient(
        bootstrap_servers=broker,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username=user,
        sasl_plain_password=password,
    )
    created = admin.create_acls(
        [
            ACL(principal, "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                ResourcePattern(ResourceType.TOPIC, "orders", ACLResourcePatternType.PREFIXED)),
            ACL(principal, "*", ACLOperation.READ, ACLPermissionType.ALLOW,
                ResourcePattern(ResourceType.GROUP, "billing", ACLResourcePatternType.LITERAL)),
        ]
    )
    failed = [str(f[1]) for f in created["failed"]]
    every = ACLFilter(
        principal=principal,
        host="*",
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    listed, error = admin.describe_acls(every)
    topics = ACLFilter(
        principal=principal,
        host="*",
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, None, ACLResourcePatternType.ANY),
    )
    deleted = admin.delete_acls([topics])
    removed = [shown(matches) for (_, matches, _) in deleted]
    after, _ = admin.describe_acls(every)
    admin.close()
    print(json.dumps({
        "failed": failed,
        "listed": shown(listed),
        "describe_error": str(error),
        "removed": removed,
        "after": shown(after),
    }))
except Exception as e:  # the test reads what the client says
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
