"""An import whose lines name one customer twice, and a CSV with a quote left open, over a real
nats-server. Found by a merges audit: two lines giving one customer different values were
applied in turn, so every run of the same file wrote both again (a re-run was never a no-op);
a quote left open swallowed the lines after it, which were neither imported nor reported."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from events import subjects
from events.model import CustomerProfileUpdated
from events.store import EventStore
from services.customers.importer import ImportReport, import_file
from services.customers.service import Customers
from services.identity import IdentityDirectory

pytestmark = pytest.mark.integration


async def customers_of(nc: nats.NATS) -> Customers:
    js = nc.jetstream()
    return Customers(EventStore(nc, js), IdentityDirectory(await js.key_value(subjects.IDENTITY_BUCKET)))


async def profiles(customers: Customers, identity: str) -> list[CustomerProfileUpdated]:
    owner = await customers.directory.lookup(identity)
    assert owner is not None
    events = await customers.store.read(subjects.customer_scope(await customers.survivor(owner)))
    return [s.event for s in events if isinstance(s.event, CustomerProfileUpdated)]


def outcome(report: ImportReport) -> tuple[int, int, int, list[int]]:
    return report.created, report.updated, report.unchanged, [e.line for e in report.errors]


async def test_two_lines_giving_one_customer_different_values_the_first_stands_and_a_rerun_writes_nothing(
    nc: nats.NATS, uid: str, tmp_path: Path
) -> None:
    customers = await customers_of(nc)
    # Two customers an operator merged: a CRM export has a line for each of their addresses.
    ann = f"email:ann-{uid}@example.com"
    ann_other = f"email:ann-other-{uid}@example.com"
    survivor, _ = await customers.directory.resolve(ann)
    await customers.create(survivor, ann)
    other, _ = await customers.directory.resolve(ann_other)
    await customers.create(other, ann_other)
    await customers.merge(survivor, other, "operator")

    path = tmp_path / "customers.csv"
    path.write_text(
        "identities,tier,crm_id\n"
        f"chat:bo-{uid},platinum,\n"  # 2
        f"chat:bo-{uid},gold,\n"  # 3: the same address, another tier
        f"chat:bo-{uid},,CRM-BO\n"  # 4: the same address, a field line 2 left alone
        f"{ann},,CRM-{uid}-1\n"  # 5
        f"{ann_other},,CRM-{uid}-2\n"  # 6: the merged customer's address: the same person
        f"chat:bo-{uid},platinum,CRM-BO\n"  # 7: says again what lines 2 and 4 said
    )
    first = await import_file(path, customers, concurrency=4)
    assert outcome(first) == (1, 2, 1, [3, 6]), first
    reasons = {e.line: e.reason for e in first.errors}
    assert reasons[3].startswith("line 2 gave this customer tier 'platinum' already: one line per customer")
    assert reasons[6].startswith(f"line 5 gave this customer crm_id 'CRM-{uid}-1' already")
    assert uid not in reasons[6].replace(f"CRM-{uid}-1", "")  # addresses masked
    bo = await profiles(customers, f"chat:bo-{uid}")
    assert (bo[-1].tier, bo[-1].crm_id) == ("platinum", "CRM-BO")
    assert [p.crm_id for p in await profiles(customers, ann)] == [f"CRM-{uid}-1"]

    for _ in range(2):  # the same file again: nothing written
        again = await import_file(path, customers, concurrency=4)
        assert outcome(again) == (0, 0, 4, [3, 6]), again
        assert await profiles(customers, f"chat:bo-{uid}") == bo
        assert [p.crm_id for p in await profiles(customers, ann)] == [f"CRM-{uid}-1"]

    dry = await import_file(path, customers, dry_run=True)
    assert outcome(dry) == (0, 0, 4, [3, 6]), dry


async def test_a_quote_left_open_is_reported_on_its_line_with_the_lines_it_swallowed(
    nc: nats.NATS, uid: str, tmp_path: Path
) -> None:
    customers = await customers_of(nc)
    path = tmp_path / "customers.csv"
    path.write_text(
        "identities,tier,name\n"
        f'chat:a-{uid},gold,"Ann\nSmith"\n'  # 2-3: a name on two lines, quoted: fine
        "\n"  # 4
        f'"chat:b-{uid},gold\n'  # 5: the quote is never closed
        f"chat:c-{uid},gold\n"  # 6
        f"chat:d-{uid},platinum\n"  # 7
    )
    report = await import_file(path, customers)
    assert (report.lines, report.created) == (2, 1), report
    assert [(e.line, e.reason) for e in report.errors] == [
        (
            5,
            "a quote opened on line 5 runs to line 7: lines 5-7 were read as one line and none of them imported;"
            " close the quote and import again",
        )
    ]
    assert await customers.directory.lookup(f"chat:c-{uid}") is None
