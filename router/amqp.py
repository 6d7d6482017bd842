"""RabbitMQ helpers shared by the amqp source, destination and async queue: URLs without secrets, robust
connections, publish-with-confirm, and broker errors in users' words.

``redact(url)`` is the only form of a broker URL that may reach a log line or an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from yarl import URL

from router.invocation import ErrorType

DEFAULT_PORT = {"amqp": 5672, "amqps": 5671}
RECONNECT_INTERVAL = 1.0  # seconds between the robust connection's attempts after a loss
CONNECT_TIMEOUT = 10.0


def _parse(url: str) -> URL | None:
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return None
    return parsed if parsed.scheme in DEFAULT_PORT else None


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (and the query dropped: it may hold key files)."""
    parsed = _parse(url)
    if parsed is None:
        return "<not an amqp:// URL>"
    if parsed.password is not None:
        parsed = parsed.with_password("***")
    return str(parsed.with_query(None))


def host_of(url: str) -> str:
    """``host:port`` of the broker (the port defaulted by the scheme)."""
    parsed = _parse(url)
    if parsed is None or not parsed.host:
        return "?"
    return f"{parsed.host}:{parsed.port or DEFAULT_PORT[parsed.scheme]}"


def vhost_of(url: str) -> str:
    """The virtual host of an AMQP URL: the path without its first slash, percent-decoded; ``/`` when
    the path is empty (``amqp://h/`` and ``amqp://h`` both mean the default vhost ``/``)."""
    parsed = _parse(url)
    raw = parsed.raw_path if parsed is not None else ""
    vhost = unquote(raw[1:]) if raw.startswith("/") else unquote(raw)
    return vhost or "/"


def user_of(url: str) -> str:
    parsed = _parse(url)
    return (parsed.user or "guest") if parsed is not None else "guest"


def check_url(url: str) -> str | None:
    """Why ``url`` is not a usable broker URL, or None. Never echoes the password."""
    parsed = _parse(url)
    if parsed is None:
        return "must be an amqp:// or amqps:// URL"
    if not parsed.host:
        return f"has no host, got {redact(url)}"
    return None


async def connect(url: str, name: str, *, timeout: float = CONNECT_TIMEOUT,  # noqa: ASYNC109
                  reconnect_interval: float = RECONNECT_INTERVAL) -> Any:
    """An aio-pika robust connection named ``name`` (shown in the management UI and by
    ``rabbitmqctl list_connections client_properties``), e.g. ``router:orders``.

    Raises what aio-pika raises when the first attempt fails (refused, auth, timeout, unknown vhost);
    ``describe_error`` turns that into a message. Once connected it reconnects by itself.
    """
    import aio_pika

    # aiormq reads the connection name from the URL's ``name``; aio-pika reads its own parameters from
    # the query only when no keyword is given, so everything goes in the query (the user's stays).
    target = URL(url).update_query(name=name, reconnect_interval=f"{reconnect_interval:g}")
    conn = aio_pika.RobustConnection(target)
    try:
        await conn.connect(timeout=timeout)
    except BaseException:
        await asyncio.shield(_quiet_close(conn))
        raise
    return conn


async def publish_confirmed(
    publish: Callable[[], Awaitable[Any]], *, url: str, where: str, timeout: float,  # noqa: ASYNC109
    error: Callable[[str], Exception], returned: str, refused: str, not_found: str | None = None,
    setting: str = "source.url", waiting: Callable[[], str] | None = None,
) -> None:
    """Run ``publish`` within ``timeout`` and make sure the broker took the message.

    ``publish`` publishes one message with ``mandatory`` on a channel with publisher confirms and
    returns the broker's confirm. Every way that fails becomes ``error(message)``, the message starting
    with ``where``: no confirm in time (``waiting()``, when given, says what was waited for), the message
    returned unroutable (``returned``), a missing exchange (``not_found``, when given; else the broker
    error below), a broker or connection error (``describe_error`` with ``setting``), or a nack
    (``refused``, with ``{}`` for the confirm's name).
    """
    import aiormq.exceptions as amqp_errors
    from pamqp.commands import Basic

    try:
        async with asyncio.timeout(timeout):
            confirm = await publish()
    except TimeoutError as exc:
        why = f" ({waiting()})" if waiting is not None else ""
        raise error(
            f"{where}: not confirmed within {timeout:g}s{why}; is the broker up and reachable?") from exc
    except amqp_errors.PublishError as exc:
        raise error(f"{where}: {returned}") from exc
    except (amqp_errors.AMQPError, OSError, RuntimeError) as exc:
        if not_found is not None and isinstance(exc, amqp_errors.ChannelNotFoundEntity):
            raise error(f"{where}: {not_found}") from exc
        message, _ = describe_error(exc, url, setting=setting)
        raise error(f"{where}: {message}") from exc
    if not isinstance(confirm, Basic.Ack):
        raise error(f"{where}: {refused.format(type(confirm).__name__)}")


def channel_open(message: Any) -> bool:
    """False for a message delivered on a channel that has closed since (the broker has requeued it, and
    its ack cannot be sent)."""
    try:
        channel = message.channel
    except Exception:  # aio-pika raises ChannelInvalidStateError for a closed channel
        return False
    return not bool(getattr(channel, "is_closed", False))


async def _quiet_close(conn: Any) -> None:
    with contextlib.suppress(Exception):  # closing a connection that never opened
        await conn.close()


CHANNEL_CLOSE_TIMEOUT = 5.0


async def close_settled(conn: Any, *channels: Any, timeout: float = CHANNEL_CLOSE_TIMEOUT) -> None:  # noqa: ASYNC109
    """Close ``channels`` with the broker's handshake, then ``conn``; never raises.

    The broker answers ``channel.close`` once it has handled every frame sent on the channel before it,
    so the acks and nacks already written are settled when this returns. Closing the connection alone
    does not promise that: aiormq stops reading, writes ``connection.close`` and closes the socket without
    waiting for the answer, and a socket closed with bytes unread sends a TCP reset, which can make the
    broker drop frames it had not read yet (RabbitMQ then logs "client unexpectedly closed TCP
    connection" and redelivers the messages whose ack was lost).
    """
    for channel in channels:
        if channel is None or getattr(channel, "is_closed", True):
            continue
        with contextlib.suppress(Exception):  # gone already: the broker requeued its unacked messages
            async with asyncio.timeout(timeout):
                await channel.close()
    await _quiet_close(conn)


def describe_error(exc: BaseException, url: str, *, queue: str | None = None,
                   hint_not_found: str = "", setting: str = "source.url") -> tuple[str, ErrorType]:
    """A broker error as ``(message, error_type)`` naming the broker (never its password); ``setting``
    is the config key that holds the URL, for the hints."""
    import aiormq.exceptions as amqp_errors
    import pamqp.exceptions

    where = f"broker {host_of(url)} vhost '{vhost_of(url)}'"
    if isinstance(exc, amqp_errors.ProbableAuthenticationError | amqp_errors.AuthenticationError):
        return (f"{where}: login refused for user '{user_of(url)}' (ACCESS_REFUSED); "
                f"check the user name and password in {setting}", ErrorType.CONFIG)
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        what = f"queue '{queue}' not found" if queue else "not found"
        return (f"{where}: {what} (NOT_FOUND)" + (f"; {hint_not_found}" if hint_not_found else ""),
                ErrorType.CONFIG)
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed):
        return (f"{where}: {_first_line(exc)} (PRECONDITION_FAILED); the queue exists with other "
                "arguments: make source.durable / queue_type / arguments match it, or declare: false",
                ErrorType.CONFIG)
    if isinstance(exc, amqp_errors.ChannelAccessRefused):
        return (f"{where}: access refused (ACCESS_REFUSED): {_first_line(exc)}; grant user "
                f"'{user_of(url)}' permissions on the vhost", ErrorType.CONFIG)
    if isinstance(exc, pamqp.exceptions.PAMQPException) and "Connection.OpenOk" in str(exc):
        return (f"{where}: the broker refused to open the vhost (does it exist, may user "
                f"'{user_of(url)}' use it?)", ErrorType.CONFIG)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"{where}: no answer (timeout); is the broker up and reachable?", ErrorType.TIMEOUT
    if isinstance(exc, ConnectionError | OSError | amqp_errors.AMQPConnectionError):
        return (f"{where}: cannot connect ({_first_line(exc)}); is the broker up and reachable?",
                ErrorType.CONNECTION)
    return f"{where}: {type(exc).__name__}: {_first_line(exc)}", ErrorType.CONNECTION


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if len(exc.args) == 1 else str(exc)
    if len(exc.args) >= 2 and isinstance(exc.args[0], int):
        text = str(exc.args[1])
    return (text.splitlines() or [type(exc).__name__])[0][:300]
