"""Pydantic models of the YAML config (DESIGN §3): field names are the user-facing contract."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from router.config.checks import (
    arn_problem,
    is_fifo,
    lambda_name_problem,
    s3_bucket_of,
    url_problem,
    webhook_path_problem,
)
from router.config.units import parse_duration, parse_size
from router.invocation import PAYLOAD_LIMIT

Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds; accepts ``30``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"6h"``."""

SQS_MAX_WAIT = 20
"""Seconds: the longest long poll SQS allows (``WaitTimeSeconds``), and Lambda's."""
SQS_MAX_RECEIVE = 10
"""Messages one ReceiveMessage returns at most: an SQS batch over it is gathered in a batch window."""
MAX_BATCH_WINDOW = 300.0
"""Lambda's MaximumBatchingWindowInSeconds for SQS, at most."""

Size = Annotated[int, BeforeValidator(parse_size)]
"""Bytes; accepts ``1048576``, ``"6MB"``, ``"256KiB"``."""

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PYTHON_RUNTIME = re.compile(r"^python3\.\d{1,2}$")
_NODE_RUNTIME = re.compile(r"^nodejs(\d{2,3})\.x$")
_NODE_MIN_MAJOR = 18


def _http_url(v: str) -> str:
    problem = url_problem(v)
    if problem is not None:
        raise ValueError(problem)
    return v


def _optional_http_url(v: str | None) -> str | None:
    return None if not v else _http_url(v)


def _arn_of(service: str, kind: str) -> Callable[[str], str]:
    """A field check: the value is the ARN of ``kind`` (``"a Kinesis stream"``) of ``service``
    (``checks.arn_problem``)."""
    def check(v: str) -> str:
        problem = arn_problem(v, service, kind)
        if problem is not None:
            raise ValueError(problem)
        return v
    return check


class Model(BaseModel):
    """Base: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)


# --- server, state, aws -------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable only from this machine.

    Any other name counts as exposed: ``""``, ``0.0.0.0`` and ``::`` are every interface, and a host
    name may resolve to a public address."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


class ServerConfig(Model):
    host: str = Field(
        "127.0.0.1",
        description="address to listen on; the default is loopback only: set 0.0.0.0 (every interface) "
        "to serve other machines, e.g. in a container",
    )
    port: int = Field(8080, ge=0, le=65535)
    metrics_port: int | None = Field(None, ge=0, le=65535, description="serve /metrics on its own port")
    max_body: Size = Field(PAYLOAD_LIMIT, gt=0, description="largest request body (sync payload limit)")
    max_async_body: Size = Field(1024 * 1024, gt=0,
                                 description="largest async event payload (Lambda: 1 MB)")
    shutdown_timeout: Duration = Field(25.0, description="time given to in-flight work on SIGTERM")
    drain_delay: Duration = Field(
        0.0, ge=0.0, le=3600.0,
        description="on SIGTERM, how long the router keeps serving (webhooks, Invoke API, sources) while "
        "/readyz answers 503, before it stops listening and finishes in-flight work: time for Kubernetes to "
        "take it out of its endpoints (e.g. 5s); a second SIGTERM or SIGINT ends it at once. Keep "
        "drain_delay + shutdown_timeout under the pod's terminationGracePeriodSeconds")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="auto: uvloop when it is installed (it is a dependency), else asyncio's own loop")
    invoke_api: bool = Field(True, description="serve the Lambda Invoke API")
    console: bool = Field(
        False, description="serve the web console at /console (needs invoke_api: its pages use the Invoke "
        "API, the admin API and /metrics from the browser, with the Invoke API's credentials)")
    invoke_token: str | None = Field(
        None, description="when set, the Invoke API requires 'Authorization: Bearer <token>'"
    )
    invoke_keys: dict[str, str] = Field(
        default_factory=dict,
        description="access key id -> secret access key: the Invoke API verifies AWS SigV4 signatures "
        "made with these keys (boto3, the AWS CLI); use ${VAR} for the secrets",
    )
    allow_unauthenticated_invoke: bool = Field(
        False,
        description="serve the Invoke API without invoke_token or invoke_keys on a non-loopback host: anyone "
        "who can reach the port may then run any function; without it such a config is refused",
    )
    header_timeout: Duration = Field(
        10.0, gt=0, le=3600,
        description="a request's line and headers must arrive within this time of its first byte "
        "(slow clients get 408 and are closed)")
    body_timeout: Duration = Field(
        30.0, gt=0, le=3600,
        description="a request body must arrive within this time of the handler starting to read it "
        "(408 and closed otherwise); also the longest a client may leave a response untaken")
    idle_timeout: Duration = Field(
        60.0, gt=0, le=3600,
        description="a connection is closed when no request has started this long after it opened or "
        "after the last response (keep-alive)")
    max_connections: int = Field(
        4096, ge=1, le=1_000_000,
        description="open client connections at once on the main port; at the cap a new one closes the "
        "oldest idle or header-reading connection, or gets 503; lowered at start to half the open-file "
        "limit (RLIMIT_NOFILE), leaving the rest to environments, the state store and brokers")
    max_body_buffer: Size = Field(
        128 * 1024 * 1024,
        description="request-body bytes held in memory at once across all requests; a request that cannot "
        "get room within 1 s gets 503 (must be at least max_body and max_async_body)")
    watch_config: bool = Field(
        False,
        description="while serving, look at the config file the router was started from every second "
        "(following symlinks: a Kubernetes ConfigMap's swap and an editor's rename are seen) and reload it "
        "as SIGHUP does once a change has held still for a second; a file with errors is refused and the "
        "running config kept. Like the other server settings, only a restart changes it")

    @field_validator("invoke_token")
    @classmethod
    def _empty_token_is_none(cls, v: str | None) -> str | None:
        return v or None  # ${INVOKE_TOKEN:-} unset: no token, not an empty one

    @model_validator(mode="after")
    def _buffer_holds_a_body(self) -> ServerConfig:
        largest = max(self.max_body, self.max_async_body)
        if self.max_body_buffer < largest:
            raise ValueError(f"max_body_buffer ({self.max_body_buffer} bytes) must be at least max_body and "
                             f"max_async_body ({largest} bytes), or no request that large could be read")
        return self

    @model_validator(mode="after")
    def _console_needs_the_invoke_api(self) -> ServerConfig:
        if self.console and not self.invoke_api:
            raise ValueError("console: true needs invoke_api: true (the console's pages call the Invoke API "
                             "and the admin API beside it, with its credentials)")
        return self

    @property
    def invoke_api_exposed(self) -> bool:
        """True when the Invoke API would run functions for anyone on a non-loopback address without
        the operator having said so (DESIGN §9a): such a config is refused."""
        return (self.invoke_api and self.invoke_auth is None and not self.allow_unauthenticated_invoke
                and not is_loopback(self.host))

    @property
    def invoke_auth(self) -> str | None:
        """How the Invoke API is protected (``token``, ``SigV4 keys``, both), or None when it is open."""
        ways = [w for w, on in (("token", bool(self.invoke_token)), ("SigV4 keys", bool(self.invoke_keys)))
                if on]
        return " or ".join(ways) or None


class FailuresConfig(Model):
    """How many failed events the state store keeps (``router failures``), and for how long."""

    max_age: Duration = Field(
        14 * 86400.0, gt=0.0,
        description="failed events older than this are deleted (default 14 days, like an SQS dead-letter "
        "queue's longest retention)",
    )
    max_count: int = Field(
        10_000, ge=1, le=10_000_000,
        description="at most this many failed events are kept; the oldest go first",
    )


class StateConfig(Model):
    """The state store; ``state: URL`` is short for ``state: {url: URL}``."""

    url: str = Field(
        "sqlite:///state.db",
        description="sqlite:///REL/PATH (relative to the config file), sqlite:////ABS/PATH or postgresql://...",
    )
    durability: Literal["fsync", "normal"] = Field(
        "fsync",
        description="SQLite: fsync = synchronous=FULL, an accepted async event (202) survives an OS crash "
        "or power loss; normal = synchronous=NORMAL, faster commits that survive the router being killed "
        "but an OS crash can undo the last ones. PostgreSQL follows its own synchronous_commit",
    )
    write_timeout: Duration = Field(
        5.0, gt=0.0, le=60.0,
        description="longest an async event's write (state store, or async_queue publish) may take before "
        "the caller gets 503 with Retry-After; the event is then not accepted",
    )
    shard_lease_duration: Duration = Field(
        10.0, ge=1.0, le=300.0,
        description="stream routes (kinesis, dynamodb_stream): how long a replica's lease on a shard lasts "
        "unless renewed (every third of it); the shards of a replica that died move to the others after "
        "about this long. Replicas' clocks must agree well within it (NTP)",
    )
    replica_id: str | None = Field(
        None, min_length=1, max_length=200,
        description="this replica's name in the shard leases and logs; default hostname-pid-random. "
        "Each replica sharing a state store needs its own",
    )
    failures: FailuresConfig = Field(
        default_factory=FailuresConfig,  # type: ignore[arg-type]
        description="failed events kept for `router failures` (inspect, redrive, purge): retention",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("sqlite://") or v.startswith(("postgresql://", "postgres://"))):
            raise ValueError(f"state must be sqlite:///PATH or postgresql://..., got {v.split(':')[0]}://...")
        from router.state.url import engine_url  # what ``router run`` does with it, without connecting

        try:
            engine_url(v, Path("."))
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("state: ")) from None
        return v


class LimitsConfig(Model):
    """Account-wide limits, like Lambda's regional quotas; the defaults follow the machine."""

    concurrent_executions: int | None = Field(
        None, ge=1, le=100_000,
        description="invocations running at once across all functions (sync callers over it get 429, "
        "pollers and async events wait); default 64 per usable CPU, at most 1,000 (Lambda's default)",
    )
    environment_memory: Size | None = Field(
        None,
        description="memory all execution environments may reserve together, each its function's memory; "
        "default 75% of the machine's (or the router's cgroup's) memory",
    )
    environment_wait: Duration = Field(
        1.0, ge=0.0, le=900.0,
        description="longest an invocation waits for an execution environment (never past the function's "
        "timeout): while the CPUs are saturated it waits for a warm one before another is started; while "
        "the memory budget is spent it waits for room, then gets 429",
    )
    cpu_scaling: bool = Field(
        True,
        description="size environments to the CPUs (wait for a warm one while the CPUs are saturated); "
        "false: one environment per concurrent invocation, as Lambda's on-demand scaling",
    )


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class AwsConfig(Model):
    region: str = "us-east-1"
    endpoint_url: str | None = None
    account_id: str = Field("000000000000", description="used to build function ARNs")

    @field_validator("endpoint_url")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return _optional_http_url(v)

    def function_arn(self, name: str) -> str:
        """The unqualified ARN of function ``name``, as Lambda writes it."""
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"


# --- destinations -------------------------------------------------------------------------------------


class FileDestinationConfig(Model):
    type: Literal["file"]
    path: str


class HttpDestinationConfig(Model):
    type: Literal["http"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 10.0

    _url = field_validator("url")(_http_url)


class FunctionDestinationConfig(Model):
    type: Literal["function"]
    function: str


class SqsDestinationConfig(Model):
    type: Literal["sqs"]
    queue_url: str

    _queue_url = field_validator("queue_url")(_http_url)


class SnsDestinationConfig(Model):
    """Publishes the record as JSON to an SNS topic, as Lambda's SNS destination (a FIFO topic gets the
    function's name as message group, ``requestId:condition`` as deduplication id)."""

    type: Literal["sns"]
    topic_arn: str = Field(description="arn:aws:sns:REGION:ACCOUNT:NAME")

    _topic_arn = field_validator("topic_arn")(_arn_of("sns", "an SNS topic"))


class EventBridgeDestinationConfig(Model):
    """Puts the record on an EventBridge event bus as Lambda's EventBridge destination does: source
    ``lambda``, detail-type ``Lambda Function Invocation Result - Success`` (or ``- Failure``), the
    record as its detail, the bus and the function as its resources."""

    type: Literal["eventbridge"]
    event_bus_arn: str = Field(description="arn:aws:events:REGION:ACCOUNT:event-bus/NAME")

    _bus_arn = field_validator("event_bus_arn")(_arn_of("events", "an EventBridge event bus"))


class S3DestinationConfig(Model):
    """Writes the record as a JSON object to an S3 bucket, as Lambda's S3 destination (on failure only):
    a function's failed async event under ``aws/lambda/async/FUNCTION/``, a stream's discarded batch
    (with its records as ``payload``) under ``aws/lambda/MAPPING-UUID/SHARD/``, then
    ``YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-UUID``."""

    type: Literal["s3"]
    bucket_arn: str = Field(description="arn:aws:s3:::BUCKET")

    @field_validator("bucket_arn")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if s3_bucket_of(v) is None:
            raise ValueError("not an S3 bucket ARN; expected arn:aws:s3:::BUCKET (a bucket name: 3-63 of "
                             "a-z 0-9 . -, no region or account)")
        return v


class AmqpDestinationConfig(Model):
    """Publishes the record as JSON to ``exchange`` with ``routing_key`` (persistent, publisher confirms,
    mandatory: a record no queue receives is a failed delivery, kept and retried)."""

    type: Literal["amqp"]
    url: str = Field(description="amqp://user:pass@host:5672/vhost (amqps:// for TLS)")
    exchange: str = Field("", description="exchange name; '' is the default exchange (routing_key = queue)")
    routing_key: str = ""
    timeout: Duration = Field(10.0, gt=0, description="time allowed to connect, publish and be confirmed")


DestinationConfig = Annotated[
    FileDestinationConfig
    | HttpDestinationConfig
    | FunctionDestinationConfig
    | SqsDestinationConfig
    | SnsDestinationConfig
    | EventBridgeDestinationConfig
    | S3DestinationConfig
    | AmqpDestinationConfig,
    Field(discriminator="type"),
]


# --- functions ----------------------------------------------------------------------------------------


class BackoffConfig(Model):
    initial: Duration = 1.0
    max: Duration = 300.0

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.initial <= 0:
            raise ValueError("initial must be greater than 0")
        if self.max < self.initial:
            raise ValueError(f"max ({self.max}s) must be at least initial ({self.initial}s)")
        return self


class DeadLetterConfig(Model):
    """Lambda's dead-letter queue (``DeadLetterConfig``) for a function's async events: an event that
    fails (retries exhausted, too old) is sent there as it came, its error in message attributes. An SQS
    standard queue (``queue_url``) or an SNS topic (``topic_arn``), as on Lambda."""

    queue_url: str | None = Field(None, description="URL of an SQS standard queue")
    topic_arn: str | None = Field(None, description="ARN of an SNS standard topic")

    _queue_url = field_validator("queue_url")(_optional_http_url)

    @model_validator(mode="after")
    def _one_target(self) -> DeadLetterConfig:
        if (self.queue_url is None) == (self.topic_arn is None):
            raise ValueError("a dead-letter queue needs exactly one of queue_url (SQS) or topic_arn (SNS)")
        return self

    @field_validator("topic_arn")
    @classmethod
    def _standard_topic(cls, v: str | None) -> str | None:
        if v is None:
            return v
        _arn_of("sns", "an SNS topic")(v)
        if is_fifo(v):
            raise ValueError("a dead-letter topic is an SNS standard topic here (a FIFO topic needs a "
                             "message group a failed event does not have); async.on_failure takes one")
        return v

    @field_validator("queue_url")
    @classmethod
    def _standard_queue(cls, v: str | None) -> str | None:
        if v is not None and is_fifo(v):
            raise ValueError("a dead-letter queue is an SQS standard queue here (a FIFO queue needs a "
                             "message group a failed event does not have); async.on_failure takes a FIFO "
                             "queue")
        return v


class AsyncConfig(Model):
    retries: int = Field(2, ge=0, le=100, description="retries after the first attempt (Lambda: 0..2)")
    max_event_age: Duration = Field(6 * 3600.0, ge=1.0, le=6 * 3600.0)
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    on_success: DestinationConfig | None = None
    on_failure: DestinationConfig | None = None
    dead_letter: DeadLetterConfig | None = Field(
        None, description="an SQS queue or SNS topic that gets each failed event as it came (Lambda's DLQ)")

    @field_validator("on_success")
    @classmethod
    def _no_s3_on_success(cls, v: DestinationConfig | None) -> DestinationConfig | None:
        if v is not None and v.type == "s3":
            raise ValueError("an S3 bucket is an on-failure destination only (as on Lambda); use it as "
                             "on_failure, or another type for on_success")
        return v


class HistoryConfig(Model):
    """A function's invocation history (``router.core.history``): kept in the state store, pruned."""

    enabled: bool = Field(True, description="record this function's invocations")
    payloads: bool = Field(False, description="also keep each invocation's event (payload)")
    max_payload: Size = Field(64 * 1024, ge=0, le=PAYLOAD_LIMIT,
                              description="longest payload kept; a longer one is cut and marked truncated")
    max_age: Duration = Field(86400.0, ge=60.0, description="rows older than this are pruned")
    max_count: int = Field(1000, ge=1, le=1_000_000, description="rows kept per function, the newest")


class FunctionLoggingConfig(Model):
    """A function's logging controls, as Lambda's LoggingConfig (LogFormat, ApplicationLogLevel,
    SystemLogLevel): the format of the START/END/REPORT lines and of the runtime's log records, and the
    levels below which records are dropped (JSON only, as on Lambda)."""

    log_format: Literal["Text", "JSON"] = Field(
        "Text", description="Text: START/END/REPORT lines and plain runtime output, as today; JSON: "
        "platform.start/platform.report objects and JSON records from the runtime's logger (Lambda's "
        "LogFormat); the runtimes see it as AWS_LAMBDA_LOG_FORMAT")
    application_log_level: Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"] | None = Field(
        None, description="JSON only: records of the function's logger (and JSON lines with a \"level\") "
        "below this level are dropped; default INFO (Lambda's ApplicationLogLevel, AWS_LAMBDA_LOG_LEVEL)")
    system_log_level: Literal["DEBUG", "INFO", "WARN"] | None = Field(
        None, description="JSON only: platform records below this level are dropped: INFO keeps "
        "platform.start and platform.report, DEBUG adds platform.runtimeDone, WARN drops them "
        "(Lambda's SystemLogLevel); default INFO")

    @model_validator(mode="after")
    def _levels_need_json(self) -> FunctionLoggingConfig:
        if self.log_format == "Text":
            given = [k for k in ("application_log_level", "system_log_level") if getattr(self, k) is not None]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} need log_format: JSON (Lambda filters log levels only in JSON "
                    "format), got log_format: Text; add log_format: JSON or remove the level")
        return self


class FunctionUrlCorsConfig(Model):
    """CORS of a function URL, as Lambda's ``Cors`` of ``CreateFunctionUrlConfig``."""

    allow_origins: list[str] = Field(default_factory=list, description="origins allowed, or ['*']")
    allow_methods: list[str] = Field(default_factory=list, description="methods allowed, or ['*']")
    allow_headers: list[str] = Field(default_factory=list, description="request headers allowed, or ['*']")
    expose_headers: list[str] = Field(default_factory=list, description="response headers a browser may read")
    max_age: int = Field(0, ge=0, le=86400, description="seconds a browser may cache a preflight answer")
    allow_credentials: bool = Field(False, description="cookies and authorization headers allowed")

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        allowed = ("GET", "PUT", "HEAD", "POST", "PATCH", "DELETE", "*")  # Lambda's AllowMethods values
        out = [m.upper() for m in v]
        bad = [m for m in out if m not in allowed]
        if bad:
            raise ValueError(f"unknown method {bad[0]!r}; use some of {', '.join(allowed)}")
        return out


class FunctionUrlConfig(Model):
    """A function URL: the function answers any method and path under its own base URL."""

    auth: Literal["NONE", "AWS_IAM"] = Field(
        description="NONE: anyone who reaches the port may call it; AWS_IAM: a SigV4 signature with a key "
                    "of server.invoke_keys, as the Invoke API checks it")
    cors: FunctionUrlCorsConfig | None = None
    invoke_mode: Literal["BUFFERED", "RESPONSE_STREAM"] = Field(
        "BUFFERED",
        description="BUFFERED: the function's whole response is answered at once (6 MB at most); "
                    "RESPONSE_STREAM: a function that streams (awslambda.streamifyResponse, or a runtime "
                    "posting in streaming mode) is answered as it writes, chunked; see README "
                    "'Response streaming'")


class HttpTargetConfig(Model):
    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    _url = field_validator("url")(_http_url)


class LambdaTargetConfig(Model):
    function_name: str
    qualifier: str | None = None
    region: str | None = None
    endpoint_url: str | None = None

    _endpoint_url = field_validator("endpoint_url")(_optional_http_url)

    @field_validator("function_name")
    @classmethod
    def _function_name(cls, v: str) -> str:
        problem = lambda_name_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v


ALIAS_NAME = re.compile(r"^(?!\d+$)[A-Za-z0-9_-]{1,128}$")
"""Lambda's alias names: letters, digits, ``-`` and ``_``, up to 128, not all digits."""


class AliasConfig(Model):
    """An alias of published versions (Lambda's alias with RoutingConfig), e.g.
    ``prod: {version: 3, weights: {4: 0.1}}``: 10% of the invocations run version 4, the rest version 3."""

    version: int = Field(ge=1, description="the published version the alias points to (router publish)")
    weights: dict[int, float] = Field(
        default_factory=dict,
        description="AdditionalVersionWeights: at most one other version and the share of invocations, "
        "0 to 1, that run it; chosen per invocation")
    description: str = ""

    @model_validator(mode="after")
    def _one_extra_version(self) -> AliasConfig:
        if len(self.weights) > 1:
            raise ValueError(f"weights takes one version (as Lambda's AdditionalVersionWeights), got "
                             f"{len(self.weights)}; keep one")
        for extra, weight in self.weights.items():
            if extra < 1:
                raise ValueError(f"weights: versions are numbers from 1, got {extra}")
            if extra == self.version:
                raise ValueError(f"weights: version {extra} is the alias's own version; name another one")
            if not 0.0 <= weight <= 1.0:
                raise ValueError(f"weights: the weight of version {extra} must be from 0 to 1, got {weight}")
        return self


class FunctionConfig(Model):
    # local function
    runtime: str | None = Field(None, description="python3.X | nodejsNN.x | provided")
    handler: str | None = Field(
        None, description="module.function (python), file.export (nodejs); passed as _HANDLER")
    code: str | None = Field(None, description="code directory, relative to the config file")
    # remote targets
    http: HttpTargetConfig | None = None
    # ``lambda`` is a Python keyword: the attribute is ``lambda_`` and the YAML key is ``lambda``.
    lambda_: LambdaTargetConfig | None = Field(None, alias="lambda")

    description: str = ""
    timeout: Duration = Field(3.0, gt=0, le=900.0)
    memory: int = Field(128, ge=128, le=10240, description="MB; enforced for local functions")
    environment: dict[str, str] = Field(default_factory=dict)
    concurrency: int | None = Field(None, ge=1, le=10000, description="reserved concurrency")
    provisioned: int = Field(0, ge=0, le=1000, description="environments kept warm")
    per_environment_concurrency: int = Field(
        1, ge=1, le=1600,
        description="invocations one execution environment takes at once, as Lambda Managed Instances' "
        "PerExecutionEnvironmentMaxConcurrency (AWS_LAMBDA_MAX_CONCURRENCY): python runs that many "
        "processes sharing the environment's /tmp, nodejs runs them concurrently in one process",
    )
    idle_timeout: Duration = Field(600.0, ge=1.0, description="reap idle environments after this")
    fork_start: bool = Field(
        True, description="python: start environments by forking a pre-initialised template process "
        "(false: a new interpreter for each); nodejs, provided: start them through that small process "
        "(fork and exec) rather than by forking the router (false: from the router)")
    snap_start: bool = Field(
        False, description="python: run the function's init once in a template and fork environments "
        "from it, honouring snapshot_restore_py hooks (as Lambda SnapStart)")
    run_as: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$",
        description="local functions, router running as root: the user (name or uid, optionally "
        ":group) the function's workers run as; give each function a user of its own to keep "
        "functions apart from each other and from the router (environments are then exec'd, not forked)")
    async_: AsyncConfig = Field(default_factory=AsyncConfig, alias="async")  # type: ignore[arg-type]
    recursive_loop: Literal["Terminate", "Allow"] = Field(
        "Terminate",
        description="Lambda's recursive loop detection: Terminate stops an event whose chain (counted in "
        "the X-Ray trace header's Lineage, carried through destinations, sqs and amqp) has already invoked "
        "this function 16 times; Allow lets it run on")
    history: HistoryConfig = Field(default_factory=HistoryConfig)  # type: ignore[arg-type]
    logging: FunctionLoggingConfig = Field(
        default_factory=FunctionLoggingConfig,  # type: ignore[arg-type]
        description="Lambda's logging controls: log_format, application_log_level, system_log_level")
    url: FunctionUrlConfig | None = Field(
        None, description="a function URL: http://HOST:PORT/lambda-url/FUNCTION/ answers any method and path")
    layers: list[str] = Field(
        default_factory=list, max_length=5,
        description="local functions: layer directories (relative to the config file), as Lambda's layers: "
        "python/, python/lib/python3.X/site-packages, nodejs/node_modules, nodejs/nodeNN/node_modules, "
        "bin/ and lib/ of each go on PYTHONPATH, NODE_PATH, PATH and LD_LIBRARY_PATH, a later layer "
        "before an earlier one; used in place (not copied); a requirements.txt or package.json at a "
        "layer's top is installed into the dependency cache")
    aliases: dict[str, AliasConfig] = Field(
        default_factory=dict,
        description="local functions: aliases of published versions (router publish), invoked as "
        "name:alias; each with version and optional weights")

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, v: dict[str, AliasConfig]) -> dict[str, AliasConfig]:
        for name in v:
            if not ALIAS_NAME.match(name):
                raise ValueError(f"alias name must be 1-128 letters, digits, '-' or '_' and not all digits, "
                                 f"got {name!r}")
        return v

    @field_validator("environment", mode="before")
    @classmethod
    def _stringify_env(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: ("" if val is None else str(val).lower() if isinstance(val, bool) else str(val))
                    for k, val in v.items()}
        return v

    @model_validator(mode="after")
    def _snap_start_is_for_python(self) -> FunctionConfig:
        if self.snap_start:
            if self.runtime is None or not _PYTHON_RUNTIME.match(self.runtime):
                raise ValueError(
                    f"snap_start is for python3.X functions, got runtime {self.runtime!r}; remove snap_start")
            if not self.fork_start:
                raise ValueError("snap_start needs fork_start (environments are forked from the snapshot); "
                                 "remove fork_start: false or snap_start: true")
            if self.per_environment_concurrency > 1:
                raise ValueError(
                    "snap_start and per_environment_concurrency > 1 do not go together (Lambda offers no "
                    "SnapStart on Managed Instances); remove one of them")
        return self

    @property
    def kind(self) -> Literal["local", "http", "lambda"]:
        if self.http is not None:
            return "http"
        if self.lambda_ is not None:
            return "lambda"
        return "local"

    @model_validator(mode="after")
    def _exactly_one_target(self) -> FunctionConfig:
        given = [k for k, v in (("runtime", self.runtime), ("http", self.http), ("lambda", self.lambda_))
                 if v is not None]
        if len(given) != 1:
            raise ValueError(
                "a function needs exactly one of 'runtime', 'http', 'lambda'"
                + (f", got {', '.join(given)}" if given else ", got none")
            )
        if self.runtime is not None:
            node = _NODE_RUNTIME.match(self.runtime)
            if node is not None and int(node.group(1)) < _NODE_MIN_MAJOR:
                raise ValueError(
                    f"unsupported runtime {self.runtime!r}; Node.js {_NODE_MIN_MAJOR} or later "
                    "(e.g. nodejs20.x)"
                )
            if self.runtime != "provided" and node is None and not _PYTHON_RUNTIME.match(self.runtime):
                raise ValueError(
                    f"unsupported runtime {self.runtime!r}; use python3.X (e.g. python3.11), "
                    "nodejsNN.x (e.g. nodejs20.x) or provided"
                )
            if self.code is None:
                raise ValueError("a local function needs 'code' (its code directory)")
            form = "file.export, e.g. index.handler" if node else "module.function, e.g. app.handler"
            if self.runtime != "provided" and not self.handler:
                kind = "nodejs" if node else "python"
                raise ValueError(f"a {kind} function needs 'handler' ({form})")
            if self.handler and self.runtime != "provided" and "." not in self.handler:
                raise ValueError(f"handler must be {form.partition(',')[0]}, got {self.handler!r}")
        if self.aliases and self.runtime is None:
            raise ValueError("aliases are for local functions (versions snapshot local code); remove "
                             "aliases or give the function a runtime")
        if self.provisioned and self.concurrency is not None and self.provisioned > self.concurrency:
            raise ValueError(
                f"provisioned ({self.provisioned}) cannot exceed concurrency ({self.concurrency})"
            )
        return self


# --- sources ------------------------------------------------------------------------------------------


class HmacAuthConfig(Model):
    type: Literal["hmac"]
    secret: str
    header: str = "X-Hub-Signature-256"
    prefix: str = "sha256="
    algorithm: Literal["sha256", "sha1", "sha512"] = "sha256"


class StandardWebhooksAuthConfig(Model):
    """Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature (v1,base64)."""

    type: Literal["standard_webhooks"]
    secret: str = Field(description="whsec_<base64> or the raw secret")
    tolerance: Duration = Field(300.0, description="accepted clock skew of webhook-timestamp")


class BearerAuthConfig(Model):
    type: Literal["bearer"]
    token: str


class ApiKeyAuthConfig(Model):
    type: Literal["api_key"]
    key: str
    header: str = "X-Api-Key"


WebhookAuthConfig = Annotated[
    HmacAuthConfig | StandardWebhooksAuthConfig | BearerAuthConfig | ApiKeyAuthConfig,
    Field(discriminator="type"),
]


class WebhookSourceConfig(Model):
    type: Literal["webhook"]
    path: str
    methods: list[str] = Field(default_factory=lambda: ["POST"])
    auth: WebhookAuthConfig | None = None
    payload: Literal["v2", "v1", "alb"] = Field(
        "v2", description="the event shape and response mapping: v2 (API Gateway HTTP API, payload format "
        "2.0), v1 (API Gateway REST API proxy integration) or alb (Application Load Balancer target)")
    alb_multi_value_headers: bool = Field(
        False, description="payload: alb only: multiValueHeaders and multiValueQueryStringParameters in "
        "the event and the response, as the target group attribute lambda.multi_value_headers.enabled")
    stream: bool = Field(
        False, description="sync routes only: a function that streams (awslambda.streamifyResponse) is "
        "answered as it writes, chunked, as API Gateway's response transfer mode STREAM; see README "
        "'Response streaming'")

    @model_validator(mode="after")
    def _multi_value_is_for_alb(self) -> WebhookSourceConfig:
        if self.alb_multi_value_headers and self.payload != "alb":
            raise ValueError(f"alb_multi_value_headers is for payload: alb, got payload: {self.payload}; "
                             "remove alb_multi_value_headers or set payload: alb")
        return self

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"path must start with '/', got {v!r}")
        reserved = ("/metrics", "/livez", "/healthz", "/readyz", "/lambda-url")
        if v.startswith(("/2015-03-31/", "/lambda-url/")) or v in reserved:
            raise ValueError(f"path {v!r} is reserved by the router")
        problem = webhook_path_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        allowed = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"}
        out = [m.upper() for m in v]
        bad = [m for m in out if m not in allowed]
        if bad:
            raise ValueError(f"unknown HTTP method {bad[0]!r}; use one of {', '.join(sorted(allowed))}")
        if not out:
            raise ValueError("methods cannot be empty")
        return out


class ScheduleSourceConfig(Model):
    type: Literal["schedule"]
    cron: str | None = Field(None, description="5 or 6 fields (second first when 6)")
    rate: Duration | None = Field(None, gt=0)
    timezone: str = "UTC"
    catch_up: Duration = Field(0.0, description="missed ticks younger than this fire late")

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleSourceConfig:
        if (self.cron is None) == (self.rate is None):
            raise ValueError("a schedule needs exactly one of 'cron' or 'rate'")
        return self


class SqsSourceConfig(Model):
    type: Literal["sqs"]
    queue_url: str
    batch_size: int = Field(10, ge=1, le=10000)
    batch_window: Duration = 0.0
    wait_time: Duration = Field(
        float(SQS_MAX_WAIT),
        json_schema_extra={"minimum": 1, "maximum": SQS_MAX_WAIT, "multipleOf": 1},
        description="the long poll's wait (SQS's WaitTimeSeconds): whole seconds, 1s to 20s (default 20s, "
                    "as Lambda). A stop or a reload of the route lets a long poll under way finish, so a "
                    "shorter wait makes them quicker, at the cost of more ReceiveMessage calls while the "
                    "queue is empty (one per poller per wait_time; SQS bills each request). Not 0s: short "
                    "polling would have the pollers of an empty queue ask without pause",
    )
    max_concurrency: int = Field(2, ge=2, le=1000)
    report_batch_item_failures: bool = False
    bisect_on_error: bool = Field(
        False,
        description="a batch whose invocation fails (error, timeout, invalid batchItemFailures) is split "
                    "in halves and retried in the same receive, down to the messages that fail alone; "
                    "only those stay on the queue (default false, as Lambda)",
    )

    _queue_url = field_validator("queue_url")(_http_url)

    @model_validator(mode="after")
    def _lambdas_batching_limits(self) -> SqsSourceConfig:
        # Lambda's limits for an SQS event source mapping (developer guide, "Lambda parameters for Amazon
        # SQS event source mappings"): a FIFO queue takes batches of at most 10 and no batching window;
        # a standard queue's window is 0..300 s, and a batch over 10 needs one (gathered across receives)
        if is_fifo(self.queue_url):
            if self.batch_size > SQS_MAX_RECEIVE:
                raise ValueError(f"batch_size: a FIFO queue takes at most {SQS_MAX_RECEIVE} messages a batch "
                                 f"(as on Lambda), got {self.batch_size}")
            if self.batch_window:
                raise ValueError(f"batch_window: a FIFO queue has no batching window (as on Lambda), got "
                                 f"{self.batch_window:g}s; remove it")
            return self
        if self.batch_window > MAX_BATCH_WINDOW:
            raise ValueError(f"batch_window: at most {MAX_BATCH_WINDOW:g}s (Lambda's "
                             f"MaximumBatchingWindowInSeconds), got {self.batch_window:g}s")
        if self.batch_size > SQS_MAX_RECEIVE and not self.batch_window:
            raise ValueError(f"batch_size: more than {SQS_MAX_RECEIVE} needs a batch_window to gather them "
                             f"in (as on Lambda: at least 1s), got batch_size {self.batch_size} and no "
                             "batch_window")
        return self

    @field_validator("wait_time", mode="before")
    @classmethod
    def _wait_time_sign(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool) and v < 1:
            raise ValueError(_wait_time_range(v))  # before the duration's own "cannot be negative"
        return v

    @field_validator("wait_time")
    @classmethod
    def _wait_time(cls, v: float) -> float:
        if not (1 <= v <= SQS_MAX_WAIT and v.is_integer()):
            raise ValueError(_wait_time_range(v))
        return v


def _wait_time_range(v: float) -> str:
    got = int(v) if float(v).is_integer() else v
    return (f"should be whole seconds from 1s to {SQS_MAX_WAIT}s (SQS's WaitTimeSeconds; 0s, short polling, "
            f"would have the pollers of an empty queue ask without pause), got {got}s")


class StreamSourceBase(Model):
    """Lambda's event source mapping for a stream (Kinesis, DynamoDB Streams); the defaults are Lambda's."""

    stream_arn: str
    starting_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "LATEST"
    starting_position_timestamp: float | None = Field(
        None, description="epoch seconds; required with AT_TIMESTAMP and refused otherwise")
    batch_size: int = Field(100, ge=1, le=10000)
    batch_window: Duration = Field(0.0, le=300, description="gather records for up to this long (max 300s)")
    parallelization: int = Field(1, ge=1, le=10, description="concurrent batches per shard")
    bisect_on_error: bool = False
    max_retry_attempts: int = Field(-1, ge=-1, le=10000, description="-1: retry until the record expires")
    max_record_age: Duration | Literal[-1] = Field(
        -1, description="-1: never; records older than this are not invoked (max 7 days)")
    report_batch_item_failures: bool = False
    on_failure: DestinationConfig | None = None
    tumbling_window: Duration = Field(
        0.0, ge=0, le=900, description="whole seconds (at most 15m; 0: none): windows aligned to the epoch "
        "by the records' arrival times, the function's returned state passed to each invocation of a window "
        "and a final invocation when it ends (Lambda's TumblingWindowInSeconds)")

    @model_validator(mode="after")
    def _stream_checks(self) -> StreamSourceBase:
        if self.starting_position == "AT_TIMESTAMP" and self.starting_position_timestamp is None:
            raise ValueError(
                "starting_position AT_TIMESTAMP needs starting_position_timestamp (epoch seconds)")
        if self.starting_position != "AT_TIMESTAMP" and self.starting_position_timestamp is not None:
            raise ValueError(
                f"starting_position_timestamp applies to starting_position AT_TIMESTAMP only, "
                f"got starting_position {self.starting_position}; remove it or use AT_TIMESTAMP")
        if self.max_record_age != -1 and not 0 < self.max_record_age <= 604800:
            raise ValueError(
                "max_record_age must be -1 (never) or more than 0s and at most 7d, "
                f"got {self.max_record_age}")
        if self.tumbling_window:
            if not float(self.tumbling_window).is_integer():
                raise ValueError(f"tumbling_window: whole seconds (Lambda's TumblingWindowInSeconds), got "
                                 f"{self.tumbling_window:g}s")
            if self.parallelization != 1:
                raise ValueError(f"tumbling_window needs parallelization: 1 (a window's state is the "
                                 f"shard's, as on Lambda), got parallelization: {self.parallelization}")
        return self


class KinesisSourceConfig(StreamSourceBase):
    type: Literal["kinesis"]

    _stream_arn = field_validator("stream_arn")(_arn_of("kinesis", "a Kinesis stream"))


class DynamodbStreamSourceConfig(StreamSourceBase):
    type: Literal["dynamodb_stream"]

    _stream_arn = field_validator("stream_arn")(_arn_of("dynamodb", "a DynamoDB stream"))

    @field_validator("starting_position")
    @classmethod
    def _no_timestamp(cls, v: str) -> str:
        if v == "AT_TIMESTAMP":
            raise ValueError(
                "DynamoDB Streams has no AT_TIMESTAMP starting position; use TRIM_HORIZON or LATEST")
        return v


class AmqpSourceConfig(Model):
    """RabbitMQ queue -> function, as Lambda's Amazon MQ (RabbitMQ) event source mapping."""

    type: Literal["amqp"]
    url: str = Field(description="amqp://user:password@host:port/vhost (amqps:// for TLS)")
    queue: str = Field(min_length=1, max_length=255)
    prefetch: int = Field(10, ge=1, le=65535, description="basic.qos: messages in flight at most")
    batch_size: int = Field(
        100, ge=1, le=10000,
        description="messages per invocation (Lambda: 100); at most prefetch, smaller when not given",
    )
    batch_window: Duration = Field(0.5, ge=0.0, le=300.0,
                                   description="gather a batch for up to this long (Lambda: 500ms)")
    on_error: Literal["dead_letter", "requeue"] = Field(
        "dead_letter",
        description="failed batch: reject to the queue's dead-letter exchange, or requeue after a delay",
    )
    requeue_delay: Duration = Field(5.0, gt=0.0, le=86400.0,
                                    description="on_error: requeue waits this long before a retry")
    max_redeliveries: int = Field(3, ge=0, le=10000,
                                  description="on_error: requeue: then the message is dead-lettered")
    bisect_on_error: bool = Field(
        True,
        description="a batch whose invocation fails (error, timeout) is split in halves and retried, "
                    "down to the messages that fail alone; only those take the on_error path",
    )
    declare: bool = Field(
        False, description="false (default, as Lambda): consume the queue as it exists (a passive check; "
        "a missing queue is an error naming it); true: the router declares it with durable, queue_type "
        "and arguments")
    durable: bool = Field(True, description="with declare: true")
    queue_type: Literal["classic", "quorum"] = Field("classic", description="with declare: true")
    arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="with declare: true: queue arguments, e.g. x-dead-letter-exchange, x-delivery-limit, "
        "x-max-length",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from router.amqp import check_url

        problem = check_url(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _combinations(self) -> AmqpSourceConfig:
        if "batch_size" not in self.model_fields_set:
            self.batch_size = min(self.batch_size, self.prefetch)
        elif self.batch_size > self.prefetch:
            raise ValueError(
                f"batch_size ({self.batch_size}) cannot exceed prefetch ({self.prefetch}): a batch is "
                "gathered from the messages the broker lets the router hold; raise prefetch"
            )
        shape = sorted({"durable", "queue_type", "arguments"} & self.model_fields_set)
        if shape and not self.declare:
            raise ValueError(
                f"{', '.join(shape)} describe{'s' if len(shape) == 1 else ''} the queue the router "
                "declares, and it declares none unless declare: true (an existing queue is consumed as "
                "it is); add declare: true, or remove " + ", ".join(shape))
        if "x-queue-type" in self.arguments:
            raise ValueError("arguments: set queue_type instead of x-queue-type")
        if self.queue_type == "quorum" and not self.durable:
            raise ValueError("a quorum queue is always durable; remove durable: false")
        if "x-delivery-limit" in self.arguments and self.queue_type != "quorum":
            raise ValueError("arguments.x-delivery-limit works on quorum queues only; "
                             "set queue_type: quorum, or use on_error: requeue with max_redeliveries")
        return self


SourceConfig = Annotated[
    WebhookSourceConfig
    | ScheduleSourceConfig
    | SqsSourceConfig
    | KinesisSourceConfig
    | DynamodbStreamSourceConfig
    | AmqpSourceConfig,
    Field(discriminator="type"),
]

class RouteConfig(Model):
    name: str
    source: SourceConfig
    function: str
    invocation: Literal["sync", "async"] | None = Field(
        None, description="webhook/schedule default: sync; pollers are always sync"
    )
    input: Any = Field(None, description="constant event instead of the source's own event")
    filters: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"route name must be 1-64 of A-Z a-z 0-9 _ -, got {v!r}")
        return v

    @property
    def invocation_type(self) -> Literal["sync", "async"]:
        return self.invocation or "sync"

    @model_validator(mode="after")
    def _stream_is_sync(self) -> RouteConfig:
        if isinstance(self.source, WebhookSourceConfig) and self.source.stream and self.invocation == "async":
            raise ValueError("source.stream streams the function's response to the caller, which an async "
                             "route does not wait for; remove stream or set invocation: sync")
        return self


# --- root ---------------------------------------------------------------------------------------------


class RouterConfig(Model):
    version: Literal[1] = 1
    server: ServerConfig = Field(default_factory=ServerConfig)  # type: ignore[arg-type]
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    state: StateConfig = Field(
        default_factory=StateConfig,  # type: ignore[arg-type]
        description="the state store: a URL (sqlite:///REL/PATH, sqlite:////ABS/PATH, postgresql://...) "
        "or a mapping with url, durability and write_timeout",
    )
    aws: AwsConfig = Field(default_factory=AwsConfig)  # type: ignore[arg-type]
    limits: LimitsConfig = Field(default_factory=LimitsConfig)  # type: ignore[arg-type]
    functions: dict[str, FunctionConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    async_queue: str | None = Field(
        None,
        description="amqp://... : async invocations go through durable RabbitMQ queues "
        "(router.async.<function>) instead of the state store, so several replicas share the work",
    )

    # Set by the loader to the config file's directory; not part of the YAML or the schema.
    _config_dir: Path | None = PrivateAttr(default=None)
    # Set by the loader: the environment values in text settings (value -> variable name).
    _secrets: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def secrets(self) -> dict[str, str]:
        """Every value the config read from the environment into a text setting, with the variable it
        came from; ``router.redaction.install`` makes the process redact them everywhere."""
        return self._secrets

    @property
    def config_dir(self) -> Path:
        """Directory that relative paths in the config (code dirs, files, sqlite) are relative to:
        the config file's directory, or the current directory for a config not loaded from a file."""
        return self._config_dir if self._config_dir is not None else Path.cwd()

    @field_validator("functions")
    @classmethod
    def _function_names(cls, v: dict[str, FunctionConfig]) -> dict[str, FunctionConfig]:
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"function name must be 1-64 of A-Z a-z 0-9 _ -, got {name!r}")
        return v

    @field_validator("state", mode="before")
    @classmethod
    def _state_url(cls, v: Any) -> Any:
        return {"url": v} if isinstance(v, str) else v  # ``state: URL`` is short for ``state: {url: URL}``

    @field_validator("async_queue")
    @classmethod
    def _async_queue(cls, v: str | None) -> str | None:
        if not v:
            return None  # ``async_queue: ${ASYNC_QUEUE:-}`` left empty: the state store
        if not v.startswith(("amqp://", "amqps://")):
            raise ValueError(f"must be an amqp:// or amqps:// URL (RabbitMQ), got {v.split(':')[0]}://...")
        return v
