"""Every JSON request body the API decodes refuses a field it does not know (400 ``Object
contains unknown field``) rather than ignoring it: each route's body type is a
``services.api.common.Body``, and ``read_body`` refuses a type that would tolerate one."""

from __future__ import annotations

import msgspec
import pytest

from services.api.common import Body, read_body
from services.contracts.routes import ROUTES


def test_every_route_body_forbids_unknown_fields() -> None:
    bodies = {route.body for route in ROUTES if route.body is not None}
    assert len(bodies) > 10
    for body in bodies:
        assert issubclass(body, Body) and body.__struct_config__.forbid_unknown_fields, body.__name__
        with pytest.raises(msgspec.ValidationError, match="unknown field `surely_not_a_field`"):
            msgspec.json.decode(b'{"surely_not_a_field": 1}', type=body)


async def test_read_body_refuses_a_type_that_tolerates_unknown_fields() -> None:
    class Lenient(Body, forbid_unknown_fields=False):
        a: int = 0

    with pytest.raises(TypeError, match="Lenient must forbid unknown fields"):
        await read_body(None, Lenient)  # type: ignore[arg-type]  # refused before reading
