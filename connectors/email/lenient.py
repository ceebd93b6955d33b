"""Reading mail leniently: a part of a mail the parser cannot read is passed over, said and
counted, so the mail is still accepted (shared by the parser's helpers)."""

from __future__ import annotations

import structlog

from events.skips import count_skip

log = structlog.get_logger("connectors.email.parse")


def forgiven(what: str, err: Exception) -> None:
    """A part of a mail the parser could not read, passed over so the mail is still accepted:
    said (which part, the error's type; never the content) and counted (``relaydesk_skipped_total``
    with ``where="email.parse.<what>"``)."""
    log.info("email.parse_forgiven", part=what, error=type(err).__name__)
    count_skip(f"email.parse.{what}")
