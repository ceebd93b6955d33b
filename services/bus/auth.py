"""NATS security: one user per service role, each allowed only the subjects its work needs.

Why users with permissions in the server config (and not nkeys/JWT operator mode): one account
holds the whole system, so accounts and their exports buy nothing; the config is a plain file
the embedded server and ``deploy/nats/`` share (readable, diffable, tested); passwords come from
files (embedded) or environment variables (cluster) with no ``nsc`` tooling, no resolver and no
extra Python dependency (nats-py needs the ``nkeys`` package for nkeys and JWTs). Clients that
bring a creds file or an nkey seed are still supported (``[nats] creds`` / ``nkey_seed``).

Roles: ``connector-<name>`` (one per connector), ``intake``, ``router``, ``projector``,
``delivery``, ``api`` and ``tool`` (the operator's commands and ``up``'s stream set-up: the
only role that may create, update, purge or delete the core streams). Each role user gets its
own reply inbox prefix ``_INBOX_<user>`` so no role can read another's request replies.

The roles' permissions and the server config: ``services/bus/permissions.py``. Here: the
credentials ``relaydesk up`` generates and keeps, and how a client connects with them.
"""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog

from services.bus.permissions import (
    SERVICE_ROLES,
    TOOL,
    connector_user,
    inbox_prefix,
    is_role_user,
    server_config,
    sink_user,
)
from services.config import ConfigError
from services.url_secrets import redact

if TYPE_CHECKING:
    from faststream.security import BaseSecurity

    from services.config import NatsSettings

log = structlog.get_logger(__name__)

CREDENTIALS_DIR = "nats-credentials"
SERVER_CONFIG = "nats-server.conf"


# -- server URLs ----------------------------------------------------------------------------

NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def redact_url(url: str) -> str:
    """``url`` with any password in it replaced by ``****`` (for errors, logs, `config show`):
    ``services.url_secrets.redact``."""
    return redact(url)


def server_list(url: str | Sequence[str]) -> list[str]:
    """The NATS servers in ``[nats] url``: a comma-separated string or a list (TOML), so a
    client can fail over between cluster nodes. Blanks are trimmed; an empty entry, a
    scheme other than nats/tls/ws/wss or a URL without a host is a ``ConfigError`` naming it.
    An entry without a scheme gets ``nats://`` (as nats.py does)."""
    entries = url.split(",") if isinstance(url, str) else [part for item in url for part in str(item).split(",")]
    servers: list[str] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            raise ConfigError(f"[nats] url {redact_url(str(url))!r} has an empty entry (a stray comma?)")
        if "://" not in entry:
            entry = f"nats://{entry}"
        try:
            parts = urlsplit(entry)
            port = parts.port
        except ValueError as err:  # a port that is not a number, a broken IPv6 literal
            raise ConfigError(f"[nats] url {redact_url(entry)!r} is not a valid URL: {err}") from err
        if parts.scheme not in NATS_SCHEMES:
            schemes = ", ".join(f"{s}://" for s in NATS_SCHEMES)
            raise ConfigError(f"[nats] url {redact_url(entry)!r}: the scheme must be one of {schemes}")
        if not parts.hostname:
            raise ConfigError(f"[nats] url {redact_url(entry)!r} names no host")
        if port == 0:
            raise ConfigError(f"[nats] url {redact_url(entry)!r}: port 0 is not a server's port")
        servers.append(entry)
    if not servers:
        raise ConfigError("[nats] url is empty")
    return servers


def describe_servers(url: str | Sequence[str]) -> str:
    """For messages: the servers, comma-separated, passwords masked."""
    if isinstance(url, str):
        return ",".join(redact_url(part.strip()) for part in url.split(","))
    return ",".join(redact_url(str(part)) for part in url)


# -- credentials kept in the data dir --------------------------------------------------------


def private_dir(path: Path) -> Path:
    """``path`` created if missing, readable by its owner only (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


@dataclass(frozen=True)
class RoleCredentials:
    """The generated users of ``relaydesk up``'s embedded server: ``user -> password``, one
    file per user in ``<data dir>/nats-credentials`` (0600), kept across restarts."""

    directory: Path
    passwords: dict[str, str]
    channels: dict[str, str]  # connector user -> its channel

    @classmethod
    def ensure(cls, data_dir: Path, connectors: dict[str, str], sinks: Sequence[str] = ()) -> RoleCredentials:
        """Load the kept credentials, generating those missing. ``connectors``: name -> channel;
        ``sinks``: the helpdesk sinks (``sink-<name>`` users)."""
        private_dir(data_dir)
        directory = private_dir(data_dir / CREDENTIALS_DIR)
        users = [TOOL, *SERVICE_ROLES, *(connector_user(name) for name in sorted(connectors))]
        users += [sink_user(name) for name in sorted(sinks)]
        passwords = {user: _kept_password(directory / f"{user}.password") for user in users}
        channels = {connector_user(name): channel for name, channel in connectors.items()}
        return cls(directory, passwords, channels)

    def auth(self, user: str, base: NatsAuth | None = None) -> NatsAuth:
        """How ``user`` connects (TLS settings kept from ``base``)."""
        return replace(base or NatsAuth(), user=user, password=self.passwords[user], token="", creds="", nkey_seed="")

    def for_connector(self, name: str, base: NatsAuth | None = None) -> NatsAuth:
        return self.auth(connector_user(name), base)

    def write_server_config(self) -> Path:
        path = self.directory / SERVER_CONFIG
        text = server_config({user: json.dumps(pw) for user, pw in self.passwords.items()}, self.channels)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(text)
        return path


def _kept_password(path: Path) -> str:
    if path.exists():
        path.chmod(0o600)
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    log.info("nats.credentials_generated", user=path.stem)
    return password


def role_credentials(data_dir: Path, user: str) -> NatsAuth | None:
    """``user``'s generated credentials from the data dir, if any."""
    path = data_dir / CREDENTIALS_DIR / f"{user}.password"
    if not path.exists():
        return None
    return NatsAuth(user=user, password=path.read_text().strip())


# -- the client side -------------------------------------------------------------------------


@dataclass(frozen=True)
class NatsAuth:
    """How one process authenticates to NATS (all optional: anonymous when nothing is set)."""

    user: str = ""
    password: str = ""
    token: str = ""
    creds: str = ""  # a .creds file (user JWT + nkey seed)
    nkey_seed: str = ""  # a file holding an nkey seed
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    @classmethod
    def from_settings(cls, s: NatsSettings) -> NatsAuth:
        return cls(
            user=s.user,
            password=s.password,
            token=s.token,
            creds=s.creds,
            nkey_seed=s.nkey_seed,
            tls_ca=s.tls_ca,
            tls_cert=s.tls_cert,
            tls_key=s.tls_key,
        )

    @property
    def has_identity(self) -> bool:
        return bool(self.user or self.token or self.creds or self.nkey_seed)

    @property
    def may_manage_streams(self) -> bool:
        """False for a Relaydesk role other than tool: it only checks the streams exist."""
        return not (self.user and is_role_user(self.user) and self.user != TOOL)

    def describe(self) -> str:
        """For logs and errors: who, never a secret."""
        if self.user:
            return f"user {self.user}"
        if self.creds:
            return f"creds {self.creds}"
        if self.nkey_seed:
            return "an nkey"
        return "a token" if self.token else "no credentials"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not (self.tls_ca or self.tls_cert):
            return None
        context = ssl.create_default_context(cafile=self.tls_ca or None)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key or None)
        return context

    def _need_nkeys(self, setting: str) -> None:
        import importlib.util

        if importlib.util.find_spec("nkeys") is None:
            raise SystemExit(f"[nats] {setting} needs the 'nkeys' package (pip install nkeys)")

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``."""
        options: dict[str, Any] = {}
        if self.user:
            options["user"] = self.user
            options["password"] = self.password
            if is_role_user(self.user):
                options["inbox_prefix"] = inbox_prefix(self.user)
        if self.token:
            options["token"] = self.token
        if self.creds:
            self._need_nkeys("creds")
            options["user_credentials"] = self.creds
        if self.nkey_seed:
            self._need_nkeys("nkey_seed")
            options["nkeys_seed"] = self.nkey_seed
        context = self.ssl_context()
        if context is not None:
            options["tls"] = context
        return options

    def faststream_security(self) -> BaseSecurity | None:
        """The same credentials for FastStream's ``NatsBroker(security=...)``."""
        from faststream.nats.security import NatsCredentials, NatsNKey, NatsSecurity, NatsToken, NatsUserPassword

        context = self.ssl_context()
        if self.user:
            return NatsUserPassword(self.user, self.password, ssl_context=context)
        if self.token:
            return NatsToken(self.token, ssl_context=context)
        if self.creds:
            self._need_nkeys("creds")
            return NatsCredentials.from_file(self.creds, ssl_context=context)
        if self.nkey_seed:
            self._need_nkeys("nkey_seed")
            return NatsNKey.from_file(self.nkey_seed, ssl_context=context)
        if context is not None:
            return NatsSecurity(ssl_context=context)
        return None

    def faststream_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        security = self.faststream_security()
        if security is not None:
            options["security"] = security
        if self.user and is_role_user(self.user):
            options["inbox_prefix"] = inbox_prefix(self.user)
        return options
