"""NATS permissions of Relaydesk's roles, and the server config that grants them.

One user per role (see ``services/bus/auth.py`` for why users with permissions and not
operator mode). The subjects are the JetStream API subjects nats-py uses (``nats/js/manager.py``,
``client.py``, ``kv.py``, ``object_store.py``) for exactly the streams, consumers and buckets
each service touches, checked against the server's "Publish Violation" / "Subscription
Violation" log lines with every service running (tests/integration/test_nats_security.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from events import subjects
from events.parking import PARKED_BUCKET
from events.streams import CANNED_BUCKET

SERVICE_ROLES = ("intake", "router", "projector", "delivery", "api")
TOOL = "tool"
CONNECTOR_PREFIX = "connector-"
SINK_PREFIX = "sink-"

# Buckets and streams added by other parts of Relaydesk (names decided together).
KEYS_STREAM = "RD_KEYS"
KEYS_BUCKET = "rd_keys"
IDEMPOTENCY_BUCKET = "rd_idempotency"
DELIVERIES_BUCKET = "rd_deliveries"
ATTACHMENTS_BUCKET = "rd_attachments"
CHAT_STREAM = "RD_CHAT"


def connector_user(name: str) -> str:
    return CONNECTOR_PREFIX + subjects.token(name)


def sink_user(name: str) -> str:
    return SINK_PREFIX + subjects.token(name)


def sink_bucket(name: str) -> str:
    """A sink's own KV bucket (the same name as ``services.sinks.sdk.state.bucket_name``)."""
    return f"rd_sink_{subjects.token(name)}"


def is_role_user(user: str) -> bool:
    """A user name Relaydesk's own permissions know (and give a private inbox prefix)."""
    if user in SERVICE_ROLES or user == TOOL:
        return True
    return any(user.startswith(prefix) and len(user) > len(prefix) for prefix in (CONNECTOR_PREFIX, SINK_PREFIX))


def inbox_prefix(user: str) -> str:
    return f"_INBOX_{user}"


# -- permissions -----------------------------------------------------------------------------

API = "$JS.API"


def _kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


def _obj_stream(bucket: str) -> str:
    return f"OBJ_{bucket}"


def read_stream(stream: str) -> list[str]:
    """Read a stream: ephemeral / ordered consumers, message gets (direct or not)."""
    return [
        f"{API}.CONSUMER.CREATE.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}.>",
        f"{API}.CONSUMER.INFO.{stream}.*",
        f"{API}.CONSUMER.DELETE.{stream}.*",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.*",
        f"{API}.STREAM.MSG.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}.>",
        f"$JS.ACK.{stream}.>",
    ]


def durable_consumer(stream: str, durable: str, filter_subject: str) -> list[str]:
    """Own one durable pull consumer whose filter is fixed by the API subject itself (the
    server checks the body's filter against it), and nothing else on that stream."""
    return [
        f"{API}.CONSUMER.CREATE.{stream}.{durable}.{filter_subject}",
        f"{API}.CONSUMER.INFO.{stream}.{durable}",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def create_stream(stream: str) -> list[str]:
    return [f"{API}.STREAM.CREATE.{stream}", f"{API}.STREAM.UPDATE.{stream}"]


def read_kv(bucket: str) -> list[str]:
    return read_stream(_kv_stream(bucket))


def write_kv(bucket: str, keys: str = ">") -> list[str]:
    return [f"$KV.{bucket}.{keys}"]


def read_objects(bucket: str) -> list[str]:
    return read_stream(_obj_stream(bucket))


def write_objects(bucket: str, names: tuple[str, ...] = ()) -> list[str]:
    """Store objects in ``bucket``; with ``names``, only objects of those names. Chunks go
    under fresh NUIDs (any role writing there may add some), but an object is what its
    metadata message names: the router, the API and delivery share ``rd_snapshots``, and none
    may replace another's snapshot (the router would load a forged routing state). Replacing
    an object purges its old chunks (a filtered purge of the bucket's stream)."""
    meta = [f"$O.{bucket}.M.{object_key(name)}" for name in names] or [f"$O.{bucket}.M.>"]
    return [f"$O.{bucket}.C.>", *meta, f"{API}.STREAM.PURGE.{_obj_stream(bucket)}"]


def object_key(name: str) -> str:
    """The token of an object's metadata subject, as nats-py writes it (``object_store.py``)."""
    return base64.urlsafe_b64encode(name.encode()).decode()


EVERYONE = [
    f"{API}.INFO",
    f"{API}.STREAM.INFO.*",
    f"{API}.STREAM.NAMES",
    "$JS.FC.>",  # flow control answers of ordered consumers
    *write_kv(PARKED_BUCKET),
]

READ_LOG = [*read_stream(subjects.EVENTS_STREAM), *read_stream(KEYS_STREAM), *read_kv(KEYS_BUCKET)]
APPEND_LOG = [subjects.EVENTS_ALL]
WRITE_KEYS = ["rd.keys.>", *write_kv(KEYS_BUCKET)]


def _role_publish(role: str) -> list[str]:
    if role == "intake":
        return [
            *APPEND_LOG,
            *READ_LOG,
            *WRITE_KEYS,
            *durable_consumer(subjects.INBOUND_STREAM, subjects.INTAKE_DURABLE, subjects.INBOUND_ALL),
            f"{API}.CONSUMER.UPDATE.{subjects.INBOUND_STREAM}.intake.>",
            f"{API}.CONSUMER.DURABLE.CREATE.{subjects.INBOUND_STREAM}.{subjects.INTAKE_DURABLE}",
            f"{API}.STREAM.MSG.GET.{subjects.INBOUND_STREAM}",  # a dead letter's payload
            # the window other intake processes hold (services/intake/ordering.py)
            f"{API}.DIRECT.GET.{subjects.INBOUND_STREAM}",
            *read_kv(subjects.IDENTITY_BUCKET),
            *write_kv(subjects.IDENTITY_BUCKET),
            *read_kv(subjects.STATE_BUCKET),
        ]
    if role == "router":
        return [
            *APPEND_LOG,
            *READ_LOG,
            *read_kv(subjects.LEASE_BUCKET),
            *write_kv(subjects.LEASE_BUCKET),
            *read_objects(subjects.SNAPSHOT_BUCKET),
            *write_objects(subjects.SNAPSHOT_BUCKET, ("router",)),
        ]
    if role == "projector":
        return [*READ_LOG, *read_kv(subjects.STATE_BUCKET), *read_objects(subjects.SNAPSHOT_BUCKET)]
    if role == "delivery":
        return [
            *READ_LOG,
            *read_kv(subjects.STATE_BUCKET),
            *write_kv(subjects.STATE_BUCKET, "delivery.>"),
            *read_kv(subjects.LEASE_BUCKET),
            *write_kv(subjects.LEASE_BUCKET),
            *create_stream(_kv_stream(DELIVERIES_BUCKET)),
            *read_kv(DELIVERIES_BUCKET),
            *write_kv(DELIVERIES_BUCKET),
            *read_objects(subjects.SNAPSHOT_BUCKET),  # its snapshot (services.delivery.snapshots)
            *write_objects(subjects.SNAPSHOT_BUCKET, ("delivery",)),
        ]
    if role == "api":
        return [
            *APPEND_LOG,
            *READ_LOG,
            *WRITE_KEYS,
            f"{API}.STREAM.MSG.DELETE.{KEYS_STREAM}",  # erasure destroys a customer's key
            subjects.OUTBOUND_ALL,  # replies for the connectors to deliver
            subjects.INBOUND_ALL,  # an operator's re-drive of a dead letter (POST /v1/dlq/{key}/retry)
            *read_kv(subjects.IDENTITY_BUCKET),
            *write_kv(subjects.IDENTITY_BUCKET),
            *read_kv(subjects.STATE_BUCKET),
            *read_kv(DELIVERIES_BUCKET),
            *write_kv(DELIVERIES_BUCKET),
            *read_kv(PARKED_BUCKET),
            *create_stream(_kv_stream(IDEMPOTENCY_BUCKET)),
            *read_kv(IDEMPOTENCY_BUCKET),
            *write_kv(IDEMPOTENCY_BUCKET),
            *create_stream(_kv_stream(CANNED_BUCKET)),  # canned replies kept by the API (canned_store)
            *read_kv(CANNED_BUCKET),
            *write_kv(CANNED_BUCKET),
            *read_objects(subjects.SNAPSHOT_BUCKET),
            *write_objects(subjects.SNAPSHOT_BUCKET, ("api", "reports")),  # its view; service reports
            # Erasure removes a customer's raw messages and attachments.
            f"{API}.STREAM.MSG.DELETE.{subjects.INBOUND_STREAM}",
            f"{API}.STREAM.MSG.DELETE.{CHAT_STREAM}",
            f"{API}.STREAM.MSG.DELETE.{_obj_stream(ATTACHMENTS_BUCKET)}",
            # ... and the replies to them still queued (read one by one: no consumer on a work queue).
            f"{API}.STREAM.MSG.GET.{subjects.OUTBOUND_STREAM}",
            f"{API}.STREAM.MSG.DELETE.{subjects.OUTBOUND_STREAM}",
            *read_stream(subjects.INBOUND_STREAM),
            *read_stream(CHAT_STREAM),
            *read_objects(ATTACHMENTS_BUCKET),
            *write_objects(ATTACHMENTS_BUCKET),
        ]
    raise ValueError(f"unknown NATS role {role!r}")


def _connector_publish(name: str, channel: str) -> list[str]:
    durable = f"connector_{subjects.token(name)}"
    allow = [
        subjects.inbound(channel),
        *durable_consumer(subjects.OUTBOUND_STREAM, durable, subjects.outbound(channel)),
        # Reading replies needs the customer's data key (never the log itself).
        *read_stream(KEYS_STREAM),
        *read_kv(KEYS_BUCKET),
    ]
    if name == "chat":
        allow += [*create_stream(CHAT_STREAM), *read_stream(CHAT_STREAM), "rd.chat.h.>"]
    if name == "voice":
        # connectors.voice.bridge follows the log to bridge accepted calls (reads only).
        allow += READ_LOG
    if name == "email":
        allow += [
            *read_kv(subjects.STATE_BUCKET),
            *write_kv(subjects.STATE_BUCKET, "email.>"),
            *write_kv(subjects.STATE_BUCKET, "connector.email.>"),
            *create_stream(_obj_stream(ATTACHMENTS_BUCKET)),
            *read_objects(ATTACHMENTS_BUCKET),
            *write_objects(ATTACHMENTS_BUCKET),
        ]
    return allow


def _sink_publish(name: str) -> list[str]:
    """What ``services/sinks/sdk`` touches: the log read from its saved position with an
    ordered consumer (no durable: the position lives in its bucket) and direct gets of one
    customer's events; ``ReplyRequested`` / ``ConversationResolved`` appended on a
    conversation's subject (never an agent's); the reply queued on ``rd.out.<channel>`` for
    the connector; its own bucket (created on first start) and its lease key ``sink.<name>``."""
    bucket = sink_bucket(name)
    return [
        *READ_LOG,
        subjects.CUSTOMER_EVENTS_ALL,
        subjects.OUTBOUND_ALL,
        *create_stream(_kv_stream(bucket)),
        *read_kv(bucket),
        *write_kv(bucket),
        *read_kv(subjects.LEASE_BUCKET),
        *write_kv(subjects.LEASE_BUCKET, f"sink.{subjects.token(name)}"),
    ]


def permissions(user: str, channel: str = "") -> dict[str, Any]:
    """The nats-server ``permissions`` block of ``user``; the tool role has none (all)."""
    if user == TOOL:
        return {}
    if user.startswith(CONNECTOR_PREFIX):
        name = user[len(CONNECTOR_PREFIX) :]
        publish = _connector_publish(name, channel or name)
        durable = f"connector_{name}"
        subscribe = [
            f"{inbox_prefix(user)}.>",
            subjects.max_deliveries_advisory(subjects.OUTBOUND_STREAM, durable),
            # Commands deleted while held (connectors.sdk.withdrawals): an unlink, an erasure.
            subjects.terminated_advisory(subjects.OUTBOUND_STREAM, durable),
        ]
        if name == "chat":
            subscribe.append("rd.chat.live.>")
    elif user.startswith(SINK_PREFIX):
        publish = _sink_publish(user[len(SINK_PREFIX) :])
        subscribe = [f"{inbox_prefix(user)}.>"]  # the ordered consumer delivers to its own inbox
    else:
        publish = _role_publish(user)
        subscribe = [f"{inbox_prefix(user)}.>"]
        if user == "intake":
            subscribe.append(subjects.max_deliveries_advisory(subjects.INBOUND_STREAM, "intake"))
    return {
        "publish": {"allow": sorted(set(EVERYONE + publish))},
        "subscribe": {"allow": subscribe},
    }


# -- the server config -------------------------------------------------------------------------


def server_config(passwords: dict[str, str], channels: dict[str, str] | None = None) -> str:
    """The ``authorization`` block for ``passwords`` (user -> a config value: a quoted string,
    or ``$ENV_NAME`` for the cluster). Anonymous clients are refused (no ``no_auth_user``)."""
    channels = channels or {}
    lines = [
        "# Relaydesk NATS users and permissions: generated by services/bus/permissions.py, do not edit.",
        "authorization {",
        "  users = [",
    ]
    for user, password in passwords.items():
        perms = permissions(user, channels.get(user, ""))
        lines.append(f"    {{ user: {json.dumps(user)}, password: {password}")
        if perms:
            lines.append("      permissions: {")
            for direction in ("publish", "subscribe"):
                lines.append(f"        {direction}: {{ allow: [")
                lines += [f"          {json.dumps(subject)}" for subject in perms[direction]["allow"]]
                lines.append("        ] }")
            lines.append("      }")
        lines.append("    }")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def password_env(user: str) -> str:
    return "RELAYDESK_NATS_PASSWORD_" + user.upper().replace("-", "_")


# The connectors and sinks deploy/ runs: always users of the cluster (deploy/nats/auth.conf).
SHIPPED_CONNECTORS = ("sms", "email", "social", "chat", "voice")
SHIPPED_SINKS = ("zendesk", "freshdesk")


def cluster_auth_config(
    connectors: tuple[str, ...] = SHIPPED_CONNECTORS,
    sinks: tuple[str, ...] = SHIPPED_SINKS,
    channels: Mapping[str, str] | None = None,
) -> str:
    """``deploy/nats/auth.conf``: the same users, passwords from environment variables. The
    sinks' users are there even where no sink runs (optional in deploy/): a user nobody
    connects as grants nothing, and enabling a sink then needs no new cluster config.
    ``channels``: connector name -> the channel it serves, where that is not its name."""
    users = [TOOL, *SERVICE_ROLES, *(connector_user(name) for name in connectors), *(sink_user(n) for n in sinks)]
    by_user = {connector_user(name): channel for name, channel in (channels or {}).items()}
    return server_config({user: "$" + password_env(user) for user in users}, by_user)


def cluster_connectors(named: Iterable[str] = ()) -> dict[str, str]:
    """Connector name -> channel, for ``relaydesk setup --nats-auth-config``: the shipped
    connectors, then (sorted) every other installed one (a plug-in: a ``relaydesk.connectors``
    entry point) and every one ``named`` (a config's ``[connectors.<name>]`` tables). A named
    connector not installed here is assumed to serve the channel of its name, as
    ``permissions`` assumes. With no plug-in and nothing named: the shipped auth.conf's list."""
    from connectors.sdk import registry  # not at the top: the SDK is the connectors' business

    out = {name: name for name in SHIPPED_CONNECTORS}
    for name, channel in registry.channels(named).items():
        out.setdefault(name, channel)
    return out
