"""``Idempotency-Key`` on API commands, over a real nats-server: a retried command does the
thing once and answers the first result; another body is 422; a duplicate of a command still
running is 409; a 5xx is not kept; the record is in KV, so it holds across API processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from nats.aio.client import Client as NATS

from events.model import OfferAccepted, ReplyRequested
from events.streams import IDEMPOTENCY_BUCKET
from services.api import idempotency, idempotency_records
from services.api.auth import Handler
from services.api.common import ACTOR, ApiDeps, ok
from services.bus.embedded import free_port

from .helpers import API_TOKEN, AgentSystem, eventually

pytestmark = pytest.mark.integration


async def call(
    s: AgentSystem, method: str, path: str, token: str, body: dict[str, Any], key: str | None
) -> tuple[int, Any, str | None]:
    """One command, retried (with the same key) while the API answers 409 "changed meanwhile"
    (a delivery outcome landed on the conversation): as a client would, and what a key is for."""
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    for _ in range(20):
        async with s.system.http.request(method, s.api + path, json=body, headers=headers) as r:
            answer = r.status, await r.json(), r.headers.get("Idempotent-Replayed")
        if answer[0] != 409 or "changed meanwhile" not in answer[1].get("error", ""):
            return answer
    return answer


async def test_a_retried_reply_is_requested_once_and_answers_the_first_result(s: AgentSystem) -> None:
    ava, _ = await s.issue_token("ava")
    customer, cid = await s.open()
    await eventually(lambda: s.conversation(cid, "offered"))

    # A retried accept answers the first accept (the offer is no longer open by then).
    first = await call(s, "POST", f"/v1/conversations/{cid}/accept", ava, {}, "accept-1")
    again = await call(s, "POST", f"/v1/conversations/{cid}/accept", ava, {}, "accept-1")
    assert first[0] == 200 and first[2] is None, first
    assert again == (first[0], first[1], "true")

    path = f"/v1/conversations/{cid}/reply"
    first = await call(s, "POST", path, ava, {"text": "Happy to help!"}, "reply-1")
    again = await call(s, "POST", path, ava, {"text": "Happy to help!"}, "reply-1")
    assert first[0] == 202, first
    assert again == (first[0], first[1], "true")
    # The same key with another body: refused with a reason, nothing done.
    other = await call(s, "POST", path, ava, {"text": "Something else"}, "reply-1")
    assert other[0] == 422 and "different request" in other[1]["error"], other
    # Keys are the caller's own: the operator's "reply-1" is another command.
    operator = await call(s, "POST", path, API_TOKEN, {"text": "From the operator"}, "reply-1")
    assert operator[0] == 202 and operator[2] is None, operator
    # Without a key, a retry is a second reply (the control: the log counts every one).
    for _ in range(2):
        status, body, _ = await call(s, "POST", path, ava, {"text": "No key"}, None)
        assert status == 202, body

    events = [e.event for e in await s.log(customer)]
    # (Texts are encrypted in the log: count by who asked.) Ava: one keyed, two unkeyed.
    actors = sorted(e.actor for e in events if isinstance(e, ReplyRequested))
    assert actors == ["agent:ava", "agent:ava", "agent:ava", "operator"]
    assert sum(isinstance(e, OfferAccepted) for e in events) == 1


async def test_a_4xx_is_kept_and_a_bad_key_is_refused(s: AgentSystem) -> None:
    path = "/v1/conversations/cv-none/resolve"
    first = await call(s, "POST", path, API_TOKEN, {}, "resolve-missing")
    assert first[0] == 404, first
    assert await call(s, "POST", path, API_TOKEN, {}, "resolve-missing") == (404, first[1], "true")
    status, body, _ = await call(s, "POST", path, API_TOKEN, {}, "x" * 300)
    assert status == 400 and "Idempotency-Key" in body["error"]


# --- the middleware alone, over the real KV bucket -------------------------------------------


class Probe:
    """A command handler that counts its runs, answers from a script, and can be held."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.runs = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.entered = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.runs += 1
        self.entered.set()
        await self.hold.wait()
        status = self.answers.pop(0) if self.answers else 200
        return ok({"run": self.runs}, status=status)


@contextlib.asynccontextmanager
async def serving(nc: Any, probe: Probe, signing_key: str = "test-signing-key") -> AsyncIterator[str]:
    """One "API process": a caller already authenticated as the operator, then the middleware."""

    @web.middleware
    async def as_operator(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[ACTOR] = "operator"
        return await handler(request)

    deps: ApiDeps = SimpleNamespace(nc=nc, signing_key=signing_key, token=API_TOKEN)  # type: ignore[assignment]
    app = web.Application(middlewares=[as_operator, idempotency.idempotency(deps)])
    app.router.add_post("/v1/things", probe.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1/things"
    finally:
        await runner.cleanup()


async def post(url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any, str | None]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body or {}, headers={"Idempotency-Key": key}) as r:
        return r.status, await r.json(), r.headers.get("Idempotent-Replayed")


async def test_a_duplicate_while_the_first_runs_is_409_then_the_first_result(nc: NATS) -> None:
    probe = Probe([201])
    key = uuid.uuid4().hex
    async with serving(nc, probe) as url:
        probe.hold.clear()
        first = asyncio.create_task(post(url, key))
        await asyncio.wait_for(probe.entered.wait(), 10)
        status, body, _ = await post(url, key)
        assert status == 409 and "still running" in body["error"], body
        probe.hold.set()
        assert await first == (201, {"run": 1}, None)
        assert await post(url, key) == (201, {"run": 1}, "true")
    assert probe.runs == 1


async def test_a_5xx_is_not_kept_and_a_record_holds_across_processes(nc: NATS) -> None:
    probe = Probe([503, 409, 200])
    key = uuid.uuid4().hex
    async with serving(nc, probe) as url:
        assert (await post(url, key))[0] == 503
        assert (await post(url, key))[0] == 409  # a conflict: nothing done, not kept either
        assert await post(url, key) == (200, {"run": 3}, None)  # the retry ran
    async with serving(nc, probe) as other_process:
        assert await post(other_process, key) == (200, {"run": 3}, "true")
        # JSON bodies compare by value: key order and spaces do not make another request.
        fresh = uuid.uuid4().hex
        assert (await post(other_process, fresh, {"a": 1, "b": 2}))[0] == 200
        assert (await post(other_process, fresh, {"b": 2, "a": 1}))[2] == "true"
    assert probe.runs == 4


async def test_a_record_left_running_by_a_dead_process_is_taken_over(nc: NATS) -> None:
    """An API process that died mid-command leaves its record "running": retries get 409
    until it is stale, then run."""
    kv = await nc.jetstream().key_value(IDEMPOTENCY_BUCKET)
    probe = Probe([])
    recent, stale = uuid.uuid4().hex, uuid.uuid4().hex
    for key, age in ((recent, 1.0), (stale, idempotency.STALE_AFTER + 1)):
        fingerprint = idempotency.fingerprint("", b"{}")
        left = idempotency.Record(state="running", fingerprint=fingerprint, started_at=time.time() - age)
        await kv.create(idempotency.record_key("operator", "POST", "/v1/things", key), msgspec.json.encode(left))
    async with serving(nc, probe) as url:
        assert (await post(url, recent))[0] == 409
        assert await post(url, stale) == (200, {"run": 1}, None)
        assert await post(url, stale) == (200, {"run": 1}, "true")
    assert probe.runs == 1


class LateWrite:
    """NATS as it restarts: the first record created is written, but its answer never comes
    (the client flushed the publish on reconnect, after the request had timed out)."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.lost = 0

    def jetstream(self) -> Any:
        return SimpleNamespace(key_value=self.key_value)

    async def key_value(self, bucket: str) -> Any:
        kv = await self.nc.jetstream().key_value(bucket)
        real_create = kv.create

        async def create(key: str, value: bytes) -> int:
            revision = await real_create(key, value)
            if not self.lost:
                self.lost += 1
                raise TimeoutError
            return int(revision)

        kv.create = create  # type: ignore[method-assign]
        return kv


async def test_a_record_written_after_its_claim_timed_out_does_not_hold_the_retry(nc: NATS) -> None:
    """Found by a chaos audit: NATS restarting, the claim's create timed out (503) but was
    written on reconnect, and every retry of the agent's reply was 409 "still running" for
    two minutes though nothing ran. The process that let it go takes it over at once."""
    late = LateWrite(nc)
    probe = Probe([202])
    key = uuid.uuid4().hex
    async with serving(late, probe) as url:
        status, body, _ = await post(url, key)
        assert status == 503 and "retry" in body["error"], body
        assert late.lost == 1 and probe.runs == 0
        assert await post(url, key) == (202, {"run": 1}, None)
        assert await post(url, key) == (202, {"run": 1}, "true")
    assert probe.runs == 1


class LostSettle:
    """NATS restarting under a command: the first drop (``delete``) or answer (``update``) of a
    record is never done and never answered."""

    def __init__(self, nc: NATS, lose: str) -> None:
        self.nc = nc
        self.lose = lose
        self.lost = 0

    def jetstream(self) -> Any:
        return SimpleNamespace(key_value=self.key_value)

    async def key_value(self, bucket: str) -> Any:
        kv = await self.nc.jetstream().key_value(bucket)
        real = getattr(kv, self.lose)

        async def lost_once(*args: Any, **kwargs: Any) -> Any:
            if not self.lost:
                self.lost += 1
                raise TimeoutError
            return await real(*args, **kwargs)

        setattr(kv, self.lose, lost_once)
        return kv


@pytest.mark.parametrize("lose", ["delete", "update"])
async def test_a_record_its_process_could_not_settle_is_settled_once_nats_answers(
    nc: NATS, monkeypatch: pytest.MonkeyPatch, lose: str
) -> None:
    """Another API process's retry of such a command waited two minutes ("still running"), and
    then ran it again even when it had been done (its answer was never kept). Now the process
    that ran it drops the record (a 503: the retry runs) or keeps its answer (a 201: the retry
    replays it) as soon as NATS answers again."""
    monkeypatch.setattr(idempotency_records, "SETTLE_EVERY_S", 0.1)
    lossy = LostSettle(nc, lose)
    probe = Probe([503] if lose == "delete" else [201])
    key = uuid.uuid4().hex
    async with serving(lossy, probe) as url, serving(nc, probe) as other_process:
        first = await post(url, key)
        assert first[0] == (503 if lose == "delete" else 201) and lossy.lost == 1, first

        async def settled() -> tuple[int, Any, str | None] | None:
            answer = await post(other_process, key)
            return None if answer[0] == 409 else answer

        answer = await eventually(settled, timeout=10)
    if lose == "delete":
        assert answer == (200, {"run": 2}, None)  # nothing was kept: the retry ran
        assert probe.runs == 2
    else:
        assert answer == (201, {"run": 1}, "true")  # done once, its answer kept late
        assert probe.runs == 1


async def test_a_kept_answer_is_sealed_in_nats(nc: NATS) -> None:
    """An answer may hold a new agent token or a customer's name: not in clear in the bucket,
    and unreadable after the signing key changed (refused, not run again)."""
    probe = Probe([])
    key = uuid.uuid4().hex
    async with serving(nc, probe) as url:
        assert await post(url, key) == (200, {"run": 1}, None)
    kv = await nc.jetstream().key_value(IDEMPOTENCY_BUCKET)
    entry = await kv.get(idempotency.record_key("operator", "POST", "/v1/things", key))
    record = msgspec.json.decode(entry.value or b"", type=idempotency.Record)
    assert record.state == "done" and b'"run"' not in record.body and b'"run"' not in (entry.value or b"")
    async with serving(nc, probe, signing_key="rotated") as url:
        status, body, _ = await post(url, key)
        assert status == 422 and "signing key changed" in body["error"]
    assert probe.runs == 1
