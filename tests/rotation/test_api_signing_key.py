"""Rotating the API signing key ends nothing while the old key is listed in ``[api]
extra_signing_keys``: agent and supervisor tokens issued before, console sessions, kept
idempotency answers and signed file links all still check with it, and only the new key
signs. With the old key taken out they are refused, as before."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from connectors.sdk.signatures import secret_list
from events.model import AgentTokenIssued
from events.store import StoredEvent
from services import config
from services.api import idempotency, session, uploads
from services.api.attachments import Links
from services.api.idempotency import Sealer
from services.api.session import SessionSealer
from services.api.tokens import TokenTable, accepted_keys, hash_token, new_token, token_proof
from tests.rotation.counting_aesgcm import CountingAESGCM

OLD, NEW = "old-signing-key-0123456789abcdef0123", "new-signing-key-fedcba9876543210fedc"


def deps(signing_key: str, *extra: str) -> Any:
    return SimpleNamespace(
        signing_key=signing_key, extra_signing_keys=extra, token="operator", public_url="https://api.example"
    )


def test_the_keys_come_from_the_configuration_and_its_secret_files(tmp_path: Path) -> None:
    (tmp_path / "old").write_text(OLD + "\n")
    env = {"RELAYDESK_API_SIGNING_KEY": NEW, "RELAYDESK_API_EXTRA_SIGNING_KEYS_FILE": str(tmp_path / "old")}
    cfg = config.load(env=env)
    assert cfg.api.signing_key == NEW
    assert [key.decode() for key in accepted_keys(deps(NEW, *secret_list(cfg.api.extra_signing_keys)))] == [NEW, OLD]


def test_agent_tokens_signed_with_the_old_key_hold_while_it_is_listed() -> None:
    token = new_token()
    proof = token_proof(OLD.encode(), "ava", "tk_1", hash_token(token), "supervisor")
    event = AgentTokenIssued(
        at=datetime.now(UTC),
        agent_id="ava",
        token_id="tk_1",
        token_hash=hash_token(token),
        proof=proof,
        role="supervisor",
    )
    rotated = TokenTable(*accepted_keys(deps(NEW, OLD)))
    rotated.apply(StoredEvent(1, "rd.evt.a.ava", event))
    record = rotated.record_for(token)
    assert record is not None and record.role == "supervisor"
    assert rotated.proof("ava", "tk_2", "h") == token_proof(NEW.encode(), "ava", "tk_2", "h")  # signs with the new
    dropped = TokenTable(*accepted_keys(deps(NEW)))
    dropped.apply(StoredEvent(1, "rd.evt.a.ava", event))
    assert dropped.record_for(token) is None and dropped.refused == 1


def test_console_sessions_idempotency_records_and_links_of_the_old_key_hold() -> None:
    old, rotated, dropped = accepted_keys(deps(OLD)), accepted_keys(deps(NEW, OLD)), accepted_keys(deps(NEW))

    cookie, _ = SessionSealer(*old).seal("rdat_x")
    opened = SessionSealer(*rotated).open(cookie)
    assert opened is not None and opened.token == "rdat_x"
    assert SessionSealer(*dropped).open(cookie) is None
    assert SessionSealer(*old).open(SessionSealer(*rotated).seal("rdat_y")[0]) is None  # sealed with the new

    record = Sealer(*old).seal("k", b"answer")
    assert Sealer(*rotated).open("k", record) == b"answer"
    assert Sealer(*dropped).open("k", record) is None

    link = Links(*old).token("cu_1", 7, "m_1", 0, "operator")
    assert not isinstance(Links(*rotated).check(link), str)
    assert isinstance(Links(*dropped).check(link), str)

    url = uploads.link(deps(OLD), "up_" + "a" * 32, 600, now=time.time())
    signed = url.rsplit("/", 1)[1]
    assert uploads._claims(deps(NEW, OLD), signed) == "up_" + "a" * 32
    assert uploads._claims(deps(NEW), signed) is None


def test_an_empty_extra_key_never_verifies() -> None:
    """Each of these took an empty extra key given to it directly: whatever anyone signed or
    sealed with the empty key (no secret at all) was taken. ``accepted_keys`` drops empty
    entries, but the rule now holds wherever the keys come from."""
    new, empty = NEW.encode(), b""
    token = new_token()
    event = AgentTokenIssued(
        at=datetime.now(UTC),
        agent_id="ava",
        token_id="tk_1",
        token_hash=hash_token(token),
        proof=token_proof(empty, "ava", "tk_1", hash_token(token)),
    )
    table = TokenTable(new, empty)
    table.apply(StoredEvent(1, "rd.evt.a.ava", event))
    assert table.record_for(token) is None and table.refused == 1

    assert SessionSealer(new, empty).open(SessionSealer(empty).seal("rdat_x")[0]) is None
    assert Sealer(new, empty).open("k", Sealer(empty).seal("k", b"answer")) is None
    assert isinstance(Links(new, empty).check(Links(empty).token("cu_1", 7, "m_1", 0, "operator")), str)


def test_sessions_and_idempotency_records_try_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """They stopped at the first key that opened: a cookie or record sealed with the signing
    key took one decryption, one sealed with an old key two, so the time told which key."""
    monkeypatch.setattr(session, "AESGCM", CountingAESGCM)
    monkeypatch.setattr(idempotency, "AESGCM", CountingAESGCM)
    rotated = accepted_keys(deps(NEW, OLD))

    cookie, _ = SessionSealer(*rotated).seal("rdat_x")
    CountingAESGCM.decrypted = 0
    opened = SessionSealer(*rotated).open(cookie)
    assert opened is not None and opened.token == "rdat_x"
    assert CountingAESGCM.decrypted == 2

    record = Sealer(*rotated).seal("k", b"")
    CountingAESGCM.decrypted = 0
    assert Sealer(*rotated).open("k", record) == b""  # an empty answer is an answer
    assert CountingAESGCM.decrypted == 2
