"""Named operator tokens: each person who operates Relaydesk signs their own actions.

``[api] token`` is one shared secret, and everything done with it carries the actor
``operator``: an erasure, a merge or a token issued could not be traced to a person. A named
operator token is configured by its hash only, under ``[api.operators]``::

    [api.operators]
    maria = "sha256:3b1f…"   # relaydesk operators new-token maria prints the token and this line

A request bearing it acts with the operator's rights as ``operator:maria``, the actor put on
every event it causes, in the logs and in the console. Only the sha256 is kept in the config
(it is not a secret; the token is shown once, by ``relaydesk operators new-token``). Taking a
name out of the table revokes its token and the console sessions opened with it: the API reads
the table again when its config file changes (``services.api.operators_reload``). The shared
token keeps working as ``operator`` (``relaydesk up`` and the CLI's reports use it); keep it to
automation.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping

TOKEN_PREFIX = "rdot_"  # agent tokens are rdat_ (services.api.tokens)
HASH_PREFIX = "sha256:"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")


def new_token() -> str:
    """256 random bits, url-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """A bearer token's sha256 in hex: all the API keeps of any token (agent tokens too, tokens.py)."""
    return hashlib.sha256(token.encode()).hexdigest()


def hashed(token: str) -> str:
    """The value ``[api.operators]`` keeps for ``token``."""
    return HASH_PREFIX + hash_token(token)


def name_problem(name: str) -> str | None:
    if _NAME.fullmatch(name) is None:
        return (
            f"[api.operators] {name!r}: a name is 1-64 lowercase letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return None


def problems(operators: Mapping[str, str]) -> list[str]:
    """What is wrong with an ``[api.operators]`` table, each naming its key."""
    out: list[str] = []
    seen: dict[str, str] = {}
    for name, value in operators.items():
        if (why := name_problem(name)) is not None:
            out.append(why)
            continue
        digest = value.removeprefix(HASH_PREFIX)
        if not value.startswith(HASH_PREFIX) or _HEX.fullmatch(digest) is None:
            out.append(
                f"[api.operators] {name}: expected 'sha256:' and 64 lowercase hex digits"
                f" (relaydesk operators new-token {name} prints it), not a token"
            )
            continue
        if digest in seen:
            out.append(f"[api.operators] {name}: the same token hash as {seen[digest]}; one token per person")
            continue
        seen[digest] = name
    return out


def by_hash(operators: Mapping[str, str]) -> dict[str, str]:
    """sha256 hex digest -> operator name, for the authentication middleware (valid entries only:
    the configuration was checked at load)."""
    return {value.removeprefix(HASH_PREFIX): name for name, value in operators.items()}


def shared_token_named(shared: str, operators: Mapping[str, str]) -> str | None:
    """The name whose hash is the shared ``[api] token``'s, if any (it would act as ``operator``)."""
    return by_hash(operators).get(hash_token(shared)) if shared else None


class OperatorTable:
    """The ``[api.operators]`` table the API authenticates with now; ``replace`` swaps it whole
    (the config file changed) for every request after."""

    def __init__(self, table: Mapping[str, str] | None = None) -> None:
        self.table: dict[str, str] = {}
        self._by_hash: dict[str, str] = {}
        self.replace(table or {})

    def replace(self, table: Mapping[str, str]) -> None:
        self.table = dict(table)
        self._by_hash = by_hash(self.table)

    def name_of(self, token: str) -> str | None:
        """The operator ``token`` is the named token of, if any. A dict look-up by hash: what
        its timing could tell is a hash, not the token."""
        return self._by_hash.get(hash_token(token)) if self._by_hash else None

    def __bool__(self) -> bool:
        return bool(self._by_hash)
