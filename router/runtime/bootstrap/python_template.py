# mypy: allow-untyped-defs, allow-untyped-calls
"""Template process of fork-started Python environments (standalone, stdlib only).

The router starts it as ``python python_template.py CONTROL_FD MODE`` under the function's interpreter,
in its own session; CONTROL_FD is a Unix SOCK_SEQPACKET socket to the router. The template imports the
bootstrap (``python_bootstrap.py``, next to this file) and what a worker needs; in MODE ``snap`` it also
runs the function's init (its environment is the function's) and the ``snapshot_restore_py``
before-snapshot hooks. Then it says ``ready`` and forks one environment per request.

Messages to the router on the control socket: ``booted`` (snap: about to run the function's init),
``ready``, or ``init-error\\n<errorType>\\n<error JSON>`` (snap: the init failed; the template then exits).

A request is one message: JSON ``{env, cwd, path, rlimit_as, cgroup, restore, watched, exec}`` with two file
descriptors: the write end of the environment's output pipe (its fds 1 and 2) and a status socket; an
``exec`` request may add a third, the worker's end of its Runtime API socket, kept open across the exec.
The environment is cloned with ``CLONE_PARENT``: it is the router's child, not the template's, so the
router reaps it and sees its exit status, the parent-death signal ties it to the router, a template that
dies takes no environment with it and never holds a zombie. The child writes ``pid N`` on the status
socket first thing (the template may die at any moment: the child itself tells the router it exists),
sets itself up (own session, subreaper of its descendants, parent-death signal unless the router's
watchdog watches it, memory limit, fds, cwd, environment, ``sys.path``,
random state), writes ``ok`` (or ``error <what>`` and exits), and runs the runtime loop from ``main``,
so it exits exactly as an exec'd worker does. With ``exec`` (a command line: Node.js and ``provided``
workers), the child sets up the process the same way and execs it with ``env`` as its whole environment,
so starting such a worker forks this small process instead of the router; the status socket then closes
on the exec (``error exec ERRNO STRERROR`` if it failed). A clone that fails is answered ``error clone:
...`` by the template on the status socket.
"""

import contextlib
import ctypes
import fcntl
import json
import os
import random
import resource
import signal
import socket
import sys
import tempfile
import time

import python_bootstrap as bootstrap

# What a worker would import on its first connection, paid once here: the first getaddrinfo() of a
# process imports the idna codec, stringprep and unicodedata (~4-7 ms).
import encodings.idna  # noqa: F401  isort: skip

_CLONE_PARENT = 0x00008000
# clone(2) numbers of the architectures whose argument order starts (flags, stack, ...); others: exec.
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_MAX_REQUEST = 1 << 20

_libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held across clone, as in os.fork
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_api = ctypes.pythonapi


def _clone_parent():
    """Fork this process with CLONE_PARENT (the child's parent is the router); returns 0 in the child.

    CPython's own fork bookkeeping runs around it (PyOS_BeforeFork / PyOS_AfterFork_*): import lock,
    threading state and the ``os.register_at_fork`` hooks (``random`` re-seeds itself there)."""
    number = _SYS_CLONE[os.uname().machine]
    _api.PyOS_BeforeFork()
    pid = _syscall(ctypes.c_long(number), ctypes.c_ulong(_CLONE_PARENT | signal.SIGCHLD), ctypes.c_void_p(0),
                   ctypes.c_void_p(0), ctypes.c_void_p(0), ctypes.c_ulong(0))
    if pid == 0:
        _api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    _api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, os.strerror(err))
    return pid


_INTERPRETER_ADDED: "dict[str, str]" = {}
"""Variables the interpreter set in its own environment at start-up (PEP 538's LC_CTYPE coercion): an
exec'd worker has them as well."""


def _interpreter_added():
    try:
        with open("/proc/self/environ", "rb") as f:  # the environment as exec'd, before any change
            given = {item.partition(b"=")[0] for item in f.read().split(b"\0") if item}
    except OSError:
        return {}
    return {k: v for k, v in os.environ.items() if os.fsencode(k) not in given}


def _send(control, *parts):
    control.sendall(b"\n".join(parts))


def _write(fd, data):
    with contextlib.suppress(OSError):
        os.write(fd, data)


# --- the child: becoming an environment --------------------------------------------------------------


def _become_process(control, request, output_fd, router_pid):
    """What every worker process gets from the router's spawn: session, prctls, memory limit, fds, cwd."""
    os.setsid()  # own session and process group: the router kills the group on timeout
    # The subreaper of its descendants (not inherited through clone): an orphan stays in its tree.
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # Cleared by clone: die with the router (SIGKILL too); or, watched, stop at once when it dies, so the
    # lost Runtime API connection cannot end this worker, orphaning its children to init, before the
    # router's watchdog ends the whole tree.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGSTOP if request.get("watched") else signal.SIGKILL)
    if os.getppid() != router_pid:
        os._exit(1)  # the router died before the signal was armed
    control.close()  # the router sees the template's death as this socket's end
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if request.get("cgroup"):
        fd = os.open(os.path.join(request["cgroup"], "cgroup.procs"), os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
        if soft != hard:  # a snap template's own soft limit: the cgroup limits memory instead
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    elif request.get("rlimit_as"):
        limit = int(request["rlimit_as"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    elif request.get("rlimit_data"):  # Node.js: its private writable memory (V8 reserves much address space)
        limit = int(request["rlimit_data"])
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.chdir(request["cwd"])


def _become_environment(control, request, output_fd, router_pid):
    """Everything an exec'd Python worker gets from the router's spawn, done on this fork of the template."""
    _become_process(control, request, output_fd, router_pid)
    if not request.get("restore"):
        os.environ.clear()  # a snapshot keeps what the init set, as a restored Lambda snapshot does
    os.environ.update(request["env"])
    for key, value in _INTERPRETER_ADDED.items():
        os.environ.setdefault(key, value)
    time.tzset()
    tempfile.tempdir = None  # gettempdir() may have been cached in init: use this environment's TMPDIR
    for entry in reversed(request.get("path", [])):
        if entry not in sys.path:
            sys.path.insert(1, entry)  # where PYTHONPATH puts it in an exec'd worker
    sys.argv = [bootstrap.__file__]
    random.seed()  # os.register_at_fork did it already; a no-op to rely on explicitly


def _fork(control, message, fds, router_pid):
    """Serve one request; returns the request in the forked child, None in the template."""
    if len(fds) not in (2, 3):
        for fd in fds:
            os.close(fd)
        return None
    output_fd, status_fd = fds[:2]
    runtime_fd = fds[2] if len(fds) == 3 else -1
    try:
        request = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = _clone_parent()
    except (OSError, ValueError, KeyError) as e:
        _write(status_fd, f"error clone: {e}".encode())
        pid = -1
    if pid != 0:
        os.close(output_fd)
        os.close(status_fd)
        if runtime_fd >= 0:
            os.close(runtime_fd)
        return None
    try:
        os.write(status_fd, b"pid %d" % os.getpid())
    except OSError:
        os._exit(1)  # the router gave up on this start
    if request.get("exec"):
        _exec(control, request, output_fd, router_pid, status_fd, runtime_fd)  # never returns
    try:
        _become_environment(control, request, output_fd, router_pid)
        if runtime_fd >= 0:  # the bootstrap's Runtime API client takes it (bootstrap.runtime_client)
            os.environ[bootstrap.RUNTIME_FD_VAR] = str(runtime_fd)
    except BaseException as e:
        _write(status_fd, f"error {type(e).__name__}: {e}".encode()[:4000])
        os._exit(127)
    _write(status_fd, b"ok")
    os.close(status_fd)
    return request


def _exec(control, request, output_fd, router_pid, status_fd, runtime_fd):
    """Exec mode (Node.js, ``provided``): set up the process as the router's spawn would, then exec the
    command line. The status socket closes on exec, which tells the router it succeeded; a failed
    exec is answered ``error exec ERRNO STRERROR``. A Runtime API socket sent with the request
    (``runtime_fd`` >= 0) is kept open across the exec, at the lowest free number (``_low``), its number
    in ``_ROUTER_RUNTIME_FD``."""
    try:
        _become_process(control, request, output_fd, router_pid)
        if runtime_fd >= 0:
            runtime_fd = _low(runtime_fd)
            os.set_inheritable(runtime_fd, True)
            request["env"][bootstrap.RUNTIME_FD_VAR] = str(runtime_fd)
        # What subprocess does before an exec (restore_signals): Python ignores these; exec keeps that.
        for name in ("SIGPIPE", "SIGXFSZ"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        os.set_inheritable(status_fd, False)
        argv = request["exec"]
        os.execvpe(argv[0], argv, request["env"])
    except OSError as e:
        _write(status_fd, f"error exec {e.errno or 0} {e.strerror or e}".encode()[:4000])
    except BaseException as e:
        _write(status_fd, f"error {type(e).__name__}: {e}".encode()[:4000])
    os._exit(127)


def _low(fd):
    """``fd`` at the lowest free number from 3 (the other copy closed). node marks the descriptors it
    inherits close-on-exec at start, every one below 16 and those above up to the first free number
    (libuv's ``uv_disable_stdio_inheritance``): a low one is not passed on to the processes a Node
    function starts."""
    low = fcntl.fcntl(fd, fcntl.F_DUPFD, 3)
    if low > fd:
        os.close(low)
        return fd
    os.close(fd)
    return low


def _serve_template(control, router_pid):
    """Fork environments until the router closes the control socket; returns only in a child."""
    while True:
        message, fds, flags, _ = socket.recv_fds(control, _MAX_REQUEST, 3)
        if not message and not fds:
            os._exit(0)  # the router closed the socket: stop
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            for fd in fds:
                os.close(fd)
            continue
        request = _fork(control, message, fds, router_pid)
        if request is not None:
            return request


# --- snap start: the function's init in the template, hooks around the fork ---------------------------


def _init_error(control, error, error_type, status):
    bootstrap._log_error(error)
    sys.stdout.flush()
    _send(control, b"init-error", error_type.encode(), bootstrap._to_json(error).encode())
    sys.exit(status)


def _snapshot_init(control):
    """Run the function's init and the before-snapshot hooks (reverse order of registration, as
    awslambdaric); returns the handler or reports the init error and exits."""
    bootstrap.add_task_root()
    handler, error = bootstrap.load_handler()
    if error is not None:
        bootstrap.log_init_error(error)
        _send(control, b"init-error", error["errorType"].encode(), bootstrap._to_json(error).encode())
        sys.exit(1)
    hooks = sys.modules.get("snapshot_restore_py")
    if hooks is not None:
        before = hooks.get_before_snapshot()
        try:
            while before:
                func, args, kwargs = before.pop()
                func(*args, **kwargs)
        except Exception as e:
            _init_error(control, bootstrap._error_from_exception(e), "Runtime.BeforeSnapshotError", 64)
    return handler


def _restore_and_serve(handler):
    """In a forked snap environment: the after-restore hooks (order of registration), then the loop."""
    client = bootstrap.runtime_client()
    hooks = sys.modules.get("snapshot_restore_py")
    if hooks is not None:
        try:
            for func, args, kwargs in hooks.get_after_restore():
                func(*args, **kwargs)
        except Exception as e:
            error = bootstrap._error_from_exception(e)
            bootstrap._log_error(error)
            sys.stdout.flush()
            client.post_init_error(error, "Runtime.AfterRestoreError")
            sys.exit(65)
    bootstrap.serve(client, handler)


def main():
    _INTERPRETER_ADDED.update(_interpreter_added())
    # A snap_start template has the function's variables, and environments forked from it show the
    # template's /proc/PID/environ block: blank it (the variables stay in os.environ and the C library's).
    bootstrap._blank_environ_block()
    control = socket.socket(fileno=int(sys.argv[1]))
    control.set_inheritable(False)  # not for what the function's init may exec
    snap = sys.argv[2] == "snap"
    limit = os.environ.pop("_ROUTER_RLIMIT_AS", None)
    if limit:  # a soft limit only: a child in a cgroup raises it back
        resource.setrlimit(resource.RLIMIT_AS, (int(limit), resource.getrlimit(resource.RLIMIT_AS)[1]))
    bootstrap._apply_router_limits()  # the parent-death signal (and a check the router still runs)
    router_pid = os.getppid()
    if os.uname().machine not in _SYS_CLONE:
        sys.exit(f"fork-started environments: unsupported architecture {os.uname().machine}")
    if not hasattr(socket, "recv_fds"):
        sys.exit(f"fork-started environments need Python 3.9 or later, got {sys.version.split()[0]}")
    handler = None
    if snap:
        _send(control, b"booted")
        handler = _snapshot_init(control)
    _send(control, b"ready")
    _serve_template(control, router_pid)
    # From here on this process is a new environment (the template's loop returned in the child).
    if snap:
        _restore_and_serve(handler)
    else:
        bootstrap.init_and_serve()


if __name__ == "__main__":
    main()
