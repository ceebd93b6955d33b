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
_RESULT = re.compile(r"(?:^|\s)(dmarc|dkim|spf)\s*=\s*([a-z]+)", re.IGNORECASE)
_HEADER_FROM = re.compile(r"(?:^|\s)header\.from\s*=\s*(\S+)", re.IGNORECASE)
_PROPERTY = re.compile(r"(?:^|\s)(header\.d|smtp\.mailfrom)\s*=\s*(\S+)", re.IGNORECASE)


def dmarc_verdict(msg: EmailMessage, authserv_id: str, from_domain: str = "") -> Verdict:
    """``fail`` when the trusted server says the DMARC check failed (in any of its fields),
    ``pass`` when it says passed, else ``none`` (not checked, a temporary error).

    A domain that publishes no DMARC policy (``dmarc=none``, or no DMARC result at all) passes
    when what DMARC would have asked for holds: the server saw a DKIM signature of
    ``from_domain`` (or of a domain it is under) pass, or SPF pass for an envelope sender
    there. Without this, mail from such a domain never passed and its Cc was never copied."""
    wanted = authserv_id.strip().lower()
    verdicts: set[str] = set()
    aligned = False
    # As sent, not through the header registry (which sees a bounded part of a field: a
    # ``dmarc=fail`` past it would go unseen).
    fields = (value for key, value in msg.raw_items() if key.lower() == "authentication-results")
    for field in fields:
        text = _COMMENT.sub(" ", str(field))
        server, _, results = text.partition(";")
        parts = server.split()
        if not parts or parts[0].lower() != wanted:
            continue  # another server's, or one the sender wrote
        for item in results.split(";"):
            found = _RESULT.search(item)
            if found is None:
                continue
            method, result = found.group(1).lower(), found.group(2).lower()
            if method == "dmarc":
                if result == "pass" and not _about(item, from_domain):
                    continue  # a pass for another From than the one filed: it vouches for nothing
                verdicts.add(result)
            elif result == "pass" and _aligned(item, from_domain):
                aligned = True
    if "fail" in verdicts:
        return "fail"
    return "pass" if "pass" in verdicts or aligned else "none"


def _about(item: str, from_domain: str) -> bool:
    """Whether a DMARC result ``item`` is about ``from_domain``: its ``header.from`` names that
    domain (or it names none, as some servers write it). A mail with two From fields, or one
    the server read otherwise than the parser does, could carry a pass for a domain the
    attacker owns while being filed under the customer's (found by a hostile-mail audit)."""
    named = _HEADER_FROM.search(item)
    if named is None:
        return True
    domain = from_domain.strip().lower().rstrip(".")
    return bool(domain) and named.group(1).strip().strip('"').rpartition("@")[2].lower().rstrip(".") == domain


def _aligned(item: str, from_domain: str) -> bool:
    """Whether a passing DKIM or SPF result ``item`` vouches for ``from_domain``: the signing
    domain (``header.d``) or the envelope sender's domain (``smtp.mailfrom``) is the From's
    domain or one it is under (DMARC's relaxed alignment, without the public suffix list: a
    bare top-level domain never counts)."""
    domain = from_domain.strip().lower().rstrip(".")
    if not domain:
        return False
    for _, value in _PROPERTY.findall(item):
        vouched = value.strip().strip('"').rpartition("@")[2].lower().rstrip(".")
        if "." in vouched and (domain == vouched or domain.endswith("." + vouched)):
            return True
    return False
