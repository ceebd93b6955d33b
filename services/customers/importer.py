"""``relaydesk customers import FILE``: customers (identities, tier, flags, preferred language,
CRM id) from a CSV or JSON Lines file.

Every line is checked and imported on its own: a bad line is reported with its number and the
reason, and the others go on. Re-running the same file changes nothing: a line's identities
find the customer they already belong to, missing ones are linked, and the profile is written
only when it differs. A line whose identities belong to two different customers is refused
(merge them first): the importer never merges on its own. Lines naming one customer are
imported in file order, and one giving it another value than an earlier line gave is refused
(else each run would write both again).

CSV: a header row; columns ``identity`` or ``identities`` (several separated by ``;``, e.g.
``sms:+15551234567;email:ann@example.com``), ``tier``, ``flags`` (``;``-separated),
``preferred_language``, ``crm_id``. JSON Lines: one object per line with the same keys
(``identities`` and ``flags`` may be lists). An empty cell or a missing key leaves that part
of the profile as it is. Other columns (``name``...) are ignored and listed once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from events.skips import count_skip
from services.customers.facts import Profile
from services.customers.import_rows import (
    LineError,
    Row,
    RowError,
    detect_format,
    parse_row,
    read_records,
    read_text,
)
from services.customers.service import CustomerError, Customers
from services.identity import new_customer_id
from services.identity.addresses import mask

log = structlog.get_logger(__name__)

Outcome = Literal["created", "updated", "unchanged"]


@dataclass
class ImportReport:
    lines: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[LineError] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False

    def count(self, outcome: Outcome) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def summary(self) -> str:
        would = "would be " if self.dry_run else ""
        return (
            f"{self.lines} lines: {self.created} {would}created, {self.updated} {would}updated, "
            f"{self.unchanged} unchanged, {len(self.errors)} failed"
        )


@dataclass
class Importer:
    customers: Customers
    dry_run: bool = False
    actor: str = "import"
    # A dry run writes nothing, so it remembers what earlier lines would have written: the
    # identities they would have given out, and the profiles of customers they would create.
    planned: dict[str, str] = field(default_factory=dict)
    planned_profiles: dict[str, Profile] = field(default_factory=dict)
    # customer → profile field → (the line that gave it, its value): a later line of the file
    # giving the same customer another value is refused (``_agrees``).
    given: dict[str, dict[str, tuple[int, Any]]] = field(default_factory=dict)

    async def owner(self, identity: str) -> str | None:
        """The customer ``identity`` stands for now (after merges: the survivor), if any."""
        owner = self.planned.get(identity) or await self.customers.directory.lookup(identity)
        if owner is None or owner in self.planned_profiles:
            return owner
        return await self.customers.survivor(owner)

    def _agrees(self, customer_id: str, row: Row) -> None:
        """Refuse a line that gives a customer another tier (flags, language, CRM id) than an
        earlier line of the file gave it. Found by a merges audit: two lines naming one customer
        (the same address twice, or the addresses of two merged customers) were applied in turn,
        so each run of the same file wrote both again, and a re-run was never a no-op."""
        earlier = self.given.get(customer_id, {})
        for key, value in row.profile.items():
            line, before = earlier.get(key, (row.line, value))
            if before != value and line != row.line:
                shown = ";".join(before) if isinstance(before, tuple) else before
                raise RowError(
                    f"line {line} gave this customer {key} {shown!r} already: one line per customer"
                    f" ({', '.join(mask(i) for i in row.identities)}); put what both lines say on one"
                )

    def _gave(self, customer_id: str, row: Row) -> None:
        """Remember what an imported line gave its customer."""
        earlier = self.given.setdefault(customer_id, {})
        for key, value in row.profile.items():
            earlier.setdefault(key, (row.line, value))

    async def import_row(self, row: Row) -> Outcome:
        directory = self.customers.directory
        owners: dict[str, str] = {}
        for identity in row.identities:
            owner = await self.owner(identity)
            if owner is not None:
                owners[identity] = owner
        distinct = sorted(set(owners.values()))
        if len(distinct) > 1:
            found = ", ".join(f"{mask(i)} belongs to {c}" for i, c in owners.items())
            raise RowError(f"identities of different customers: {found}; merge those customers first")
        if self.dry_run:
            customer_id = distinct[0] if distinct else f"(new, line {row.line})"
            self._agrees(customer_id, row)
            outcome = await self._dry_run(row, distinct[0] if distinct else None)
            self._gave(customer_id, row)
            return outcome
        created = False
        if distinct:
            customer_id = distinct[0]
        else:
            candidate = new_customer_id()
            customer_id = await directory.claim(row.identities[0], candidate)
            if customer_id != candidate:  # someone (intake, another import) was quicker
                customer_id = await self.customers.survivor(customer_id)
        self._agrees(customer_id, row)
        facts = await self.customers.facts(customer_id)
        if not facts.created:
            first = next((i for i in row.identities if owners.get(i, customer_id) == customer_id), row.identities[0])
            created = await self.customers.create(customer_id, first, self.actor)
        changed = False
        known = set(await self.customers.identities(customer_id))
        for identity in row.identities:
            if identity in known:
                continue
            try:
                result = await self.customers.link(customer_id, identity, self.actor)
            except CustomerError as err:
                raise RowError(f"{mask(identity)}: {err.reason}") from err
            changed = changed or bool(result["linked"])
        if row.profile:
            changed = await self._set_profile(customer_id, row) or changed
        self._gave(customer_id, row)
        return "created" if created else "updated" if changed else "unchanged"

    async def _set_profile(self, customer_id: str, row: Row) -> bool:
        """The line's profile over the current one, written only if that changes it; another
        writer in between (a concurrent line, an operator) means read again and retry."""
        for attempt in range(5):
            facts = await self.customers.facts(customer_id)
            desired = dataclasses.replace(facts.profile, **row.profile)
            try:
                return await self.customers.set_profile(customer_id, desired, self.actor, only_if_changed=True)
            except CustomerError as err:
                if err.status != 409 or attempt == 4:
                    raise RowError(err.reason) from err
        return False

    async def _dry_run(self, row: Row, customer_id: str | None) -> Outcome:
        if customer_id is None:
            customer_id = f"(new, line {row.line})"
            self.planned.update(dict.fromkeys(row.identities, customer_id))
            self.planned_profiles[customer_id] = dataclasses.replace(Profile(), **row.profile)
            return "created"
        if customer_id in self.planned_profiles:
            known = {i for i, c in self.planned.items() if c == customer_id}
            current = self.planned_profiles[customer_id]
        else:
            facts = await self.customers.facts(customer_id)
            if not facts.created:
                return "created"
            known = set(await self.customers.identities(customer_id))
            current = self.planned_profiles.get(customer_id, facts.profile)
        desired = dataclasses.replace(current, **row.profile)
        new = [i for i in row.identities if i not in known]
        self.planned.update(dict.fromkeys(new, customer_id))
        if new or desired != current:
            self.planned_profiles[customer_id] = desired
            return "updated"
        return "unchanged"


async def import_file(
    path: Path,
    customers: Customers,
    *,
    dry_run: bool = False,
    fmt: Literal["csv", "jsonl"] | None = None,
    progress: Any = None,
    on_error: Any = None,
    concurrency: int = 8,
) -> ImportReport:
    """Import every line of ``path``. ``progress``: a ``rich.progress.Progress`` to advance;
    ``on_error(LineError)``: called as each bad line is met (the report has them all, in
    line order). Lines that share an identity are imported one after the other in file
    order; unrelated lines run ``concurrency`` at a time."""
    text = read_text(path)
    report = ImportReport(dry_run=dry_run)
    records = list(read_records(text, fmt or detect_format(path, text), report.ignored_columns))
    task = progress.add_task("import customers", total=len(records)) if progress is not None else None
    importer = Importer(customers, dry_run=dry_run)

    def failed(number: int, reason: str) -> None:
        error = LineError(number, reason)
        report.errors.append(error)
        if on_error is not None:
            on_error(error)
        if progress is not None:
            progress.advance(task)

    rows: list[Row] = []
    for number, record in records:
        report.lines += 1
        try:
            if isinstance(record, LineError):
                raise RowError(record.reason)
            rows.append(parse_row(number, record, customers))
        except RowError as err:
            failed(number, str(err))

    async def one(row: Row) -> None:
        try:
            report.count(await importer.import_row(row))
        except (RowError, CustomerError) as err:
            failed(row.line, str(err))
            return
        except Exception as err:  # NATS trouble on this line: say so, go on with the next
            failed(row.line, f"not imported: {err!r}")
            return
        if progress is not None:
            progress.advance(task)

    gate = asyncio.Semaphore(max(1, concurrency))

    async def lane(members: list[Row]) -> None:
        async with gate:
            for row in members:
                await one(row)

    # Lines naming one customer through different addresses (two customers merged since) go in
    # one lane too, so the earlier line is the one that stands (``Importer._agrees``).
    owners: dict[str, str] = {}

    async def look_up(identity: str) -> None:
        async with gate:
            try:
                owner = await importer.owner(identity)
            except Exception as err:  # the line looks it up again when imported, and says if that fails
                log.warning("customers.import_lookup_failed", identity=mask(identity), error=repr(err))
                count_skip("customers.import_lookup")
                return
            if owner is not None:
                owners[identity] = owner

    await asyncio.gather(*(look_up(i) for i in dict.fromkeys(i for row in rows for i in row.identities)))
    await asyncio.gather(*(lane(members) for members in lanes(rows, owners)))
    report.errors.sort(key=lambda e: e.line)
    return report


def lanes(rows: list[Row], owners: Mapping[str, str] | None = None) -> list[list[Row]]:
    """Rows grouped so that rows sharing an identity, or naming addresses of one customer
    (``owners``: identity → customer), directly or through other rows, are in one group, in
    file order: each group is imported in order, groups side by side."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_row: dict[str, int] = {}
    for i, row in enumerate(rows):
        for identity in row.identities:
            for key in (identity, "customer " + owners[identity] if owners and identity in owners else None):
                if key is not None:
                    j = first_row.setdefault(key, i)
                    parent[find(i)] = find(j)
    groups: dict[int, list[Row]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(find(i), []).append(row)
    return list(groups.values())
