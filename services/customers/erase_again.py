"""``relaydesk customers erase-again [--dry-run]``: after NATS was restored from a backup taken
before some erasures, erase those customers again (GDPR practice: erasures done since a backup
are applied again after restoring it, from a register kept outside it).

The register is the timelines store's (``services.erasures_undone``): every ``CustomerErased``
the projector folded, kept through rebuilds. Each registered customer on the log whose
``CustomerErased`` is not there any more is erased again through the path every erasure takes
(``services.customers.erase``, with the reason it was first asked with), which records its job
before its first step: a run cut short anywhere is finished by the next run (or by the API's
resume, ``services.api.erasure_jobs``). A registered customer's erasure still recorded as under
way is finished too. Run when nothing is undone, it does nothing.

A customer merged into the erased one after the backup is not merged on the restored log: each
merged id the register names is erased too, unless the survivor's erasure took it. One line per
customer as it goes; ``--dry-run`` lists them and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from events.personal import CustomerKeys
from services.customers.erase import Eraser
from services.customers.erase_job import ErasureJobs
from services.customers.erase_report import ErasureTargets
from services.customers.service import CustomerError, Customers
from services.erasures_undone import undone_of
from services.timelines import TimelineStore
from services.timelines.rows import ErasureRecord

log = structlog.get_logger(__name__)

AGAIN_REASON = "erased again after NATS was restored from an older backup"


@dataclass
class AgainReport:
    found: int = 0  # erasures to apply again
    erased: int = 0
    refused: int = 0
    left_in_clear: int = 0  # events whose personal data is in clear on the log (no key erases them)


def _keys(customers: Customers) -> CustomerKeys:
    cipher = customers.store.cipher
    return cipher.keys if cipher is not None else CustomerKeys(customers.store.js)


async def to_apply(customers: Customers, register: list[ErasureRecord]) -> list[ErasureRecord]:
    """The registered erasures to run again: each undone, and each still recorded as under way
    (a run cut short after its ``CustomerErased``), by customer id."""
    js = customers.store.js
    todo = {r.customer_id: r for r in await undone_of(js, register)}
    registered = {r.customer_id: r for r in register}
    async for job in ErasureJobs(customers.directory, _keys(customers)).pending(js):
        if job.customer_id in registered:
            todo.setdefault(job.customer_id, registered[job.customer_id])
    return sorted(todo.values(), key=lambda r: r.customer_id)


def describe(record: ErasureRecord) -> str:
    merged = f" (with {', '.join(record.merged_ids)})" if record.merged_ids else ""
    when = record.at.strftime("%Y-%m-%d %H:%M UTC")
    return f"{record.customer_id}{merged}: erased {when}, event {record.seq}, reason {record.reason!r}"


async def erase_again(
    customers: Customers,
    register: list[ErasureRecord],
    targets: ErasureTargets,
    *,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
) -> AgainReport:
    """Erase again every erasure of ``register`` the log no longer holds (``to_apply``), one
    line per customer to ``say``."""
    todo = await to_apply(customers, register)
    report = AgainReport(found=len(todo))
    if not todo:
        say(f"nothing to erase again: the {len(register)} erasures in the register are all on the log")
        return report
    if dry_run:
        say(f"{len(todo)} erasures to apply again (dry run: nothing changed):")
        for record in todo:
            say(f"  {describe(record)}")
        return report
    eraser = Eraser(customers, _keys(customers), targets)
    for n, record in enumerate(todo, 1):
        where = f"[{n}/{len(todo)}] {record.customer_id}"
        reason = record.reason or AGAIN_REASON
        done: set[str] = set()
        try:
            for customer_id in (record.customer_id, *record.merged_ids):
                if customer_id in done or not (await customers.facts(customer_id)).exists:
                    continue  # taken by the survivor's erasure, or not on the restored log
                erased = await eraser.erase(customer_id, reason, "cli")
                done.update(erased.erased_ids)
                report.left_in_clear += erased.left_in_clear
        except CustomerError as err:
            report.refused += 1
            say(f"{where}: refused ({err.status}): {err.reason}")
            log.warning("customers.erase_again_refused", customer_id=record.customer_id, status=err.status)
            continue
        report.erased += 1
        say(f"{where}: erased again: {', '.join(sorted(done)) or 'nothing left on the log'}")
        log.info("customers.erased_again", customer_id=record.customer_id, customers=len(done))
    return report


async def read_register(target: str) -> list[ErasureRecord]:
    """The erasure register, read from the timelines store at ``target`` (read-only)."""
    from services.timelines import open_store

    timelines: TimelineStore = await open_store(target, readonly=True)
    try:
        return await timelines.erasures()
    finally:
        await timelines.close()
