"""What NATS can answer instead of a result, sorted for the callers that must decide whether
to wait and try again (a server restarting, a connection being re-established) or give up."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

# "NATS is away or not answering yet": the outcome of the request is unknown, and trying
# again later is the cure. (A JetStream 503 is what a restarted server answers for a moment.)
NATS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    asyncio.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoServersError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,
    ConnectionError,
)

# Anything NATS or the socket can answer besides a result: for a lease holder, each means
# "I cannot tell whether I still hold it". NATS_UNAVAILABLE is the expected part of it.
NATS_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, OSError, asyncio.TimeoutError)
