"""What a stream, KV bucket or object store should be (its spec: the wanted config and the
fields compared) and how the one NATS holds differs from it (``Drift``), with which changes
would delete stored messages. Pure: ``events.stream_setup`` does the calls."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nats.js.api import KeyValueConfig, ObjectStoreConfig, StreamConfig

Kind = Literal["stream", "kv", "objects"]


@dataclass(frozen=True)
class StoreSpec:
    """One stream, KV bucket or object store and its wanted config. ``name`` is the JetStream
    stream (``KV_<bucket>``, ``OBJ_<bucket>`` for buckets). ``owner`` creates it: ``setup``
    (``ensure_streams``) or the service / connector that creates it lazily (setup then only
    brings an existing one in line). ``checked``: the stream fields compared for drift."""

    name: str
    kind: Kind
    owner: str
    config: StreamConfig | KeyValueConfig | ObjectStoreConfig
    checked: tuple[str, ...]
    required: bool = True  # services refuse to start without it (``StreamsMissing``)

    def wanted(self) -> dict[str, Any]:
        c = self.config
        if isinstance(c, StreamConfig):
            return {f: getattr(c, f) for f in self.checked}
        if isinstance(c, KeyValueConfig):
            kv = {
                "num_replicas": c.replicas,
                "max_msgs_per_subject": c.history,
                "max_age": c.ttl,
                "max_bytes": c.max_bytes,
                "max_msg_size": c.max_value_size,
                # What nats-py sets on every bucket it creates: a bucket made by an older client
                # refused the TTL on entries and markers meant to lapse (``events.kv_expiry``).
                "allow_msg_ttl": True,
            }
            return {f: kv[f] for f in self.checked}
        obj = {"num_replicas": c.replicas, "max_age": c.ttl, "max_bytes": c.max_bytes}
        return {f: obj[f] for f in self.checked}


STREAM_FIELDS = (
    "subjects",
    "retention",
    "storage",
    "num_replicas",
    "max_age",
    "discard",
    "deny_delete",
    "deny_purge",
    "allow_direct",
    "max_msgs_per_subject",
    # Limits: a stream someone made with room for ten messages took ten, then refused every
    # append while the services said ready (found by an audit).
    "max_msgs",
    "max_bytes",
    "max_msg_size",
)


def stream_spec(config: StreamConfig, owner: str = "setup", *, required: bool = True) -> StoreSpec:
    """A stream's spec: the common fields, plus the optional ones the config sets."""
    assert config.name is not None
    extra = tuple(f for f in ("duplicate_window", "republish") if getattr(config, f))
    return StoreSpec(config.name, "stream", owner, config, STREAM_FIELDS + extra, required)


def kv_spec(config: KeyValueConfig, owner: str = "setup", *, required: bool = True) -> StoreSpec:
    checked = ("num_replicas", "max_msgs_per_subject", "max_bytes", "max_msg_size", "allow_msg_ttl") + (
        ("max_age",) if config.ttl else ()
    )
    return StoreSpec(f"KV_{config.bucket}", "kv", owner, config, checked, required)


def objects_spec(config: ObjectStoreConfig, owner: str = "setup", *, required: bool = True) -> StoreSpec:
    checked = ("num_replicas", "max_bytes") + (("max_age",) if config.ttl else ())
    return StoreSpec(f"OBJ_{config.bucket}", "objects", owner, config, checked, required)


# What the server reports for a field left unset.
_UNSET: dict[str, Any] = {
    "retention": "limits",
    "storage": "file",
    "num_replicas": 1,
    "max_age": 0.0,
    "discard": "old",
    "deny_delete": False,
    "deny_purge": False,
    "allow_direct": False,
    "max_msgs_per_subject": -1,
    "max_bytes": -1,
    "max_msgs": -1,
    "max_msg_size": -1,
    "republish": None,
    "allow_msg_ttl": False,
}


def normalise(name: str, value: Any) -> Any:
    """A field's value as comparable: enums by value, unset as the server's default, seconds
    to the millisecond, subjects as a set, a republish as its parts."""
    if value is None:
        return _UNSET.get(name)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return tuple(sorted(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (getattr(value, "src", None), getattr(value, "dest", None), bool(getattr(value, "headers_only", False)))
    if name in ("max_bytes", "max_msgs_per_subject", "max_msgs", "max_msg_size") and value == 0:
        return -1
    return value


Status = Literal["differs", "updated", "refused", "kept"]

# Limits whose tightening deletes stored messages at once (the oldest beyond the new limit).
_DELETING_LIMITS = {"max_age": 0.0, "max_bytes": -1, "max_msgs": -1, "max_msgs_per_subject": -1}


def deletes_data(field_name: str, old: Any, new: Any) -> bool:
    """Whether changing ``field_name`` from ``old`` to ``new`` (normalised) deletes messages:
    a retention or size limit set where there was none, or set lower."""
    unlimited = _DELETING_LIMITS.get(field_name)
    if field_name not in _DELETING_LIMITS or new == unlimited:
        return False
    return bool(old == unlimited or new < old)


@dataclass(frozen=True)
class Drift:
    """One field of one stream that differs from the wanted config."""

    stream: str
    field: str
    old: Any
    new: Any
    status: Status = "differs"
    reason: str = ""

    def __str__(self) -> str:
        text = f"{self.stream}: {self.field} is {self.old!r}, wanted {self.new!r}"
        if self.status == "refused":
            text += f" (NATS refused the update: {self.reason})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in dataclasses.asdict(self).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class DriftRefused(RuntimeError):
    """NATS refused to bring streams in line with the wanted config: the reason names each."""

    def __init__(self, refused: Sequence[Drift]) -> None:
        self.refused = list(refused)
        super().__init__(
            "; ".join(str(d) for d in refused)
            + ": change the config back, or move the data to a new stream (NATS cannot change these in place)"
        )


def compare(spec: StoreSpec, actual: StreamConfig) -> list[Drift]:
    out: list[Drift] = []
    for name, want in spec.wanted().items():
        have = normalise(name, getattr(actual, name, None))
        wanted = normalise(name, want)
        if have != wanted:
            out.append(Drift(spec.name, name, have, wanted))
    return out
