"""What an erasure (``services.customers.erase``) is told and what it answers: where the channels
keep what it must find (``ErasureTargets``), and what it removed (``ErasureReport``, the API's
answer and the CLI's table). Apart so the API's contracts and the unlinking import them without
the erasure's steps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErasureTargets:
    """Where the channels keep what an erasure must find (from ``[connectors.chat]`` and
    ``[connectors.email]``; the defaults otherwise)."""

    chat_stream: str = "RD_CHAT"
    chat_subject: str = "rd.chat"
    attachment_bucket: str = "rd_attachments"

    @classmethod
    def from_config(cls, config: Any) -> ErasureTargets:
        return cls.from_connectors(config.connectors)

    @classmethod
    def from_connectors(cls, tables: Mapping[str, Any]) -> ErasureTargets:
        """From the ``[connectors.<name>]`` tables (the API has them as ``ApiDeps.connectors``)."""
        chat = dict(tables.get("chat") or {})
        email = dict(tables.get("email") or {})
        return cls(
            chat_stream=str(chat.get("history_stream", cls.chat_stream)),
            chat_subject=str(chat.get("history_subject", cls.chat_subject)),
            attachment_bucket=str(email.get("attachment_bucket", cls.attachment_bucket)),
        )


@dataclass
class ErasureReport:
    requested: str  # the id asked for
    customer_id: str  # the survivor of its family, whose subject holds CustomerErased
    erased_ids: list[str]  # the whole family
    already_erased: bool = False
    seq: int | None = None  # of CustomerErased (None: it stood on the log already)
    identity_mappings: int = 0
    chat_frames: int = 0
    inbound_messages: int = 0
    attachments: int = 0
    reply_files: int = 0  # files agents sent the family (uploads named by their replies)
    queued_replies: int = 0  # replies to them not yet sent (RD_OUTBOUND)
    delivery_records: int = 0
    conversations_resolved: int = 0
    keys_destroyed: int = 0
    # Events of the family whose personal data is in clear on the log (written before sealing
    # existed, or with [security] encrypt_personal_data = false): no key to destroy makes
    # them unreadable, and RD_EVENTS is append-only. Named so the operator knows.
    left_in_clear: int = 0
    left_in_clear_seqs: list[int] = field(default_factory=list)  # the first 20

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
