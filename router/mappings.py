"""The identity Lambda gives an event source mapping, for a polling route: its UUID, stable across restarts
(uuid5 of the route's name), as the control API answers it and as the S3 destination's keys carry it."""

from __future__ import annotations

import uuid

MAPPING_NAMESPACE = uuid.UUID("6f1d0c52-3c7e-5b8a-9a57-7a6f3e0c2b11")
"""uuid5 namespace of event source mapping UUIDs: the same route name gives the same UUID, always."""


def mapping_uuid(route: str) -> str:
    """The event source mapping UUID of ``route``: uuid5 of its name in a fixed namespace."""
    return str(uuid.uuid5(MAPPING_NAMESPACE, route))
