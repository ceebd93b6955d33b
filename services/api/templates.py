"""WhatsApp message templates: ``[[templates]]`` in the config, ``GET /v1/templates``, and
what a reply or a new conversation with ``{"template": name, "parameters": {...}}`` sends.

Outside WhatsApp's 24-hour window only a template approved by Meta may be sent. The same
template is known to the Cloud API by name and language, and to Twilio by its Content API
sid (``content_sid``), so one entry serves both connectors::

    [[templates]]
    name = "order_update"           # as approved in WhatsApp Manager
    language = "en_US"
    parameters = ["customer", "order"]   # the body's {{1}}, {{2}}, in order
    content_sid = "HX0123456789abcdef0123456789abcdef"   # Twilio Content API (optional)
    body = "Hi {{1}}, your order {{2}} has shipped."     # the preview shown on the timeline

A request names every parameter by name; an unknown template or a missing parameter is a
400 naming it. The values travel sealed (``ReplyRequested.template_values``, a JSON array in
parameter order), the rendered preview as the reply's text.

This module imports nothing of the API at run time, so ``services.config`` can use
``TemplateSettings``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from events.model import TemplateMessage

if TYPE_CHECKING:
    from aiohttp import web

    from services.api.common import ApiDeps

MAX_VALUE = 1024  # WhatsApp's limit for one body parameter's text
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


class TemplateSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    name: str
    language: str = "en_US"
    parameters: tuple[str, ...] = ()
    content_sid: str = ""
    body: str = ""


class TemplateInfo(msgspec.Struct, kw_only=True):
    name: str
    language: str
    parameters: list[str]
    body: str
    twilio: bool  # has a Content API sid: sendable through Twilio too


class TemplateList(msgspec.Struct, kw_only=True):
    templates: list[TemplateInfo]
    count: int


@dataclass(frozen=True)
class ChosenTemplate:
    message: TemplateMessage
    values: tuple[str, ...]
    preview: str

    @property
    def values_json(self) -> str:
        return msgspec.json.encode(list(self.values)).decode()


class TemplateRefused(ValueError):
    """A template request that cannot be sent, with the reason (a 400)."""


def _find(configured: tuple[TemplateSettings, ...], name: str) -> TemplateSettings | None:
    return next((t for t in configured if t.name == name), None)


def choose(configured: tuple[TemplateSettings, ...], name: str, parameters: dict[str, str]) -> ChosenTemplate:
    """The template ``name`` filled with ``parameters`` (by name); raises ``TemplateRefused``."""
    found = _find(configured, name)
    if found is None:
        known = ", ".join(t.name for t in configured) or "none configured"
        raise TemplateRefused(f"unknown template {name!r} (known: {known})")
    missing = [p for p in found.parameters if not parameters.get(p, "").strip()]
    if missing:
        raise TemplateRefused(f"template {name!r} needs parameter {', '.join(repr(m) for m in missing)}")
    unknown = sorted(set(parameters) - set(found.parameters))
    if unknown:
        raise TemplateRefused(f"template {name!r} has no parameter {', '.join(repr(u) for u in unknown)}")
    values = tuple(" ".join(parameters[p].split()) for p in found.parameters)  # WhatsApp refuses newlines/tabs
    too_long = [p for p, v in zip(found.parameters, values, strict=True) if len(v) > MAX_VALUE]
    if too_long:
        raise TemplateRefused(f"template {name!r}: parameter {too_long[0]!r} is longer than {MAX_VALUE} characters")
    message = TemplateMessage(
        name=found.name, language=found.language, parameters=found.parameters, content_sid=found.content_sid
    )
    return ChosenTemplate(message, values, render(found, values))


def render(template: TemplateSettings, values: tuple[str, ...]) -> str:
    """The preview text: ``body`` with {{1}}… (or {{name}}) filled in; without a body, the
    template's name and values."""
    by_key = {str(i + 1): v for i, v in enumerate(values)} | dict(zip(template.parameters, values, strict=True))
    if template.body:
        return _PLACEHOLDER.sub(lambda m: by_key.get(m.group(1), m.group(0)), template.body)
    filled = ", ".join(values)
    return f"[template {template.name}]" + (f" {filled}" if filled else "")


def values_of(raw: str) -> list[str]:
    """``template_values`` back as a list (empty when absent or unreadable, e.g. erased)."""
    if not raw:
        return []
    try:
        decoded = msgspec.json.decode(raw, type=list[str])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []
    return decoded


# --- the API side ---------------------------------------------------------------------------


def resolve(deps: ApiDeps, name: str | None, parameters: dict[str, str]) -> ChosenTemplate | None:
    from services.api.common import ApiError

    if not name:
        return None
    try:
        return choose(deps.templates, name, parameters)
    except TemplateRefused as err:
        raise ApiError(400, str(err), template=name) from err


def names(deps: ApiDeps) -> list[str]:
    return [t.name for t in deps.templates]


def routes(deps: ApiDeps) -> web.RouteTableDef:
    from aiohttp import web

    from services.api.common import ok

    r = web.RouteTableDef()

    @r.get("/v1/templates")
    async def list_templates(request: web.Request) -> web.Response:
        out = [
            TemplateInfo(
                name=t.name, language=t.language, parameters=list(t.parameters), body=t.body, twilio=bool(t.content_sid)
            )
            for t in deps.templates
        ]
        return ok(TemplateList(templates=out, count=len(out)))

    return r
