"""Property-based tests (hypothesis) of the config loader: any text, any YAML document and any mutation of
a valid config either loads or raises ConfigError whose every line is ``FILE:LINE:COL: path: message``;
never another exception. Deterministic (``derandomize``) so CI runs the same examples every time.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.config.loader import load_config_text
from router.config.models import RouterConfig
from router.errors import ConfigError

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

LINE = re.compile(r"^fuzz\.yaml:\d+:\d+: \S")
ENV = {"SECRET": "s3cr3t-value", "PORT": "8080", "EMPTY": ""}

# Every kind of function, source and destination, valid as it is (the code directory exists).
VALID = """\
version: 1
server: {host: 127.0.0.1, port: 8080, max_body: 6MB, invoke_token: "${SECRET}"}
state: sqlite:///state.db
aws: {region: us-east-1, endpoint_url: "http://127.0.0.1:4566", account_id: "123456789012"}
functions:
  local:
    runtime: python3.11
    handler: app.handler
    code: ./fn
    timeout: 30s
    memory: 256
    environment: {TOKEN: "${SECRET}"}
    concurrency: 10
    async:
      retries: 2
      max_event_age: 6h
      backoff: {initial: 1s, max: 5m}
      on_success: {type: sqs, queue_url: "http://127.0.0.1:4566/123456789012/done"}
      on_failure: {type: amqp, url: "amqp://guest:guest@127.0.0.1/", exchange: dlx, routing_key: r}
  other:
    runtime: python3.11
    handler: app.handler
    code: ./fn
    async:
      on_failure: {type: file, path: ./failures.jsonl}
      on_success: {type: function, function: local}
  remote:
    http: {url: "http://127.0.0.1:9000/invoke", headers: {Authorization: "Bearer ${SECRET}"}}
    timeout: 10s
  aws:
    lambda: {function_name: thumbs, qualifier: prod}
routes:
  - name: hook
    source: {type: webhook, path: "/hooks/{id}", methods: [POST],
             auth: {type: hmac, secret: "${SECRET}", header: X-Hub-Signature-256, prefix: "sha256="}}
    function: remote
    invocation: async
  - name: nightly
    source: {type: schedule, cron: "0 3 * * *", timezone: Europe/Berlin}
    input: {task: cleanup}
    function: local
  - name: often
    source: {type: schedule, rate: 5m}
    function: other
  - name: uploads
    source: {type: sqs, queue_url: "http://127.0.0.1:4566/123456789012/uploads", batch_size: 10}
    filters: [{body: {type: [image.uploaded], size: [{numeric: [">", 0]}]}}]
    function: local
  - name: clicks
    source: {type: kinesis, stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/clicks",
             starting_position: TRIM_HORIZON, bisect_on_error: true, max_retry_attempts: 3,
             on_failure: {type: sqs, queue_url: "http://127.0.0.1:4566/123456789012/dlq"}}
    function: local
  - name: changes
    source: {type: dynamodb_stream, stream_arn: "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"}
    function: local
  - name: orders
    source: {type: amqp, url: "amqp://guest:guest@127.0.0.1/", queue: orders, prefetch: 10}
    filters: [{data: {kind: [{prefix: "order."}]}}]
    function: remote
"""


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzzconfig")
    (d / "fn").mkdir()
    (d / "fn" / "app.py").write_text("def handler(event, context):\n    return event\n")
    return d


def load_or_config_error(text: str, config_dir: Path) -> RouterConfig | None:
    """Load ``text``; a ConfigError is fine when every line says where and what. Anything else fails."""
    try:
        return load_config_text(text, "fuzz.yaml", ENV, config_dir=config_dir)
    except ConfigError as exc:
        problems = exc.problems
    assert problems, "a ConfigError without a problem"
    for line in problems:
        assert LINE.match(line), f"not FILE:LINE:COL: path: message: {line!r}"
        assert ENV["SECRET"] not in line, f"a secret in a config error: {line!r}"
    return None


def test_the_base_config_is_valid(config_dir: Path) -> None:
    assert load_or_config_error(VALID, config_dir) is not None


# --- any text -------------------------------------------------------------------------------------------

FRAGMENTS = [
    "version: 1\n",
    "functions:\n",
    "  f:\n",
    "    code: ./fn\n",
    "routes:\n",
    "  - ",
    "name: r\n",
    "source: {type: webhook, path: /x}\n",
    "function: f\n",
    "{",
    "}",
    "[",
    "]",
    ",",
    ": ",
    "- ",
    "\n",
    "  ",
    "\t",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!str ",
    "!!binary ",
    "!!python/object:os.system ",
    "? ",
    "? [a, b]: c\n",
    "1: 2\n",
    "null: x\n",
    "~",
    "'",
    '"',
    "#",
    "${SECRET}",
    "${NOPE}",
    "${",
    "$${X}",
    "${A:-",
    "1e999",
    "-1",
    "0x10",
    "yes",
    "2024-01-01",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "\ufeff",
    "\x00",
    "é",
    "|\n",
    ">-\n",
    "   x\n",
]


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)))
def test_fuzz_any_text(text: str, config_dir: Path) -> None:
    load_or_config_error(text, config_dir)


# --- any YAML document ------------------------------------------------------------------------------------

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "${SECRET}",
            "${NOPE}",
            "${NOPE:-x}",
            "${EMPTY}",
            "${",
            "1s",
            "-5m",
            "6MB",
            "0",
            "1e9",
            "python3.11",
            "webhook",
            "sqs",
            "amqp://x",
        ]
    ),
)
document = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(
                st.text(max_size=10),
                st.integers(),
                st.none(),
                st.booleans(),
                st.sampled_from(
                    [
                        "version",
                        "functions",
                        "routes",
                        "server",
                        "state",
                        "aws",
                        "source",
                        "type",
                        "code",
                        "name",
                        "function",
                    ]
                ),
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)


@FUZZ
@given(doc=document)
def test_fuzz_any_yaml_document(doc: Any, config_dir: Path) -> None:
    load_or_config_error(yaml.safe_dump(doc, allow_unicode=True), config_dir)


# --- mutations of the valid config ----------------------------------------------------------------------

replacement = st.one_of(
    scalar, st.lists(scalar, max_size=3), st.dictionaries(st.text(max_size=8), scalar, max_size=3)
)
BASE_DOC = yaml.safe_load(VALID)


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """Walk down to a random node and replace it, delete it, or add an unknown key next to it."""
    root = {"root": copy.deepcopy(doc)}
    parent: Any = root
    key: Any = "root"
    while True:
        node = parent[key]
        children = (
            list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        )
        if not children or data.draw(st.integers(0, 3)) == 0:
            break
        parent, key = node, data.draw(st.sampled_from(children))
    op = data.draw(st.sampled_from(["replace", "delete", "unknown", "duplicate"]))
    if op == "replace":
        parent[key] = data.draw(replacement)
    elif op == "delete" and parent is not root:
        del parent[key]
    elif op == "unknown" and isinstance(parent[key], dict):
        parent[key][data.draw(st.text(min_size=1, max_size=8))] = data.draw(scalar)
    elif op == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[key]))
    return root["root"]


@FUZZ
@given(data=st.data(), rounds=st.integers(1, 4))
def test_fuzz_mutations_of_a_valid_config(data: st.DataObject, rounds: int, config_dir: Path) -> None:
    doc: Any = BASE_DOC
    for _ in range(rounds):
        doc = _mutate(doc, data)
    load_or_config_error(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), config_dir)


# --- YAML aliases ---------------------------------------------------------------------------------------

ALIAS_BOMB_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: the bomb below would take ~7 GB
resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
from router.config.loader import load_config_text
from router.errors import ConfigError
text = sys.stdin.read()
try:
    load_config_text(text, "bomb.yaml", {})
except ConfigError as exc:
    print(exc)
    sys.exit(0)
print("loaded")
sys.exit(0)
"""


def alias_bomb(levels: int) -> str:
    """A ~0.6 KB config whose aliases name 10**levels scalars (a "billion laughs")."""
    lines = ["version: 1", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"functions: *a{levels - 1}", ""])


@pytest.mark.timeout(120)
def test_an_alias_bomb_is_a_config_error_in_bounded_memory() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", ALIAS_BOMB_CHILD], input=alias_bomb(7), capture_output=True,
                          text=True, timeout=100)
    assert done.returncode == 0, f"the loader died: {done.stderr[-500:]}"
    assert done.stdout.startswith("bomb.yaml:"), done.stdout[:500]
