"""How an error is named where it is recorded (parking lot, quarantine, logs): its type and
message, bounded. Its own module so that processes without NATS (the rebuild's writer) can
name errors as the rest do."""

from __future__ import annotations

from events.redact import redact_error


def describe_error(err: BaseException) -> str:
    """``Type: message``, bounded, without the values the message quotes (a rejected field's
    value is the sender's data: an address, a name, a text). A JetStream refusal is said in its
    own code and words ("ServiceUnavailableError: 10023 insufficient resources"): they quote no
    sender's data, and redacting its quoted description left only the type."""
    err_code, description = getattr(err, "err_code", None), getattr(err, "description", None)
    if isinstance(err_code, int) and isinstance(description, str):  # nats-py's APIError
        return f"{type(err).__name__}: {err_code} {description}"[:2000]
    return redact_error(f"{type(err).__name__}: {err}"[:2000])
