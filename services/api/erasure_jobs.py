"""Erasures left unfinished are finished by the API (``services.customers.erase_job``).

An erasure (``DELETE /v1/customers/{id}`` or ``relaydesk customers erase``) records itself
before its first step and removes the record after its last. A record still there means the
process running it died (or its caller went away) part way: the API runs that erasure again at
its start and every ``RESUME_EVERY_S`` after, with the reason and actor it was asked with.
Running an erasure again is safe (what is gone stays gone, ``CustomerErased`` is written once),
also while the first run is still going.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from aiohttp import web

from events.personal import CustomerKeys
from events.skips import count_skip
from events.stopping import cancel_and_wait
from services.api.common import ApiDeps
from services.customers.erase import Eraser
from services.customers.erase_job import JOB_PREFIX, ErasureJobs
from services.customers.erase_report import ErasureTargets
from services.customers.service import CustomerError, Customers

log = structlog.get_logger(__name__)

RESUME_EVERY_S = 3600.0
# A record younger than this may belong to an erasure running now in another process: the
# periodic pass leaves it (running it twice at once is safe, only wasteful); the pass at start
# takes every record.
RUNNING_GRACE = timedelta(minutes=15)
RESUME_TASK = web.AppKey("erasure_resume", asyncio.Task[None])


async def resume_erasures(
    customers: Customers, keys: CustomerKeys, targets: ErasureTargets, *, grace: timedelta | None = None
) -> int:
    """Run again every recorded erasure (older than ``grace``, if given). Returns how many
    finished now; one that fails is logged, counted and left for the next pass."""
    jobs = ErasureJobs(customers.directory, keys)
    finished = 0
    async for job in jobs.pending(customers.store.js):
        if grace is not None and customers.clock() - job.started_at < grace:
            continue
        bound = log.bind(customer_id=job.customer_id, started_at=job.started_at.isoformat())
        try:
            await Eraser(customers, keys, targets).erase(job.requested, job.reason, job.actor)
        except CustomerError as err:
            bound.warning("customers.erasure_resume_refused", status=err.status, why=err.reason)
            count_skip("api.erasure_resume")
            continue
        except Exception as err:  # NATS away: the next pass tries again
            bound.warning("customers.erasure_resume_failed", error=type(err).__name__)
            count_skip("api.erasure_resume")
            continue
        bound.info("customers.erasure_resumed_finished")
        finished += 1
    return finished


def install(app: web.Application, deps: ApiDeps) -> None:
    """Finish recorded erasures at start, then every ``RESUME_EVERY_S`` while the app runs."""
    customers = Customers(deps.store, deps.directory, deps.policy, deps.clock, appended=deps.shows)
    cipher = deps.store.cipher
    keys = cipher.keys if cipher is not None else CustomerKeys(deps.store.js)
    targets = ErasureTargets.from_connectors(deps.connectors)

    async def run() -> None:
        grace: timedelta | None = None
        while True:
            try:
                await resume_erasures(customers, keys, targets, grace=grace)
            except Exception as err:  # NATS away: the next pass tries again
                log.warning(
                    "customers.erasure_resume_failed",
                    error=type(err).__name__,
                    skipped=f"this pass over the recorded erasures ({JOB_PREFIX}* in rd_identity); the next in an hour",
                )
                count_skip("api.erasure_resume")
            grace = RUNNING_GRACE
            await asyncio.sleep(RESUME_EVERY_S)

    async def start(app: web.Application) -> None:
        app[RESUME_TASK] = asyncio.create_task(run(), name="erasure-resume")

    async def stop(app: web.Application) -> None:
        await cancel_and_wait(app.get(RESUME_TASK))

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
