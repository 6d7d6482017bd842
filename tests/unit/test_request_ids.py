"""Request ids (``router.invocation.new_request_id``): random version 4 UUIDs in their usual form, as
``uuid.uuid4`` gives them, unique, and not shared with a forked child."""

from __future__ import annotations

import os
import uuid

from router.invocation import new_request_id


def test_ids_are_version_4_uuids_in_their_usual_form_and_unique() -> None:
    ids = [new_request_id() for _ in range(5000)]  # several refills of the random buffer
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    # every one of the 122 random bits varies
    bits = [uuid.UUID(t).int for t in ids]
    fixed = (0xF << 76) | (0x3 << 62)  # version and variant
    assert all(any(b >> n & 1 for b in bits) and not all(b >> n & 1 for b in bits)
               for n in range(128) if not fixed >> n & 1)


def test_a_forked_child_does_not_hand_out_its_parent_s_ids() -> None:
    new_request_id()  # the parent's buffer holds ids not given out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without cleanup
        os.close(read)
        os.write(write, "\n".join(new_request_id() for _ in range(20)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {new_request_id() for _ in range(20)}
    assert len(child) == 20
    assert not child & parent
