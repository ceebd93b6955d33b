"""The API's own contract, served: ``GET /openapi.json`` (the OpenAPI 3.1 document generated
from the route table, ``services.contracts``) and ``GET /docs`` (a page that renders it with
Redoc from a CDN and, for offline use, lists every route and links the JSON). No token."""

from __future__ import annotations

import html

import msgspec
from aiohttp import web

from services.contracts import generate
from services.contracts.routes import ROUTES

# Pinned, with its hash (sha384 of the file in the npm package redoc 2.5.4): the page is served
# on the console's origin, where a script the CDN changed would act as whoever is signed in.
REDOC = "https://cdn.jsdelivr.net/npm/redoc@2.5.4/bundles/redoc.standalone.js"
REDOC_INTEGRITY = "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5"
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def page() -> str:
    rows = "\n".join(
        f"<tr><td><code>{r.method}</code></td><td><code>{html.escape(r.path)}</code></td>"
        f"<td>{html.escape(r.summary)}</td><td>{'/'.join(r.auth) or 'none'}</td></tr>"
        for r in ROUTES
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Relaydesk API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;margin:0}} header,#routes{{padding:1rem 2rem}}
table{{border-collapse:collapse}} td{{padding:.15rem .6rem;border-bottom:1px solid #ddd}}</style></head>
<body>
<header><h1>Relaydesk API</h1>
<p>The OpenAPI 3.1 document: <a href="openapi.json">/openapi.json</a>
(the AsyncAPI document of the NATS subjects: <code>relaydesk docs asyncapi</code>).</p></header>
<redoc spec-url="openapi.json"></redoc>
<noscript>Without JavaScript (or offline), the route list below and the JSON document are all there is.</noscript>
<details id="routes"><summary>Every route (token: who may call)</summary>
<table>{rows}</table></details>
<script src="{REDOC}" integrity="{REDOC_INTEGRITY}" crossorigin="anonymous"></script>
</body></html>
"""


def routes() -> web.RouteTableDef:
    r = web.RouteTableDef()
    cache: list[bytes] = []

    @r.get("/openapi.json")
    async def openapi(request: web.Request) -> web.Response:
        if not cache:  # built once per process: the table does not change while it runs
            cache.append(msgspec.json.encode(generate("openapi")))
        return web.Response(body=cache[0], content_type="application/json", headers=HEADERS)

    @r.get("/docs")
    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=page(), content_type="text/html", charset="utf-8", headers=HEADERS)

    return r
