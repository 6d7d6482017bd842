"""router.lineage: the trace header's Lineage counts a chain's invocations per function."""

from __future__ import annotations

from router import lineage

KEY = lineage.function_key("arn:aws:lambda:us-east-1:000000000000:function:loop")
OTHER = lineage.function_key("arn:aws:lambda:us-east-1:000000000000:function:other")


def test_a_new_chain_counts_one_under_a_new_root() -> None:
    header = lineage.next_header(None, KEY)
    assert header.startswith("Root=1-")
    assert ";Sampled=0;" in header
    assert lineage.hops(header, KEY) == 1
    assert lineage.hops(header, OTHER) == 0


def test_each_hop_adds_one_and_keeps_the_root_and_the_other_functions() -> None:
    header = lineage.next_header(None, KEY)
    root = lineage.root(header)
    for _ in range(5):
        header = lineage.next_header(header, KEY)
    header = lineage.next_header(header, OTHER)
    assert lineage.root(header) == root
    assert lineage.lineage(header) == {KEY: 6, OTHER: 1}


def test_reads_what_the_aws_services_write() -> None:
    header = "Root=1-46105bdf-04c13a9504458ebc539f5fba;Parent=240a548a42a88af4;Sampled=0;Lineage=12326a9d:3"
    assert lineage.lineage(header) == {"12326a9d": 3}
    assert lineage.root(header) == "1-46105bdf-04c13a9504458ebc539f5fba"
    nxt = lineage.next_header(header, KEY)
    assert lineage.lineage(nxt) == {"12326a9d": 3, KEY: 1}
    assert nxt.startswith("Root=1-46105bdf-04c13a9504458ebc539f5fba;")


def test_malformed_lineage_counts_nothing() -> None:
    assert lineage.lineage("Root=1-x;Lineage=zz:1|12326a9d:x|:3") == {}
    assert lineage.lineage(None) == {}
    assert lineage.lineage("garbage") == {}


def test_entries_are_bounded_and_keep_the_function_invoked() -> None:
    header = None
    keys = [lineage.function_key(f"arn:f{i}") for i in range(lineage.MAX_ENTRIES + 4)]
    for key in keys:
        header = lineage.next_header(header, key)
        header = lineage.next_header(header, key)
    assert len(lineage.lineage(header)) == lineage.MAX_ENTRIES
    assert lineage.hops(header, keys[-1]) == 2


def test_deepest_picks_the_longest_chain_of_a_batch() -> None:
    short = lineage.next_header(None, KEY)
    long = lineage.next_header(lineage.next_header(short, KEY), KEY)
    assert lineage.deepest([None, short, long, ""]) == long
    assert lineage.deepest([None, None]) is None


def test_reads_the_header_botocore_quoted() -> None:
    # botocore URL-quotes _X_AMZN_TRACE_ID into X-Amzn-Trace-Id: '|' arrives as %7C.
    assert lineage.lineage("Root=1-x;Lineage=12326a9d:3%7Cabcdef01:2") == {"12326a9d": 3, "abcdef01": 2}
