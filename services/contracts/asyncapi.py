"""The AsyncAPI 3.0 document of Relaydesk's NATS subjects, generated from ``events.model``
(the tagged unions), ``events.subjects`` and the types each publisher encodes.

``faststream docs gen`` cannot do it (it fails on handlers typed with msgspec Structs), so the
channels are listed here and every payload schema comes from ``msgspec.json.schema_components``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from connectors.chat.history import _Stored as ChatHistoryFrame
from events import subjects
from events.model import CustomerEvent, DeliverReply, InboundMessage, LogEvent, ReplyOutcomeReported
from events.personal import ENVELOPE, PERSONAL_FIELDS
from events.personal.keys import KEYS_STREAM, KeyRecord
from events.store import EXPECTED_LAST_SUBJECT_SEQ, MSG_ID

REF = "#/components/schemas/{name}"
# Component names for types whose class name is private to their module.
RENAMES = {"_Stored": "ChatHistoryFrame"}

DESCRIPTION = f"""\
Relaydesk's messages on NATS JetStream. Connectors publish what they hear on
`rd.inbound.<channel>` (stream {subjects.INBOUND_STREAM}); intake turns it into facts on the event
log {subjects.EVENTS_STREAM} (`rd.evt.c.<customer>.<conversation>` and `rd.evt.a.<agent>`),
where the router and the API append too; replies wait on `rd.out.<channel>`
({subjects.OUTBOUND_STREAM}, a work queue) for their connector.

Every payload is JSON with a `type` tag naming the fact. Readers skip tags they do not know
(a newer writer's facts), and a new field always has a default. Personal fields are sealed
per customer (`{ENVELOPE}<base64url>`, see `events.personal`): each message says which.
"""


def _personal(cls: type) -> str:
    fields = PERSONAL_FIELDS.get(cls)
    if fields is None:
        return ""
    sealed = list(fields.strings)
    if fields.attachments:
        sealed.append("attachments' name and url")
    if fields.metadata:
        sealed.append("metadata values (except technical keys)")
    return f" Sealed personal fields: {', '.join(sealed)}."


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def _tag(cls: type) -> str | None:
    config = getattr(cls, "__struct_config__", None)
    tag = config.tag if config is not None else None
    return tag if isinstance(tag, str) else None


def _message(cls: type, headers: dict[str, str]) -> dict[str, Any]:
    name = RENAMES.get(cls.__name__, cls.__name__)
    tag = _tag(cls)
    message: dict[str, Any] = {
        "name": tag or name,
        "title": name,
        "contentType": "application/json",
        "payload": {"$ref": REF.format(name=name)},
    }
    summary = _doc(cls).split(". ")[0].rstrip(".")
    description = (f"`type`: `{tag}`." if tag else "") + _personal(cls)
    if summary:
        message["summary"] = summary
    if description:
        message["description"] = description.strip()
    if headers:
        message["headers"] = {
            "type": "object",
            "properties": {name: {"type": "string", "description": about} for name, about in headers.items()},
        }
    return message


INBOUND_HEADERS = {
    MSG_ID: "dedupe id: `<channel>:<provider message id>`; a reply's outcome: `<channel>.outcome:<reply id>`",
}
LOG_HEADERS = {
    MSG_ID: "the append's dedupe id",
    EXPECTED_LAST_SUBJECT_SEQ: "optimistic concurrency: the subject's last sequence the writer saw",
}
OUTBOUND_HEADERS = {MSG_ID: "the reply id (a reply is queued once)"}


def _channel(address: str, description: str, params: dict[str, str], messages: list[str]) -> dict[str, Any]:
    channel: dict[str, Any] = {
        "address": address,
        "description": description,
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
    }
    if params:
        channel["parameters"] = {name: {"description": about} for name, about in params.items()}
    return channel


def _operation(action: str, channel: str, summary: str, messages: list[str]) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in messages],
    }


def _rename(value: Any) -> Any:
    """Apply ``RENAMES`` to component keys and ``$ref`` targets."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)
            if key == "$ref" and isinstance(item, str):
                prefix, _, name = item.rpartition("/")
                out[key] = f"{prefix}/{RENAMES.get(name, name)}"
            else:
                out[RENAMES.get(key, key)] = _rename(item)
        return out
    if isinstance(value, list):
        return [_rename(item) for item in value]
    return value


def build() -> dict[str, Any]:
    log_events: list[type] = list(LogEvent.__args__)
    customer_events = [cls for cls in log_events if issubclass(cls, CustomerEvent)]
    agent_events = [cls for cls in log_events if not issubclass(cls, CustomerEvent)]
    inbound: list[type] = [InboundMessage, ReplyOutcomeReported]
    payloads: list[type] = [*inbound, *log_events, DeliverReply, KeyRecord, ChatHistoryFrame]
    _, schemas = msgspec.json.schema_components(payloads, ref_template=REF)

    messages: dict[str, Any] = {}
    for cls in inbound:
        messages[cls.__name__] = _message(cls, INBOUND_HEADERS)
    for cls in log_events:
        messages[cls.__name__] = _message(cls, LOG_HEADERS)
    messages[DeliverReply.__name__] = _message(DeliverReply, OUTBOUND_HEADERS)
    messages["KeyRecord"] = _message(KeyRecord, {})
    messages["ChatHistoryFrame"] = _message(
        ChatHistoryFrame, {MSG_ID: "`<kind>:<digest of address, kind and key>` (a client retry is stored once)"}
    )

    names = {
        "inbound": [c.__name__ for c in inbound],
        "conversationEvents": [c.__name__ for c in customer_events],
        "agentEvents": [c.__name__ for c in agent_events],
        "outbound": [DeliverReply.__name__],
        "customerKeys": ["KeyRecord"],
        "chatHistory": ["ChatHistoryFrame"],
    }
    channel_param = {
        "channel": "a channel name (`^[a-z][a-z0-9_]{0,31}$`): sms, email, chat, social or a connector's own"
    }
    channels = {
        "inbound": _channel(
            "rd.inbound.{channel}",
            f"Stream {subjects.INBOUND_STREAM}: what a connector heard, and the outcome of each reply it sent."
            " Connectors never write the log.",
            channel_param,
            names["inbound"],
        ),
        "conversationEvents": _channel(
            "rd.evt.c.{customer}.{conversation}",
            f"Stream {subjects.EVENTS_STREAM} (the log, kept forever): a customer's facts, one subject per"
            f" conversation; customer-level facts stand on the conversation token `{subjects.CUSTOMER_SCOPE}`."
            " A customer's timeline is the filter `rd.evt.c.<customer>.>`.",
            {
                "customer": "the customer id",
                "conversation": f"the conversation id, or `{subjects.CUSTOMER_SCOPE}` for customer-level facts",
            },
            names["conversationEvents"],
        ),
        "agentEvents": _channel(
            "rd.evt.a.{agent}",
            f"Stream {subjects.EVENTS_STREAM}: an agent's profile, status and tokens (only token hashes).",
            {"agent": "the agent id"},
            names["agentEvents"],
        ),
        "outbound": _channel(
            "rd.out.{channel}",
            f"Stream {subjects.OUTBOUND_STREAM} (work queue): replies for the channel's connector to deliver.",
            channel_param,
            names["outbound"],
        ),
        "customerKeys": _channel(
            "rd.keys.{customer}",
            f"Stream {KEYS_STREAM}: a customer's data key, or its tombstone once destroyed (erasure);"
            " day keys for message retention stand on `rd.keys.<customer>.d<yyyymmdd>`.",
            {"customer": "the customer id (`_system` for system keys)"},
            names["customerKeys"],
        ),
        "chatHistory": _channel(
            "rd.chat.h.{address}",
            "Stream RD_CHAT (web chat connector): the catch-up history of one chat address, republished"
            " live on `rd.chat.live.<address>`.",
            {"address": "a digest of the chat address (the address itself never appears in a subject)"},
            names["chatHistory"],
        ),
    }
    operations = {
        "connectorPublishesInbound": _operation(
            "send",
            "inbound",
            "A connector publishes what it heard, acked by JetStream before it answers the provider",
            names["inbound"],
        ),
        "intakeReadsInbound": _operation(
            "receive",
            "inbound",
            "Intake (durable pull consumer `intake`) resolves identity and appends to the log",
            names["inbound"],
        ),
        "appendConversationEvents": _operation(
            "send",
            "conversationEvents",
            "Intake, the router and the API append facts (expected last subject sequence)",
            names["conversationEvents"],
        ),
        "readConversationEvents": _operation(
            "receive",
            "conversationEvents",
            "The router, projector, delivery and the API fold the log",
            names["conversationEvents"],
        ),
        "appendAgentEvents": _operation(
            "send", "agentEvents", "The API records agents' profiles, status and tokens", names["agentEvents"]
        ),
        "readAgentEvents": _operation(
            "receive", "agentEvents", "The router and the API fold agents' facts", names["agentEvents"]
        ),
        "queueReplies": _operation(
            "send", "outbound", "The API queues a reply for the customer's channel", names["outbound"]
        ),
        "connectorDeliversReplies": _operation(
            "receive",
            "outbound",
            "The channel's connector delivers the reply and reports the outcome on rd.inbound",
            names["outbound"],
        ),
        "keepCustomerKeys": _operation(
            "send", "customerKeys", "Writers create a customer's key; erasure destroys it", names["customerKeys"]
        ),
        "chatHistory": _operation(
            "send", "chatHistory", "The chat connector keeps each frame for catch-up", names["chatHistory"]
        ),
    }
    document: dict[str, Any] = _rename(
        {
            "asyncapi": "3.0.0",
            "info": {"title": "Relaydesk NATS subjects", "version": "v1", "description": DESCRIPTION},
            "defaultContentType": "application/json",
            "servers": {
                "nats": {
                    "host": "127.0.0.1:4222",
                    "protocol": "nats",
                    "description": "the embedded nats-server of `relaydesk up`, or [nats] url",
                }
            },
            "channels": channels,
            "operations": operations,
            "components": {"messages": messages, "schemas": schemas},
        }
    )
    return document
