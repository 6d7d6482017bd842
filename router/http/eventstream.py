"""The AWS event stream encoding (``application/vnd.amazon.eventstream``), as botocore's
``botocore.eventstream`` parser reads it: each message is a prelude (total length, headers length, both
4-byte big-endian, and the prelude's CRC32), the headers, the payload and the CRC32 of all before it.

Only what InvokeWithResponseStream sends is written: ``event`` messages whose headers are strings
(``:message-type``, ``:event-type``, ``:content-type``).
"""

from __future__ import annotations

import json
import struct
import zlib

_STRING = 7  # header value type: string (2-byte length, UTF-8)
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (bytes((len(raw_name),)) + raw_name + bytes((_STRING,)) + struct.pack(">H", len(raw_value))
            + raw_value)


def message(headers: dict[str, str], payload: bytes) -> bytes:
    """One encoded message with string ``headers`` and ``payload``."""
    head = b"".join(_header(name, value) for name, value in headers.items())
    total = _PRELUDE.size + _CRC.size + len(head) + len(payload) + _CRC.size
    prelude = _PRELUDE.pack(total, len(head))
    start = prelude + _CRC.pack(zlib.crc32(prelude)) + head + payload
    return start + _CRC.pack(zlib.crc32(start))


def event(event_type: str, payload: bytes, content_type: str) -> bytes:
    return message({":event-type": event_type, ":content-type": content_type, ":message-type": "event"},
                   payload)


def payload_chunk(data: bytes) -> bytes:
    """InvokeWithResponseStream's ``PayloadChunk`` event: a piece of the function's response."""
    return event("PayloadChunk", data, "application/octet-stream")


def invoke_complete(error_code: str | None = None, error_details: str | None = None,
                    log_result: str | None = None) -> bytes:
    """InvokeWithResponseStream's ``InvokeComplete`` event: the end of the response, with the error
    (``ErrorCode``, ``ErrorDetails``) when the function failed and the log tail when it was asked for."""
    body: dict[str, str] = {}
    if error_code is not None:
        body["ErrorCode"] = error_code
    if error_details is not None:
        body["ErrorDetails"] = error_details
    if log_result is not None:
        body["LogResult"] = log_result
    return event("InvokeComplete", json.dumps(body).encode(), "application/json")
