"""``relaydesk customers import``: bad lines reported by number, the rest imported, and a
second run imports nothing new (over a real nats-server)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import nats
import pytest

from events import subjects
from events.model import CustomerCreated, CustomerProfileUpdated, IdentityLinked
from events.store import EventStore
from events.streams import ensure_streams
from services import logs
from services.bootstrap import event_store
from services.cli import main
from services.customers.import_rows import FileError
from services.customers.importer import import_file
from services.customers.service import Customers
from services.identity import IdentityDirectory

pytestmark = pytest.mark.integration


def phone(uid: str, n: int) -> str:
    return f"+1555{(int(uid[:6], 16) * 10 + n) % 10_000_000:07d}"


def customer_file(tmp_path: Path, uid: str) -> Path:
    rows = [
        "identities,tier,flags,preferred_language,crm_id,name",
        f"sms:{phone(uid, 1)};email:ann-{uid}@Example.com,gold,,es,CRM-{uid}-1,Ann",  # line 2
        f"sms:{phone(uid, 2)},platinum,media_attention,,CRM-{uid}-2,Bo",  # line 3
        "sms:12,gold,,,,Bad phone",  # line 4
        f"email:cy-{uid}@example.com,diamond,,,,Unknown tier",  # line 5
        "",  # a blank line is skipped, not an error
        f"email:dee-{uid}@example.com,standard,vip,,,Unknown flag",  # line 7
        f"whatsapp:{phone(uid, 1)},gold,,es,CRM-{uid}-1,Ann again (same phone: the same customer)",  # line 8
        f"sms:{phone(uid, 2)};email:ann-{uid}@example.com,,,,,Two customers' identities",  # line 9
        ",gold,,,,No identity",  # line 10
        f'"chat:visitor-{uid}",standard,"regulatory_risk;executive_escalation",fr-CA,,Quoted',  # line 11
    ]
    path = tmp_path / "customers.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def run_cli(*args: str) -> int:
    return main(["customers", *args, "--log-level", "warning"])


async def customer_events(url: str, identity: str) -> tuple[str | None, list[object]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        directory = IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET))
        customer_id = await directory.lookup(identity)
        if customer_id is None:
            return None, []
        # Opened like the services read it (events.personal seals crm_id on the log).
        return customer_id, [s.event for s in await event_store(nc).read_customer(customer_id)]
    finally:
        await nc.close()


async def prepare(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await ensure_streams(nc.jetstream())
    finally:
        await nc.close()


def test_import_reports_bad_lines_by_number_imports_the_rest_and_a_rerun_imports_nothing(
    nats_url: str, tmp_path: Path, uid: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI configures logging onto sys.stderr, which capsys closes after the test: keep
    # the session's logging as it is.
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    asyncio.run(prepare(nats_url))
    path = customer_file(tmp_path, uid)

    assert run_cli("import", str(path), "--nats-url", nats_url, "--dry-run") == 1
    dry = capsys.readouterr().err
    assert "dry run, nothing written: 9 lines: 3 would be created, 0 would be updated, 1 unchanged, 5 failed" in dry
    assert asyncio.run(customer_events(nats_url, f"phone:{phone(uid, 1)}")) == (None, [])

    assert run_cli("import", str(path), "--nats-url", nats_url) == 1
    err = capsys.readouterr().err
    assert "9 lines: 3 created, 0 updated, 1 unchanged, 5 failed" in err, err
    for line, reason in [
        (4, "identity 1 (sms:…): not a possible phone number"),
        (5, "unknown tier 'diamond'"),
        (7, "unknown flags vip"),
        (9, "identities of different customers"),
        (10, "no identity"),
    ]:
        assert f"line {line}: {reason}" in err, (line, err)
    assert "5 lines failed: 4, 5, 7, 9, 10" in err
    assert "ignored columns: name" in err
    # Addresses are not printed in clear in the report.
    assert f"ann-{uid}" not in err and phone(uid, 2) not in err

    ann, events = asyncio.run(customer_events(nats_url, f"phone:{phone(uid, 1)}"))
    assert ann is not None
    assert [type(e) for e in events] == [CustomerCreated, IdentityLinked, CustomerProfileUpdated]
    profile = events[-1]
    assert isinstance(profile, CustomerProfileUpdated)
    assert (profile.tier, profile.preferred_language, profile.crm_id) == ("gold", "es", f"CRM-{uid}-1")
    assert asyncio.run(customer_events(nats_url, f"email:ann-{uid}@example.com"))[0] == ann
    _, chat = asyncio.run(customer_events(nats_url, f"chat:visitor-{uid}"))
    flags = [e.flags for e in chat if isinstance(e, CustomerProfileUpdated)]
    assert flags == [("executive_escalation", "regulatory_risk")]

    # Again: the same customers, nothing written.
    assert run_cli("import", str(path), "--nats-url", nats_url) == 1
    again = capsys.readouterr().err
    assert "9 lines: 0 created, 0 updated, 4 unchanged, 5 failed" in again, again
    assert asyncio.run(customer_events(nats_url, f"phone:{phone(uid, 1)}")) == (ann, events)


async def test_json_lines_and_a_changed_profile(nats_url: str, nc: nats.NATS, uid: str, tmp_path: Path) -> None:
    js = nc.jetstream()
    customers = Customers(EventStore(nc, js), IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET)))
    path = tmp_path / "customers.jsonl"
    lines = [
        {"identities": [f"sms:{phone(uid, 5)}", f"email:eve-{uid}@example.com"], "tier": "gold"},
        "not json",
        {"identity": f"email:eve-{uid}@example.com", "crm_id": f"CRM-{uid}-5"},
        ["not", "an", "object"],
    ]
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    report = await import_file(path, customers)
    assert (report.lines, report.created, report.updated, report.unchanged) == (4, 1, 1, 0)
    assert [(e.line, e.reason.split(":")[0]) for e in report.errors] == [
        (2, "not valid JSON"),
        (4, "not a JSON object"),
    ]
    customer_id = await customers.directory.lookup(f"phone:{phone(uid, 5)}")
    assert customer_id is not None
    facts = await customers.facts(customer_id)
    assert (facts.profile.tier, facts.profile.crm_id) == ("gold", f"CRM-{uid}-5")  # the tier stays
    report = await import_file(path, customers)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 2)


async def test_a_file_without_an_identity_column_is_refused_as_a_whole(nc: nats.NATS, tmp_path: Path) -> None:
    js = nc.jetstream()
    customers = Customers(EventStore(nc, js), IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET)))
    path = tmp_path / "customers.csv"
    path.write_text("phone,tier\n+15551234567,gold\n")
    with pytest.raises(FileError, match="no identity or identities column"):
        await import_file(path, customers)


async def test_an_import_keeps_the_name_the_team_gave_the_customer(nc: nats.NATS, uid: str, tmp_path: Path) -> None:
    # The file has no name column: the name set through the API (PATCH) must survive the import.
    js = nc.jetstream()
    customers = Customers(EventStore(nc, js), IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET)))
    path = tmp_path / "customers.jsonl"
    path.write_text(json.dumps({"identity": f"sms:{phone(uid, 6)}", "tier": "gold"}) + "\n")
    await import_file(path, customers)
    customer_id = await customers.directory.lookup(f"phone:{phone(uid, 6)}")
    assert customer_id is not None
    facts = await customers.facts(customer_id)
    await customers.set_profile(customer_id, dataclasses.replace(facts.profile, name="Eve Adams"), "operator")
    path.write_text(json.dumps({"identity": f"sms:{phone(uid, 6)}", "tier": "platinum"}) + "\n")
    report = await import_file(path, customers)
    assert report.updated == 1
    facts = await customers.facts(customer_id)
    assert (facts.profile.tier, facts.profile.name) == ("platinum", "Eve Adams")


def test_text_from_the_file_or_the_command_line_is_printed_as_it_is(
    nats_url: str, tmp_path: Path, uid: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cell, a column name or an id that looks like rich markup (``[/b]``) is shown as it is:
    it ended the import in a MarkupError traceback at the first bad line (the lines after it
    never imported), and ``customers erase '[/b]'`` or ``link … email:[/b]@x.org`` the same way."""
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    asyncio.run(prepare(nats_url))
    path = tmp_path / "markup.csv"
    path.write_text(f"identity,tier,[/note]\nsms:{phone(uid, 3)},[/b],x\nsms:{phone(uid, 4)},gold,y\n")

    assert run_cli("import", str(path), "--nats-url", nats_url) == 1
    err = capsys.readouterr().err
    assert "line 2: unknown tier '[/b]'" in err, err
    assert "ignored columns: [/note]" in err
    assert "2 lines: 1 created, 0 updated, 0 unchanged, 1 failed" in err, err

    with pytest.raises(SystemExit) as refused:  # refused as it is parsed (services/cli_args.py)
        run_cli("erase", "[/b]", "--reason", "ticket 1", "--yes", "--nats-url", nats_url)
    assert refused.value.code == 2 and "not a customer id: '[/b]'" in capsys.readouterr().err
    customer_id, _ = asyncio.run(customer_events(nats_url, f"phone:{phone(uid, 4)}"))
    assert customer_id is not None
    assert run_cli("link", customer_id, f"email:[/b]{uid}@example.org", "--nats-url", nats_url) == 0
    assert f"email:[/b]{uid}@example.org: linked to {customer_id}" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_concurrency_below_one_is_refused(value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--concurrency 0`` and ``-3`` were taken (and quietly run one line at a time)."""
    path = tmp_path / "customers.csv"  # there: a missing FILE is refused first (services/cli_args.py)
    path.write_text("identity\n")
    with pytest.raises(SystemExit) as stopped:
        run_cli("import", str(path), "--concurrency", value, "--nats-url", "nats://127.0.0.1:1")
    assert stopped.value.code == 2
    assert "argument --concurrency: must be" in capsys.readouterr().err


def test_an_import_off_a_terminal_says_how_far_it_is(
    nats_url: str, tmp_path: Path, uid: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an ops audit: off a terminal (a Kubernetes Job) an import showed nothing until
    its summary; a million lines ran an hour in silence. Now a line every few seconds."""
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    monkeypatch.setattr("services.progress.PROGRESS_LINE_SECONDS", 0.001)
    asyncio.run(prepare(nats_url))
    path = tmp_path / "many.csv"
    path.write_text("identities\n" + "".join(f"email:many-{uid}-{n}@example.com\n" for n in range(200)))
    assert run_cli("import", str(path), "--nats-url", nats_url) == 0
    err = capsys.readouterr().err
    progress = [line for line in err.splitlines() if "import customers" in line and "of 200 lines" in line]
    progress += [line for line in err.splitlines() if '"customers.import_progress"' in line]
    assert progress, err
    assert "200 lines: 200 created" in err
