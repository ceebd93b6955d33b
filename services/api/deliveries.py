"""Delivery records (operator only): list them by status, look at one, retry a dead letter.

Records live in the ``rd_deliveries`` KV bucket (see ``services.delivery.records``); the
delivery service writes them, this module reads them and marks one ``retry_requested``,
which the delivery service picks up and delivers again (a new round of attempts).
"""

from __future__ import annotations

import structlog
from aiohttp import web
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from events.kv import bucket_keys
from services.api.common import ACTOR, ApiDeps, ApiError, json_error, ok
from services.delivery import records

log = structlog.get_logger(__name__)


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    kv_holder: list[KeyValue] = []

    async def kv() -> KeyValue:
        if not kv_holder:
            # Created with the right replicas if no delivery service made it yet; brought in
            # line only by the delivery service and setup (a request does not wait for NATS).
            kv_holder.append(await records.bucket(deps.nc.jetstream(), deps.replicas, update=False, budget=0))
        return kv_holder[0]

    def operator_only(request: web.Request) -> None:
        if request[ACTOR] != "operator":
            raise ApiError(403, "delivery records are for operators")

    async def load(delivery_id: str) -> tuple[records.DeliveryRecord, int]:
        try:
            entry = await (await kv()).get(delivery_id)
        except KeyNotFoundError as err:
            raise ApiError(404, f"no delivery {delivery_id}") from err
        if not entry.value:
            raise ApiError(404, f"no delivery {delivery_id}")
        return records.decode(entry.value), int(entry.revision or 0)

    @r.get("/v1/deliveries")
    async def list_deliveries(request: web.Request) -> web.Response:
        operator_only(request)
        status = request.query.get("status")
        if status is not None and status not in records.STATUSES:
            return json_error(400, f"status is one of {', '.join(records.STATUSES)}")
        agent = request.query.get("agent")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return json_error(400, "limit must be an integer")
        bucket = await kv()
        keys = await bucket_keys(deps.nc.jetstream(), records.BUCKET)
        found: list[records.DeliveryRecord] = []
        for key in keys:
            try:
                entry = await bucket.get(key)
            except KeyNotFoundError:
                continue
            if not entry.value:
                continue
            record = records.decode(entry.value)
            if (status is None or record.status == status) and (agent is None or record.agent_id == agent):
                found.append(record)
        found.sort(key=lambda rec: (rec.created_at, rec.id), reverse=True)
        return ok({"deliveries": [records.summary(rec) for rec in found[:limit]], "count": len(found)})

    @r.get("/v1/deliveries/{id}")
    async def get_delivery(request: web.Request) -> web.Response:
        operator_only(request)
        record, _ = await load(request.match_info["id"])
        return ok(records.summary(record, with_body=True))

    @r.post("/v1/deliveries/{id}/retry")
    async def retry(request: web.Request) -> web.Response:
        operator_only(request)
        record, revision = await load(request.match_info["id"])
        if record.status != "failed":
            return json_error(409, f"only failed deliveries are retried; this one is {record.status}")
        record.status = "retry_requested"
        record.updated_at = deps.clock()
        try:
            await (await kv()).update(record.id, records.encode(record), last=revision)
        except KeyWrongLastSequenceError:
            return json_error(409, "the delivery changed meanwhile; fetch it and try again")
        log.info("api.delivery_retry", delivery_id=record.id, agent_id=record.agent_id, actor=request[ACTOR])
        return ok(records.summary(record), status=202)

    return r
