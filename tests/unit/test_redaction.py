"""The redaction service: known secret values, in every form they take on the way out, become ``${NAME}``."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from router.invocation import Result
from router.logs import JsonFormatter, LoopBufferedHandler
from router.redaction import REDACTOR, Redactor, install, redact
from router.urls import safe_url


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    REDACTOR.clear()
    yield
    REDACTOR.clear()


def test_values_in_their_raw_json_and_url_forms_become_the_variable() -> None:
    r = Redactor()
    assert r("nothing known") == "nothing known"
    r.add({'p"a\\ss wörd': "PASS", "T0/B0/tok": "SLACK", "ab": "SHORT"})
    assert r('x p"a\\ss wörd y') == "x ${PASS} y"
    assert r(json.dumps('p"a\\ss wörd')) == '"${PASS}"'  # as a JSON log line writes it
    assert r("/services/T0%2FB0%2Ftok") == "/services/${SLACK}"  # percent-encoded
    assert r("/services/T0/B0/tok") == "/services/${SLACK}"
    assert r("ab cab") == "ab cab"  # too short to be a secret


def test_a_secret_containing_another_is_replaced_whole() -> None:
    r = Redactor()
    r.add({"token": "SHORT", "token-long": "LONG"})
    assert r("token-long token") == "${LONG} ${SHORT}"


def test_error_results_and_urls_in_messages_are_redacted() -> None:
    install({"sekrit-token": "TOKEN"})
    assert redact("a sekrit-token b") == "a ${TOKEN} b"
    assert safe_url("https://user:pw@hooks.example/services/sekrit-token?x=1") == \
        "https://hooks.example/services/${TOKEN}"
    body = json.loads(Result.error("HttpError", "POST https://h/services/sekrit-token failed").payload)
    assert body["errorMessage"] == "POST https://h/services/${TOKEN} failed"


def test_log_lines_are_redacted_whoever_wrote_them() -> None:
    install({"sekrit-token": "TOKEN"})
    stream = io.StringIO()
    handler = LoopBufferedHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("failed: %s", "https://h/services/sekrit-token")
        handler.add(JsonFormatter().line(0.0, "router.function", "printed sekrit-token", "f", None))
        handler.flush()
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "sekrit-token" not in text
    assert text.count("${TOKEN}") == 2
