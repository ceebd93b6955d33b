"""What libraries log through ``logging`` comes out like Relaydesk's own lines: one JSON line
each in containers (found by an audit: aiohttp's tracebacks came as multi-line plain text amid
the JSON), and a request aiohttp could not parse is one warning, not an error with a traceback
quoting the request."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from aiohttp.http_exceptions import ContentEncodingError, LineTooLong

from services import logs


@pytest.fixture
def json_logs() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    logs.configure("info", "json")
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def _raise(exc: Exception) -> BaseException:
    """``exc`` raised once, so it carries a traceback as a logged exception does."""
    with pytest.raises(type(exc)) as raised:
        raise exc
    return raised.value


@pytest.mark.usefixtures("json_logs")
def test_a_request_aiohttp_could_not_parse_is_one_warning_without_the_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    too_long = _raise(LineTooLong("/customers/+15551234567/" + "a" * 200, "8190"))
    logging.getLogger("aiohttp.server").error("Error handling request", exc_info=too_long)
    try:
        try:
            raise ContentEncodingError("Can not decode content-encoding: gzip")
        except ContentEncodingError as inner:
            raise RuntimeError("payload") from inner
    except RuntimeError as outer:
        logging.getLogger("aiohttp.server").exception("Unhandled exception", exc_info=outer)
    err = capsys.readouterr().err
    lines = _lines(err)  # every line is JSON
    assert [(line["event"], line["level"], line["kind"]) for line in lines] == [
        ("http.bad_request", "warning", "LineTooLong"),
        ("http.bad_request", "warning", "ContentEncodingError"),
    ]
    assert "Traceback" not in err and "15551234567" not in err


@pytest.mark.usefixtures("json_logs")
def test_another_librarys_error_is_one_json_line_with_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("nats.aio.client").error("callback failed", exc_info=_raise(RuntimeError("boom")))
    logging.getLogger("nats.aio.client").info("chatter")  # below warning: left out
    [line] = _lines(capsys.readouterr().err)
    assert line["event"] == "callback failed" and line["level"] == "error"
    assert line["logger"] == "nats.aio.client"
    assert "RuntimeError: boom" in str(line["exception"])


@pytest.mark.usefixtures("json_logs")
def test_personal_data_under_other_names_and_in_exception_text_is_not_logged_in_clear(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by an integrator: ``sender_name``, ``wa_id`` and an exception quoting an address
    printed in clear (only ``email``, ``body`` and the like were hashed); ids stay readable."""
    log = structlog.get_logger()
    try:
        int("ada@example.com")
    except ValueError:
        log.exception("inbound.crashed", conversation_id="cv_2d8971234567ab")
    log.warning(
        "inbound.rejected",
        sender_name="Ada Lovelace",
        wa_id="15551234567",
        reason="no customer for +1 555 123 4567 or ada@example.com",
        customer_id="cu_1234567890",
    )
    out = capsys.readouterr().err
    for personal in ("ada@example.com", "Ada Lovelace", "15551234567", "555 123 4567"):
        assert personal not in out, personal
    crashed, rejected = _lines(out)
    assert crashed["conversation_id"] == "cv_2d8971234567ab"
    assert "ValueError: invalid literal for int() with base 10: '[email]'" in str(crashed["exception"])
    assert rejected["reason"] == "no customer for [number] or [email]"
    assert rejected["customer_id"] == "cu_1234567890"
    assert str(rejected["sender_name"]).startswith("h:") and str(rejected["wa_id"]).startswith("h:")
