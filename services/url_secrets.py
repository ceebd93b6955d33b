"""Passwords in connection strings, hidden for errors, logs and ``relaydesk config show``.

A password reaches a connection string three ways, and each must show as ``****``: in a URL's
user info (``postgresql://u:pw@h/db``, ``nats://u:pw@h``), as a URL's query parameter
(``postgresql://u@h/db?password=pw``, which libpq takes as well), or as a libpq keyword/value
pair (``host=h dbname=db password=pw``). A Slack incoming-webhook URL's path is its credential.
Where a string holds several URLs (a comma-separated ``[nats] url``), each is masked.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

MASK = "****"

# libpq's keyword/value form: ``keyword = value`` pairs, a value quoted with '...' when it holds
# spaces (backslash escapes inside). The keywords a DSN of this form starts with in practice.
_KEYWORD_DSN = re.compile(
    r"^\s*(host|hostaddr|port|dbname|user|password|passfile|service|sslmode|connect_timeout|"
    r"application_name|options|target_session_attrs)\s*=",
    re.IGNORECASE,
)
_SECRET_PAIR = re.compile(r"(\b\w*password)(\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def is_keyword_dsn(text: str) -> bool:
    """Whether ``text`` is a libpq keyword/value connection string (``host=h dbname=db``)."""
    return "://" not in text and bool(_KEYWORD_DSN.match(text))


def redact(text: str) -> str:
    """``text`` with every password in it as ``****`` (see the module's docstring)."""
    if is_keyword_dsn(text):
        return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    if "://" not in text:
        return text
    return ",".join(_redact_url(part) for part in text.split(","))


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}")
    if parts.query and "password" in parts.query.lower():
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        hidden = [(k, MASK if "password" in k.lower() else v) for k, v in pairs]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    if parts.hostname == "hooks.slack.com" and parts.path.startswith("/services/"):
        parts = parts._replace(path=f"/services/{MASK}")  # the path is the credential
    return parts.geturl()
