"""The agent console: one static page (HTML + JS modules, no build step) served by the API at
``/console``. The page itself needs no token; everything it shows comes from the API. The
token typed once is exchanged for an HttpOnly session cookie (``services.api.session``): the
page's scripts never hold it."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
FILES = (
    "index.html",
    "console.js",
    "core.js",
    "drafts.js",
    "workspace.js",
    "compose.js",
    "outbound.js",
    "supervisor.js",
    "console.css",
)
# The page renders what customers wrote (names, subjects, messages, file names) as text only;
# the policy is the second wall. default-src covers neither <base> nor where a form posts, so an
# injected <base href> or <form action> would redirect the page's relative URLs or a typed-in
# token to another host: both are pinned (found by an audit). X-Frame-Options for the browsers
# that predate frame-ancestors.
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def _serve(name: str) -> web.Response:
    path = STATIC / name
    return web.Response(body=path.read_bytes(), content_type=TYPES[path.suffix], charset="utf-8", headers=HEADERS)


def routes() -> web.RouteTableDef:
    r = web.RouteTableDef()

    @r.get("/console")
    async def index(request: web.Request) -> web.Response:
        return _serve("index.html")

    @r.get("/console/{name}")
    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILES:
            raise web.HTTPNotFound()
        return _serve(name)

    return r
