"""Which process is at the other end of a loopback TCP connection: confines a Runtime API to its worker.

Any local process can connect to a loopback port, and an environment's Runtime API port is visible to
all in ``/proc/net/tcp``. So when a connection to an environment's Runtime API sends its first request,
the router finds the client's socket (the connection's 4-tuple, seen from the client) and its inode,
and checks that one of the environment's own processes (the worker and the processes below it,
``proctree``) holds that socket among its file descriptors. Connections are kept alive, so this runs
once per connection, not per invocation.

- The socket is found with one ``sock_diag`` netlink request for exactly that 4-tuple (what ``ss``
  uses; no privilege needed, a few microseconds whatever the number of sockets), else by reading
  ``/proc/net/tcp`` or ``tcp6``.
- A process's descriptors are read from ``/proc/PID/fd``, which needs the right to inspect it: the same
  uid as the router (a worker that has not made itself non-dumpable) or ``CAP_SYS_PTRACE``. A worker
  the router may not inspect cannot be recognised, and its connection is refused like a stranger's,
  unless the function runs as a user of its own (``run_as``, a root router without ``CAP_SYS_PTRACE``,
  as in a container): then a socket owned by that user is the function's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct

from router.runtime import proctree

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NO_COOKIE = 0xFFFFFFFF
_NLMSG_HEADER = struct.Struct("=IHHII")
_DIAG_REQUEST = struct.Struct("=BBBBI")  # family, protocol, ext, pad, states (inet_diag_req_v2)
_DIAG_TAIL = struct.Struct("=III")  # interface, cookie[2]
_DIAG_MSG_UID_INODE = 16 + 4 + 48 + 12  # nlmsghdr, family..retrans, inet_diag_sockid, expires..wqueue


def client_socket(client: tuple[str, int], server: tuple[str, int]) -> tuple[int, int] | None:
    """The inode and owner uid of the socket whose local address is ``client`` and peer ``server`` (the
    client's end of a loopback connection the router accepted), or None when there is none (closed)."""
    family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
    try:
        return _diag_socket(family, client, server)
    except OSError:  # no sock_diag (a seccomp filter, an old kernel): the slower way
        return _proc_net_socket(family, client, server)


def _diag_socket(family: int, client: tuple[str, int], server: tuple[str, int]) -> tuple[int, int] | None:
    request = (
        _DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
        + struct.pack("!HH", client[1], server[1])
        + socket.inet_pton(family, client[0]).ljust(16, b"\0")
        + socket.inet_pton(family, server[0]).ljust(16, b"\0")
        + _DIAG_TAIL.pack(0, _NO_COOKIE, _NO_COOKIE)
    )
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG) as nl:
        nl.sendto(header + request, (0, 0))
        reply = nl.recv(8192)  # the kernel answers within sendto: this does not wait
    _, kind, _, _, _ = _NLMSG_HEADER.unpack_from(reply)
    if kind == _NLMSG_ERROR:
        (errno,) = struct.unpack_from("=i", reply, _NLMSG_HEADER.size)
        if errno == -2:  # ENOENT: no such socket
            return None
        raise OSError(-errno, os.strerror(-errno))
    if kind != _SOCK_DIAG_BY_FAMILY or len(reply) < _DIAG_MSG_UID_INODE + 8:
        raise OSError(0, f"unexpected sock_diag reply type {kind}")
    uid, inode = struct.unpack_from("=II", reply, _DIAG_MSG_UID_INODE)
    return int(inode), int(uid)


def _proc_address(family: int, host: str, port: int) -> bytes:
    """An address as ``/proc/net/tcp`` writes it: the raw bytes as host-order 32-bit words, in hex."""
    raw = socket.inet_pton(family, host)
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    return ("".join(f"{w:08X}" for w in words) + f":{port:04X}").encode()


def _proc_net_socket(family: int, client: tuple[str, int], server: tuple[str, int]) -> tuple[int, int] | None:
    local, remote = _proc_address(family, *client), _proc_address(family, *server)
    name = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    with contextlib.suppress(OSError), open(name, "rb") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 9 and fields[1] == local and fields[2] == remote:
                return int(fields[9]), int(fields[7])
    return None


def held_by(inode: int, pids: list[int]) -> bool | None:
    """Whether one of ``pids`` holds the socket ``inode`` among its file descriptors; None when it is not
    found and some of them could not be inspected."""
    target = f"socket:[{inode}]"
    unknown = False
    for pid in pids:
        base = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(base)
        except PermissionError:  # not ours to inspect
            unknown = True
            continue
        except OSError:  # gone
            continue
        for fd in fds:
            try:
                if os.readlink(f"{base}/{fd}") == target:
                    return True
            except PermissionError:  # the directory may be listed (CAP_DAC_OVERRIDE), not its links
                unknown = True
                break
            except OSError:  # closed meanwhile
                continue
    return None if unknown else False


def belongs_to(client: tuple[str, int], server: tuple[str, int], root: int, uid: int | None = None) -> bool:
    """Whether the client end of the connection ``client`` -> ``server`` is held by ``root`` or a process
    below it (checked in that order: a worker's own connection is found first). ``uid``: the worker runs
    as a user of its own (``run_as``); when its descriptors cannot be inspected, a socket of that user
    is its."""
    found = client_socket(client, server)
    if found is None or found[0] == 0:
        return False
    inode, owner = found
    held = held_by(inode, [root])
    if held:
        return True
    below = held_by(inode, proctree.descendants(root))
    if below:
        return True
    if (held is None or below is None) and uid is not None and uid != os.geteuid():
        return owner == uid
    return False
