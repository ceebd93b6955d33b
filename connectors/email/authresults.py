"""What the receiving mail server concluded of a mail's sender: its ``Authentication-Results``
(RFC 8601), trusted only when written by the server named in ``trusted_authserv_id``.

Relaydesk does not check SPF, DKIM or DMARC itself: the mail server in front of its listener
does, and records the verdict in an ``Authentication-Results`` field stamped with its own
authserv-id. Anyone may write such a field into a mail they send, so only fields naming the
configured server count (a server strips fields claiming its id from incoming mail, RFC 8601
§5). Without the setting nothing is checked, as before. Parsed by hand: the grammar needed
(the authserv-id, then ``method=result`` items split by ``;``) is small, and the one library
for it (``authres``) would be a dependency for ten lines.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Literal

from connectors.sdk import Malformed

Verdict = Literal["pass", "fail", "none"]


class ForgedSender(Malformed):
    """The trusted server's DMARC check failed: the From address is not the sender's."""


_COMMENT = re.compile(r"\([^()]*\)")
_DMARC = re.compile(r"(?:^|\s)dmarc\s*=\s*([a-z]+)", re.IGNORECASE)


def dmarc_verdict(msg: EmailMessage, authserv_id: str) -> Verdict:
    """``fail`` when the trusted server says the DMARC check failed (in any of its fields),
    ``pass`` when it says passed, else ``none`` (not checked, no policy, a temporary error)."""
    wanted = authserv_id.strip().lower()
    verdicts: set[str] = set()
    for field in msg.get_all("Authentication-Results") or ():
        text = _COMMENT.sub(" ", str(field))
        server, _, results = text.partition(";")
        parts = server.split()
        if not parts or parts[0].lower() != wanted:
            continue  # another server's, or one the sender wrote
        for item in results.split(";"):
            if found := _DMARC.search(item):
                verdicts.add(found.group(1).lower())
    if "fail" in verdicts:
        return "fail"
    return "pass" if "pass" in verdicts else "none"
