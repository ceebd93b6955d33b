"""Delivery records (operator only): list them by status, look at one, retry a dead letter.

Records live in the ``rd_deliveries`` KV bucket (see ``services.delivery.records``); the
delivery service writes them, this module reads them and marks one ``retry_requested``,
which the delivery service picks up and delivers again (a new round of attempts).
"""

from __future__ import annotations

import structlog
from aiohttp import web
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from events.stream_scan import bucket_values
from services.api.common import ACTOR, MAX_RECORDS, ApiDeps, ApiError, is_operator, json_error, ok, query_int
from services.delivery import records

log = structlog.get_logger(__name__)


def routes(deps: ApiDeps) -> web.RouteTableDef:
    r = web.RouteTableDef()
    kv_holder: list[KeyValue] = []

    async def kv() -> KeyValue | None:
        """The bucket, or None while no delivery service has made it: then there are no
        records yet. The API only reads it: it neither creates it (its NATS role may not,
        and a request would wait out the refusal) nor brings it in line."""
        if not kv_holder:
            try:
                kv_holder.append(await deps.nc.jetstream().key_value(records.BUCKET))
            except BucketNotFoundError:
                return None
        return kv_holder[0]

    def operator_only(request: web.Request) -> None:
        if not is_operator(request):
            raise ApiError(403, "delivery records are for operators")

    async def load(delivery_id: str) -> tuple[records.DeliveryRecord, KeyValue, int]:
        bucket = await kv()
        if bucket is None:
            raise ApiError(404, f"no delivery {delivery_id}")
        try:
            entry = await bucket.get(delivery_id)
        except KeyNotFoundError as err:
            raise ApiError(404, f"no delivery {delivery_id}") from err
        if not entry.value:
            raise ApiError(404, f"no delivery {delivery_id}")
        return records.decode(entry.value), bucket, int(entry.revision or 0)

    @r.get("/v1/deliveries")
    async def list_deliveries(request: web.Request) -> web.Response:
        operator_only(request)
        status = request.query.get("status")
        if status is not None and status not in records.STATUSES:
            return json_error(400, f"status is one of {', '.join(records.STATUSES)}")
        agent = request.query.get("agent")
        limit = query_int(request, "limit", 100, low=1, high=MAX_RECORDS)
        bucket = await kv()
        if bucket is None:
            return ok({"deliveries": [], "count": 0})
        # Every record as it stands, in one pass over the bucket's stream (an ordered consumer,
        # last per key): a get per record was a round trip each, ~100,000 of them for two
        # weeks of notices at scale (found by a scale audit).
        found: list[records.DeliveryRecord] = []
        async for _key, value in bucket_values(deps.nc.jetstream(), records.BUCKET):
            record = records.decode(value)
            if (status is None or record.status == status) and (agent is None or record.agent_id == agent):
                found.append(record)
        found.sort(key=lambda rec: (rec.created_at, rec.id), reverse=True)
        return ok({"deliveries": [records.summary(rec) for rec in found[:limit]], "count": len(found)})

    @r.get("/v1/deliveries/{id}")
    async def get_delivery(request: web.Request) -> web.Response:
        operator_only(request)
        record, _, _ = await load(request.match_info["id"])
        return ok(records.summary(record, with_body=True))

    @r.post("/v1/deliveries/{id}/retry")
    async def retry(request: web.Request) -> web.Response:
        operator_only(request)
        record, bucket, revision = await load(request.match_info["id"])
        if record.status != "failed":
            return json_error(409, f"only failed deliveries are retried; this one is {record.status}")
        record.status = "retry_requested"
        record.updated_at = deps.clock()
        try:
            await bucket.update(record.id, records.encode(record), last=revision)
        except KeyWrongLastSequenceError:
            return json_error(409, "the delivery changed meanwhile; fetch it and try again")
        log.info("api.delivery_retry", delivery_id=record.id, agent_id=record.agent_id, actor=request[ACTOR])
        return ok(records.summary(record), status=202)

    return r
