"""Which web pages may use the chat: ``allowed_origins`` plus the server's own origin, and CORS."""

from __future__ import annotations

from aiohttp import web

from connectors.sdk import ProviderRequest


def parse_origins(value: list[str] | str) -> frozenset[str]:
    """The ``allowed_origins`` setting (a list, or a comma-separated string from env) as
    ``scheme://host[:port]``, lower case, no trailing slash."""
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(o.strip().rstrip("/").lower() for o in items if o.strip())


def origin_allowed(allowed: frozenset[str], origin: str, request: ProviderRequest) -> bool:
    origin = origin.strip().rstrip("/").lower()
    return origin in allowed or origin == f"{request.scheme}://{request.host}".lower()


def cors_headers(allowed: frozenset[str], request: ProviderRequest) -> dict[str, str]:
    """CORS headers for the request's ``Origin``; none if it is not allowed."""
    origin = request.headers.get("Origin", "")
    if not origin or not origin_allowed(allowed, origin, request):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Vary": "Origin",
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Authorization",
        "Access-Control-Max-Age": "600",
    }


def refused() -> web.Response:
    """The answer to a page whose origin is not allowed."""
    return web.json_response({"error": "origin not allowed"}, status=403)
