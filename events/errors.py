"""How an error is named where it is recorded (parking lot, quarantine, logs): its type and
message, bounded. Its own module so that processes without NATS (the rebuild's writer) can
name errors as the rest do."""

from __future__ import annotations


def describe_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:2000]
