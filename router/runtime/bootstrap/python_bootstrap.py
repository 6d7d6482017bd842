# mypy: allow-untyped-defs, allow-untyped-calls
"""Lambda Python runtime bootstrap used by the router's execution environments.

Standalone and stdlib only: it runs under the function's interpreter (python3.X), not the router's
package. It behaves like AWS's Python runtime interface client (awslambdaric): the handler named by
``_HANDLER`` is imported once, init errors are posted to ``/runtime/init/error``, then the loop is
``/invocation/next`` -> ``handler(event, context)`` -> ``/response`` or ``/error``. Error objects,
the context object and the log line format follow awslambdaric. Imports that only errors need are lazy
so a cold start stays short; the Runtime API connection is kept alive between requests. It speaks
HTTP/1.1 over a plain socket: http.client would pull in the email package, a third of the start-up.

``main`` is an exec'd worker's entry point. A worker forked from a template (``python_template.py``,
which imports this module) runs the same steps: ``init_and_serve``, or with snap_start ``load_handler``
in the template and ``serve`` in each forked worker.
"""

import json
import logging
import os
import socket
import sys
import time

_API = "/2018-06-01/runtime"
_ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
_MEMORY_HEADER = "Router-Memory"
"""The worker's own peak resident set and thread count (``VmHWM`` kB and ``Threads`` of
/proc/self/status), posted with each result: the router reads Max Memory Used from it instead of
reading the file itself after every invocation, on its busy event loop."""
_DURATION_HEADER = "Router-Duration"
"""Microseconds from taking the event to posting its result, by this process's clock, posted with each
result: what the router's pool counts as the environment's busy time (its own clock would add the time
the result waits for the router's busy event loop to read it)."""
_clock_ns = time.perf_counter_ns  # taken before the function's code runs: its fake clocks stay its own
RUNTIME_FD_VAR = "_ROUTER_RUNTIME_FD"  # router.runtime.launch.RUNTIME_FD_VAR (this file runs standalone)
_ENSURE_ASCII = sys.version_info < (3, 12)  # awslambdaric keeps unicode as-is from python3.12 on
_ERROR_LOG_LINE_TERMINATE = "\r"
_ERROR_LOG_IDENT = "\u00a0"
_UNHANDLED_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function code. "
    "However, in rare cases, a Lambda runtime update can cause unexpected function behavior. "
    "For functions using managed runtimes, runtime updates can be triggered by a function change, "
    "or can be applied automatically. To determine if the runtime has been updated, check the runtime "
    "version in the INIT_START log entry. If this error correlates with a change in the runtime "
    "version, you may be able to mitigate this error by temporarily rolling back to the previous "
    "runtime version. For more information, see "
    "https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html\r"
)

_request_id = ""  # the invocation being handled, for the log lines


class FaultError(Exception):
    """A runtime fault with Lambda's errorType (Runtime.ImportModuleError, Runtime.MarshalError ...)."""

    def __init__(self, error_type, msg, trace=None):
        super().__init__(msg)
        self.error_type = error_type
        self.msg = msg
        self.trace = trace


# --- the Runtime API client ---------------------------------------------------------------------------


class _Headers(dict):  # type: ignore[type-arg]
    """Response headers; ``get`` is case-insensitive like http.client's."""

    def get(self, key, default=None):
        return dict.get(self, key.lower(), default)


class RuntimeClient:
    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self._address = (host.strip("[]"), int(port))
        self._host = address
        self._sock = socket.socket()  # replaced by _connect
        self._connected = False
        self._buf = b""
        self._status = None  # /proc/self/status, opened by the process that posts (a fork opens its own)
        self._status_pid = 0
        self._event_at = 0  # _clock_ns() when the event in hand arrived (_DURATION_HEADER)

    def _memory(self):
        """``_MEMORY_HEADER``'s value, read now (after the result is serialised: that may raise the
        peak too), or None where there is no /proc."""
        pid = os.getpid()
        if self._status_pid != pid:
            self._status_pid = pid
            try:
                self._status = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._status = None
        if self._status is None:
            return None
        try:
            text = os.pread(self._status, 8192, 0)
            start = text.index(b"VmHWM:") + 6
            kb = int(text[start:text.index(b"kB", start)])
            start = text.index(b"Threads:") + 8
            threads = int(text[start:text.index(b"\n", start)])
        except (OSError, ValueError):
            return None
        return f"{kb} {threads}"

    def adopt(self, fd):
        """Talk over ``fd``, a connected socket the router handed this process at start, until the
        router ends it; then over TCP (``_connect``) like any other client."""
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)  # the function's child processes do not get it
        self._sock, self._buf, self._connected = sock, b"", True

    def _connect(self):
        sock = socket.create_connection(self._address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._buf, self._connected = sock, b"", True

    def _read_until(self, marker):
        while marker not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("runtime API closed the connection")
            self._buf += chunk
        head, _, self._buf = self._buf.partition(marker)
        return head

    def _read_exactly(self, n):
        while len(self._buf) < n:
            chunk = self._sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("runtime API closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _request(self, method, path, body, headers):
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}", f"Content-Length: {len(body)}"]
        lines.extend(f"{k}: {v}" for k, v in headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def _response(self):
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        parsed = _Headers()
        for line in head[1:]:
            key, _, value = line.partition(":")
            parsed[key.strip().lower()] = value.strip()
        length = parsed.get("content-length")
        if length is not None:
            data = self._read_exactly(int(length))
        elif parsed.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                chunk = self._read_exactly(size + 2)[:-2]
                if size == 0:
                    break
                data += chunk
        else:
            data = b""
        if parsed.get("connection", "").lower() == "close":
            self._sock.close()
            self._connected = False
        return status, parsed, data

    def _call(self, method, path, body=b"", headers=None):
        for attempt in (1, 2):
            try:
                if not self._connected:
                    self._connect()
                self._sock.sendall(self._request(method, path, body, headers or {}))
                return self._response()
            except (ConnectionError, OSError, ValueError, IndexError):
                # A kept-alive connection the server closed: reconnect once.
                self._sock.close()
                self._connected = False
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def next(self):
        return self._next_answer(*self._call("GET", _API + "/invocation/next"))

    def _next_answer(self, status, headers, body):
        if status != 200:
            raise RuntimeError(f"runtime API: /invocation/next answered {status}: {body[:200]!r}")
        self._event_at = _clock_ns()
        return headers, body

    def post_and_next(self, request_id, payload, error_type=None):
        """Post a result and ask for the next event in one write (HTTP/1.1 pipelining): the worker
        then sleeps until the next event instead of waking up once more for the 202 in between."""
        kind = "response" if error_type is None else "error"
        path = f"{_API}/invocation/{request_id}/{kind}"
        headers = {"Content-Type": "application/json"}
        if error_type is not None:
            headers[_ERROR_TYPE_HEADER] = error_type
        memory = self._memory()
        if memory is not None:
            headers[_MEMORY_HEADER] = memory
        headers[_DURATION_HEADER] = str((_clock_ns() - self._event_at) // 1000)
        if self._connected:
            try:
                self._sock.sendall(self._request("POST", path, payload, headers)
                                   + self._request("GET", _API + "/invocation/next", b"", {}))
                self._response()
                if self._connected:
                    return self._next_answer(*self._response())
            except (ConnectionError, OSError, ValueError, IndexError):
                self._sock.close()
                self._connected = False
            else:
                return self.next()  # the server closed the connection after the post
        # The kept-alive connection was gone: post again on a new one (the router ignores a repeat).
        self._call("POST", path, payload, headers)
        return self.next()

    def post_init_error(self, error, error_type=None):
        """Post an init error; ``error_type`` overrides the header (e.g. Runtime.AfterRestoreError)."""
        headers = {"Content-Type": "application/json", _ERROR_TYPE_HEADER: error_type or error["errorType"]}
        memory = self._memory()  # the init's peak: the process exits right after the post
        if memory is not None:
            headers[_MEMORY_HEADER] = memory
        self._call("POST", _API + "/init/error", _to_json(error).encode(), headers)


# --- the context object (as awslambdaric's LambdaContext) ---------------------------------------------


class CognitoIdentity:
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]
    cognito_identity_id: object
    cognito_identity_pool_id: object

    def __repr__(self):
        return (f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
                f"cognito_identity_pool_id={self.cognito_identity_pool_id}])")


class Client:
    __slots__ = ["app_package_name", "app_title", "app_version_code", "app_version_name", "installation_id"]


class ClientContext:
    __slots__ = ["client", "custom", "env"]


def _obj_from_dict(cls, values):
    if values is None:
        return None
    obj = cls()
    for name in cls.__slots__:
        setattr(obj, name, values.get(name))
    return obj


class LambdaContext:
    def __init__(self, request_id, client_context, cognito_identity, deadline_ms, invoked_function_arn):
        env = os.environ
        self.aws_request_id = request_id
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        # A string, exactly as in Lambda's Python runtime (it reads the environment variable).
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = None
        self.client_context = _obj_from_dict(ClientContext, client_context)
        if self.client_context is not None:
            self.client_context.client = _obj_from_dict(Client, self.client_context.client)
        self.identity = _obj_from_dict(CognitoIdentity, {})
        if cognito_identity is not None:
            self.identity.cognito_identity_id = cognito_identity.get("cognitoIdentityId")
            self.identity.cognito_identity_pool_id = cognito_identity.get("cognitoIdentityPoolId")
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        remaining = self._deadline_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (f"LambdaContext([aws_request_id={self.aws_request_id},"
                f"log_group_name={self.log_group_name},log_stream_name={self.log_stream_name},"
                f"function_name={self.function_name},memory_limit_in_mb={self.memory_limit_in_mb},"
                f"function_version={self.function_version},"
                f"invoked_function_arn={self.invoked_function_arn},"
                f"client_context={self.client_context},identity={self.identity}])")


def _parse_json_header(value, name):
    try:
        return json.loads(value)
    except Exception as e:
        raise FaultError("Runtime.LambdaContextUnmarshalError",
                         f"Unable to parse {name} JSON: {e}") from None


# --- marshalling and errors ---------------------------------------------------------------------------


# Lambda's Python runtime encodes results with simplejson (awslambdaric's lambda_runtime_marshaller): a
# Decimal as its exact digits (NaN as NaN), bytes as UTF-8 text, an object with ``_asdict()`` (a namedtuple
# too) as that dict.
# The same here with the standard library: a Decimal is first written as a marker string, whose JSON form
# is then replaced with the digits (the marker holds a random tag no result can hold by chance).
_RAW_MARK = f"\x00raw-{os.urandom(8).hex()}:"
_raw_numbers: "list[str]" = []  # the Decimals' digits of the result being encoded


def _default(obj):
    import decimal

    if isinstance(obj, decimal.Decimal):
        if obj.is_nan():
            return float("nan")
        _raw_numbers.append(str(obj))
        return f"{_RAW_MARK}{len(_raw_numbers) - 1}"
    if isinstance(obj, bytes):
        return obj.decode("utf-8")
    as_dict = getattr(obj, "_asdict", None)
    if callable(as_dict):
        return _namedtuples_as_objects(as_dict())
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(default=_default, ensure_ascii=_ENSURE_ASCII)
_LEAVES = frozenset((str, int, float, bool, type(None)))


def _namedtuples_as_objects(obj, path=None):
    """``obj`` with each namedtuple (a tuple with ``_asdict()``) in it as that dict, as simplejson's
    ``namedtuple_as_object`` writes it (the standard library's encoder writes any tuple as an array before
    ``default`` sees it). Containers without one are the same objects, not copies; a container met again
    on its own path (a cycle) is left for the encoder to refuse as it would. Measured: about half the
    encoding's own time for a result of many small objects (10,000 dicts), ~1 us for a small result."""
    if type(obj) in _LEAVES:
        return obj
    if path is None:
        path = set()
    key = id(obj)
    if key in path:
        return obj
    if isinstance(obj, dict):
        pairs, copy = obj.items(), dict
    elif isinstance(obj, (list, tuple)):
        as_dict = getattr(obj, "_asdict", None) if isinstance(obj, tuple) else None
        if callable(as_dict):
            path.add(key)
            try:
                return _namedtuples_as_objects(as_dict(), path)
            finally:
                path.discard(key)
        pairs, copy = enumerate(obj), list  # type: ignore[assignment]  # both: (key, value) and a copier
    else:
        return obj
    changed = None
    entered = False
    for k, v in pairs:
        if type(v) in _LEAVES:
            continue
        if not entered:
            path.add(key)
            entered = True
        w = _namedtuples_as_objects(v, path)
        if w is not v:
            if changed is None:
                changed = copy(obj)
            changed[k] = w
    if entered:
        path.discard(key)
    return obj if changed is None else changed


def _to_json(obj):
    try:
        text = _ENCODER.encode(_namedtuples_as_objects(obj))
        for i, digits in enumerate(_raw_numbers):
            text = text.replace(_ENCODER.encode(f"{_RAW_MARK}{i}"), digits, 1)
        return text
    finally:
        _raw_numbers.clear()


def _make_error(message, error_type, stack_trace, request_id=None):
    return {
        "errorMessage": message if message else "",
        "errorType": error_type if error_type else "",
        "requestId": request_id if request_id is not None else "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def _error_from_exception(exc, request_id=None):
    import traceback

    # As awslambdaric: the frames as plain (file, line, name, text) tuples, so no column markers (the
    # ``~~~^^^`` lines of Python 3.11+) in the stack trace.
    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(exc.__traceback__)]
    here = os.path.abspath(__file__)
    while frames and os.path.abspath(frames[0][0]) == here:
        frames = frames[1:]
    trace = traceback.format_list(frames)  # type: ignore[arg-type]  # a line number may be None, as there
    return _make_error(str(exc), type(exc).__name__, trace, request_id)


def _log_error(error):
    """Write the error to stdout as awslambdaric does: one record, lines joined by CR (in JSON format,
    one object: timestamp, level ERROR and the error's fields)."""
    if _json_format():
        record = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "level": "ERROR", **error}
        sys.stdout.write(_to_json(record) + "\n")
        return
    description = "[ERROR]"
    if error.get("errorType"):
        description += " " + error["errorType"]
    if error.get("errorMessage"):
        if error.get("errorType"):
            description += ":"
        description += " " + error["errorMessage"]
    lines = [description]
    stack = error.get("stackTrace")
    if stack is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack:
            if element == "":
                lines.append("")
                continue
            for line in element.splitlines():
                stripped = line.lstrip(" ")
                lines.append(_ERROR_LOG_IDENT * (len(line) - len(stripped)) + stripped)
    sys.stdout.write(_ERROR_LOG_LINE_TERMINATE.join(lines) + "\n")


# --- logging ------------------------------------------------------------------------------------------


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _request_id
        return True


def _json_format():
    """AWS_LAMBDA_LOG_FORMAT=JSON (the function's log_format), read as awslambdaric does."""
    return (os.environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"


# LogRecord attributes that are not extra fields (awslambdaric's _RESERVED_FIELDS).
_RESERVED_FIELDS = frozenset((
    "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module", "exc_info",
    "exc_text", "stack_info", "lineno", "funcName", "created", "msecs", "relativeCreated", "thread",
    "threadName", "processName", "process", "aws_request_id", "tenant_id", "_frame_type",
))


class _JsonFormatter(logging.Formatter):
    """awslambdaric's JsonFormatter: timestamp, level (WARNING, CRITICAL as Python names them), message,
    logger, requestId; stackTrace, errorType, errorMessage and location with an exception; then the
    record's extra fields; None values left out."""

    def format(self, record):
        import traceback

        levelno = min(50, max(0, record.levelno)) // 10 * 10
        record.levelno = levelno
        record.levelname = logging.getLevelName(levelno)
        message = record.msg  # a dict logged alone stays an object
        result = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),  # whole seconds
            "level": record.levelname,
            "message": message if isinstance(message, dict) and not record.args else record.getMessage(),
            "logger": record.name,
        }
        exc = record.exc_info
        if exc:
            result["stackTrace"] = traceback.format_tb(exc[2])
            result["errorType"] = exc[0].__name__
            result["errorMessage"] = str(exc[1])
        result["requestId"] = getattr(record, "aws_request_id", None)
        if exc:
            result["location"] = f"{record.pathname}:{record.funcName}:{record.lineno}"
        for key, value in record.__dict__.items():
            if key not in _RESERVED_FIELDS and key not in result:
                result[key] = value
        return json.dumps({k: v for k, v in result.items() if v is not None}, ensure_ascii=False,
                          default=str) + "\n"


class _StdoutHandler(logging.Handler):
    def emit(self, record):
        try:
            sys.stdout.write(self.format(record))
        except Exception:
            self.handleError(record)


def _setup_logging():
    logging.Formatter.converter = time.gmtime
    handler = _StdoutHandler()
    handler.setFormatter(_JsonFormatter() if _json_format() else logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
        "%Y-%m-%dT%H:%M:%S",
    ))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    raw = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    level = {None: "", "TRACE": "DEBUG"}.get(raw, raw or "").upper()
    if level in logging._nameToLevel:
        root.setLevel(level)


# --- handler import -----------------------------------------------------------------------------------


def _get_handler(handler):
    import importlib

    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultError("Runtime.MalformedHandlerName", f"Bad handler '{handler}': {e}") from None
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultError("Runtime.BuiltInModuleConflict",
                             f"Cannot use built-in module {modname} as a handler module")
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultError("Runtime.ImportModuleError",
                         f"Unable to import module '{modname}': {e}") from None
    except SyntaxError as e:
        trace = [f'  File "{e.filename}" Line {e.lineno}\n    {e.text}']
        raise FaultError("Runtime.UserCodeSyntaxError",
                         f"Syntax error in module '{modname}': {e}", trace) from None
    try:
        return getattr(module, fname)
    except AttributeError:
        raise FaultError("Runtime.HandlerNotFound",
                         f"Handler '{fname}' missing on module '{modname}'") from None


# --- the loop -----------------------------------------------------------------------------------------


def _handle(client, request_handler, headers, body):
    """Run one invocation, post its result and return the next event (headers, body)."""
    global _request_id
    request_id = headers.get("Lambda-Runtime-Aws-Request-Id") or ""
    _request_id = request_id
    trace_id = headers.get("Lambda-Runtime-Trace-Id")
    if trace_id is not None:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    error = None
    try:
        client_context = headers.get("Lambda-Runtime-Client-Context")
        cognito = headers.get("Lambda-Runtime-Cognito-Identity")
        context = LambdaContext(
            request_id,
            _parse_json_header(client_context, "Client Context") if client_context else None,
            _parse_json_header(cognito, "Cognito Identity") if cognito else None,
            int(headers.get("Lambda-Runtime-Deadline-Ms") or 0),
            headers.get("Lambda-Runtime-Invoked-Function-Arn"),
        )
        if (headers.get("Content-Type") or "application/json") == "application/json":
            try:
                event = json.loads(body)
            except Exception as e:
                raise FaultError("Runtime.UnmarshalError", f"Unable to unmarshal input: {e}") from None
        else:
            event = body
        response = request_handler(event, context)
        if isinstance(response, bytes):
            payload = response
        else:
            try:
                payload = _to_json(response).encode()
            except Exception as e:
                raise FaultError("Runtime.MarshalError", f"Unable to marshal response: {e}") from None
    except FaultError as e:
        error = _make_error(e.msg, e.error_type, e.trace, request_id)
    except Exception as e:
        error = _error_from_exception(e, request_id)
    if error is not None:
        _log_error(error)
    # Everything the function printed must reach the router before the result does.
    sys.stdout.flush()
    sys.stderr.flush()
    if error is not None:
        return client.post_and_next(request_id, _to_json(error).encode(), error["errorType"])
    return client.post_and_next(request_id, payload)


def _apply_router_limits():
    """Limits the router asks its own bootstrap to set on itself, before any user code runs.

    The router spawns this worker without a ``preexec_fn`` (so Python can vfork), and hands over:
    ``_ROUTER_RLIMIT_AS`` (the memory limit as an address-space cap, in bytes),
    ``_ROUTER_PARENT_PID`` (a check that the router did not die before this ran; the worker becomes
    the subreaper of its descendants, so an orphan, e.g. a double-forked daemon, stays in its tree and
    ends with it) and ``_ROUTER_WATCHED`` (the router's watchdog ends this worker's whole tree when the
    router dies; without it the worker dies with the router by PR_SET_PDEATHSIG, which kills it alone).
    All are removed from the environment the handler sees.
    """
    limit = os.environ.pop("_ROUTER_RLIMIT_AS", None)
    parent = os.environ.pop("_ROUTER_PARENT_PID", None)
    watched = os.environ.pop("_ROUTER_WATCHED", None)
    if limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    if parent:
        try:
            import ctypes
            import signal

            prctl = ctypes.CDLL(None).prctl
            prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
            # PR_SET_PDEATHSIG. Watched: stop (not die) when the router dies, so the lost Runtime API
            # connection cannot end this worker, orphaning its children to init, before the watchdog
            # ends the whole tree.
            prctl(1, signal.SIGSTOP if watched else signal.SIGKILL)
        except (OSError, AttributeError):  # not Linux: the lost Runtime API connection ends us
            pass
        if os.getppid() != int(parent):
            os._exit(1)  # the router died before the signal was armed (or this ran)


def add_task_root():
    """The function's code directory on ``sys.path`` (PYTHONPATH already put it there when exec'd)."""
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)


def load_handler():
    """Init: logging and the handler's import (the function's module-level code runs here).

    Returns ``(request_handler, None)``, or ``(None, error)`` with the error object to report."""
    try:
        _setup_logging()
        return _get_handler(os.environ.get("_HANDLER", "")), None
    except FaultError as e:
        return None, _make_error(e.msg, e.error_type, e.trace)
    except Exception as e:
        return None, _error_from_exception(e)


def log_init_error(error):
    """Write an init error to the function's output as awslambdaric does: the warning, then the error."""
    logging.warning(_UNHANDLED_WARNING)
    _log_error(error)
    sys.stdout.flush()


def serve(client, request_handler):
    """The invoke loop: never returns."""
    try:
        headers, body = client.next()
        while True:
            headers, body = _handle(client, request_handler, headers, body)
    except (ConnectionError, OSError):  # the Runtime API is gone: the router died
        _end_descendants()
        raise


def _end_descendants():
    """End everything this worker started before it exits for a lost Runtime API, or it would be
    orphaned to init (this worker is their subreaper). The router's watchdog does the same from outside;
    a worker that notices first must not leave its children behind for the moment between. The
    router's own ``proctree`` (stdlib only) does it, loaded from beside this file: the worker may run
    another Python than the router, with no ``router`` package to import."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "proctree.py")
    spec = importlib.util.spec_from_file_location("_router_proctree", path)
    if spec is None or spec.loader is None:
        return  # not shipped beside this file: the router's watchdog remains
    proctree = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(proctree)
    proctree.kill_tree(os.getpid(), include_root=False)


def _run_workers(count):
    """Several invocations at once (``AWS_LAMBDA_MAX_CONCURRENCY`` > 1), as Lambda Managed Instances'
    Python runtime does: ``count`` worker processes, each with its own init and its own connection
    to the environment's Runtime API, sharing its /tmp. This process supervises them: a worker that
    dies is replaced by a new one (its invocation ends with it: the router sees its connection go),
    unless workers keep dying (``count`` deaths within a second: then the environment ends). Returns
    in each worker; never in the supervisor. Workers die with the supervisor (PR_SET_PDEATHSIG). The
    supervisor is the environment's subreaper: orphans of the workers' children end up its children
    too, and are reaped here without being taken for workers."""
    import collections
    import signal
    import time

    deaths: collections.deque[float] = collections.deque(maxlen=count)
    workers = set()

    def start():
        pid = os.fork()
        if pid:
            workers.add(pid)
        else:
            try:
                import ctypes

                ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the supervisor
            except (OSError, AttributeError):
                pass
            return True
        return False

    for _ in range(count):
        if start():
            return
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid not in workers:
            continue  # an orphan re-parented here, now ended
        workers.discard(pid)
        deaths.append(time.monotonic())
        if len(deaths) == count and deaths[-1] - deaths[0] < 1.0:
            code = os.waitstatus_to_exitcode(status)
            sys.stderr.write(f"{count} runtime workers exited within a second (the last: "
                             f"{'signal ' + str(-code) if code < 0 else 'exit status ' + str(code)}); "
                             "ending the environment\n")
            sys.stderr.flush()
            os._exit(1)
        if start():
            return


def runtime_client():
    """The client of this process's Runtime API: over the socket the router handed it at start
    (``RUNTIME_FD_VAR``, removed from the environment: the function does not see it), else over TCP to
    ``AWS_LAMBDA_RUNTIME_API``."""
    fd = os.environ.pop(RUNTIME_FD_VAR, None)
    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    if fd:
        client.adopt(int(fd))
    return client


def init_and_serve():
    """Init, then the invoke loop (an init error is posted and ends the process)."""
    try:
        workers = int(os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY") or 1)
    except ValueError:
        workers = 1
    if workers > 1:
        _run_workers(workers)
    client = runtime_client()
    add_task_root()
    request_handler, error = load_handler()
    if error is not None:
        log_init_error(error)
        client.post_init_error(error)
        sys.exit(1)
    serve(client, request_handler)


def _blank_environ_block():
    """``/proc/PID/environ`` shows the strings this process was exec'd with, the function's variables
    (its secrets among them), to any process of the same uid. Move every variable to a copy of its own
    (``setenv``: the C library's ``getenv`` and child processes still see them), then blank the block.
    (A forked environment shows its template's block instead: start-up variables only.)"""
    try:
        import ctypes

        for key, value in os.environ.items():
            os.putenv(key, value)
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50 and 51)
        if 0 < start < end and end - start < 64 * 1024 * 1024:
            ctypes.memset(start, 0, end - start)
    except (OSError, ValueError, AttributeError, IndexError):  # not Linux
        pass


def main():
    _apply_router_limits()
    _blank_environ_block()
    init_and_serve()


if __name__ == "__main__":
    main()
