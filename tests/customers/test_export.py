"""A subject access request (GDPR Art. 15): everything held about a person, their merged
customers included, as one JSON document, through the API (operator only) and the CLI. Over a
running system: the SMS come in through the connector and intake, so what the log holds is
sealed, and the export opens it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from services.bus.embedded import EmbeddedNats
from services.cli import main
from tests.agents.helpers import AgentSystem, agent_system, agents_config, eventually, ok

pytestmark = pytest.mark.integration

ANN, ANN_AGAIN = "+15557770001", "+15557770002"
# A terminal would obey the CSI (U+009B) and the right-to-left override if printed raw.
NOTE = "She sounded upset.\x9b2J\u202e"


async def customer(s: AgentSystem, phone: str) -> str:
    return await eventually(lambda: s.system.customer(phone), timeout=30)


def texts(export: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for event in export["events"]:
        if event.get("text"):
            out.setdefault(event["type"], []).append(event["text"])
    return out


async def test_an_export_holds_everything_of_the_person_and_changes_nothing(
    tmp_path: Path, clean_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with agent_system(agents_config(tmp_path, clean_nats.url), clean_nats) as s:
        assert await s.system.send_sms("SM" + "a" * 32, ANN, "My invoice is wrong, the parcel never came") == 200
        ann = await customer(s, ANN)
        ava, _ = await s.issue_token("ava")
        conv = await eventually(lambda: s.system.conversation_of(ann), timeout=30)
        await s.offered_to(conv["id"], "ava")
        await ok(s, "POST", f"/v1/conversations/{conv['id']}/accept", ava)
        await ok(s, "POST", f"/v1/conversations/{conv['id']}/reply", ava, {"text": "We are on it, Ann."})
        await ok(s, "POST", f"/v1/conversations/{conv['id']}/notes", ava, {"text": NOTE})
        # Her second number was a customer of its own until an operator merged it in.
        assert await s.system.send_sms("SM" + "b" * 32, ANN_AGAIN, "It is Ann again") == 200
        again = await customer(s, ANN_AGAIN)
        await ok(s, "POST", f"/v1/customers/{ann}/merge", body={"other": again})

        async def exported() -> dict[str, Any] | None:
            status, body = await s.call("GET", f"/v1/customers/{again}/export")  # the merged one: the same person
            assert status == 200, body
            found = texts(body)
            return body if "It is Ann again" in found.get("message_received", []) else None

        export = await eventually(exported, timeout=30)
        assert (export["customer_id"], sorted(export["customers"])) == (ann, sorted([ann, again]))
        assert {"phone:" + ANN, "phone:" + ANN_AGAIN} <= set(export["identities"])
        found = texts(export)
        assert found["message_received"] == ["My invoice is wrong, the parcel never came", "It is Ann again"]
        assert found["reply_requested"] == ["We are on it, Ann."]
        assert found["note_added"] == [NOTE]
        assert {"customer_created", "conversation_opened", "customers_merged"} <= {e["type"] for e in export["events"]}
        assert [e["seq"] for e in export["events"]] == sorted(e["seq"] for e in export["events"])

        # Only the operator; a bad or unknown id is said.
        status, body = await s.call("GET", f"/v1/customers/{ann}/export", ava)
        assert status == 403, body
        assert (await s.call("GET", "/v1/customers/cu-nobody/export"))[0] == 404
        assert (await s.call("GET", "/v1/customers/a%20b/export"))[0] == 400

        # The CLI writes the same, readable by its owner only: also over a file already there
        # that others could read (it kept its 0644), and never through a symlink planted there.
        out = tmp_path / "ann.json"
        out.write_text("an earlier export")
        out.chmod(0o644)
        elsewhere = tmp_path / "planted.json"
        elsewhere.write_text("")
        elsewhere.chmod(0o666)
        linked = tmp_path / "linked.json"
        linked.symlink_to(elsewhere)
        monkeypatch.setenv("RELAYDESK_NATS_URL", clean_nats.url)
        for path in (out, linked):
            code = await asyncio.to_thread(
                main, ["customers", "export", ann, "--out", str(path), "--log-level", "warning"]
            )
            assert code == 0
            assert os.lstat(path).st_mode & 0o777 == 0o600, oct(os.lstat(path).st_mode)
        assert elsewhere.read_text() == "" and not linked.is_symlink()
        assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []
        written = json.loads(out.read_text())
        assert texts(written) == texts(export) and written["customers"] == export["customers"]
        # The same data, with nothing a terminal obeys when it is printed (to stdout, or `cat`).
        raw = out.read_text()
        assert "\x9b" not in raw and "\u202e" not in raw and "\\u009b" in raw, raw
        assert await asyncio.to_thread(main, ["customers", "export", "cu-nobody", "--log-level", "warning"]) == 1
