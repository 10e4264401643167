"""DNS over TCP (RFC 7766): a thin asyncio Protocol in front of the sans-IO engine.

Per connection: two-byte length framing with buffering across segments,
pipelined queries answered in order as soon as each is handled, an idle timeout
(one ``loop.call_later`` handle, re-armed lazily), an optional per-connection
query limit, and flow control (reading stops while the write buffer is above
its high-water mark). Per server: a concurrent-connection limit that, when hit,
closes the longest-idle connection if it has been idle for more than
:data:`EVICT_IDLE_AFTER` seconds and otherwise closes the newcomer.

The engine is looked up through ``holder.engine`` for every message so that a
reload can swap it with a single attribute assignment.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import socket
import weakref
from collections import OrderedDict

from nameserver.server.udp import EngineHolder, create_bound_socket

logger = logging.getLogger("nameserver.server")

#: At the connection limit, a connection idle for longer than this many seconds
#: is closed to make room for a new one (RFC 7766 §6.2.2).
EVICT_IDLE_AFTER = 1.0
#: Minimum interval between two "connection limit reached" warnings.
LIMIT_WARN_INTERVAL = 1.0
_HEADER_LEN = 12
_MAX_MESSAGE = 65535


class TCPStats:
    """Counters for one TCP server (plain ints, no locking).

    ``connections_open`` is a gauge; everything else counts up.
    """

    __slots__ = (
        "connections_open",
        "connections_accepted",
        "connections_refused",
        "connections_evicted",
        "idle_timeouts",
        "queries_answered",
        "queries_dropped",
        "errors",
        "malformed",
        "write_pauses",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class _ServerState:
    """Configuration and live connections shared by all connections of one server."""

    __slots__ = (
        "holder",
        "loop",
        "stats",
        "max_connections",
        "idle_timeout",
        "max_queries",
        "conns",
        "_last_warn",
        "_warned_refused",
        "_warned_evicted",
    )

    def __init__(
        self,
        holder: EngineHolder,
        loop: asyncio.AbstractEventLoop,
        stats: TCPStats,
        max_connections: int,
        idle_timeout: float | None,
        max_queries: int,
    ) -> None:
        self.holder = holder
        self.loop = loop
        self.stats = stats
        self.max_connections = max_connections if max_connections > 0 else math.inf
        self.idle_timeout = idle_timeout if idle_timeout and idle_timeout > 0 else None
        self.max_queries = max(0, max_queries)
        # Registered connections, least recently active first.
        self.conns: OrderedDict[_DNSStreamProtocol, None] = OrderedDict()
        self._last_warn = -math.inf
        self._warned_refused = 0
        self._warned_evicted = 0

    def make_room(self, now: float) -> bool:
        """At the limit: evict the longest-idle connection if idle enough; True on success."""
        victim = next(iter(self.conns), None)
        if victim is None or now - victim.last_activity <= EVICT_IDLE_AFTER:
            return False
        self.stats.connections_evicted += 1
        victim.close(abort_if_pending=True)
        victim.unregister()
        return True

    def warn_limit(self, now: float) -> None:
        """Log the connection-limit situation, at most once per LIMIT_WARN_INTERVAL."""
        if now - self._last_warn < LIMIT_WARN_INTERVAL:
            return
        stats = self.stats
        logger.warning(
            "TCP connection limit (%s) reached: %d new connection(s) refused and "
            "%d idle connection(s) closed since last report",
            self.max_connections,
            stats.connections_refused - self._warned_refused,
            stats.connections_evicted - self._warned_evicted,
        )
        self._last_warn = now
        self._warned_refused = stats.connections_refused
        self._warned_evicted = stats.connections_evicted


class _DNSStreamProtocol(asyncio.Protocol):
    """One DNS-over-TCP connection."""

    __slots__ = (
        "_st",
        "_transport",
        "_buf",
        "_need",
        "_timer",
        "_queries",
        "_paused",
        "_closing",
        "_registered",
        "last_activity",
    )

    def __init__(self, state: _ServerState) -> None:
        self._st = state
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = 2  # buffered bytes needed before parsing is worth trying
        self._timer: asyncio.TimerHandle | None = None
        self._queries = 0
        self._paused = False
        self._closing = False
        self._registered = False
        self.last_activity = 0.0

    # -- connection lifecycle -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        st = self._st
        self._transport = transport  # type: ignore[assignment]
        stats = st.stats
        stats.connections_accepted += 1
        now = st.loop.time()
        if len(st.conns) >= st.max_connections:
            evicted = st.make_room(now)
            if not evicted:
                stats.connections_refused += 1
            st.warn_limit(now)
            if not evicted:
                self._closing = True
                transport.close()
                return
        st.conns[self] = None
        self._registered = True
        stats.connections_open += 1
        self.last_activity = now
        if st.idle_timeout is not None:
            self._timer = st.loop.call_later(st.idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.unregister()
        self._buf.clear()

    def unregister(self) -> None:
        """Stop counting this connection against the server's limit."""
        if self._registered:
            self._registered = False
            self._st.conns.pop(self, None)
            self._st.stats.connections_open -= 1

    def close(self, abort_if_pending: bool = False) -> None:
        """Close the connection, flushing queued answers unless told to abort them."""
        transport = self._transport
        if transport is None:
            return
        if abort_if_pending and (self._paused or transport.get_write_buffer_size()):
            transport.abort()
        else:
            transport.close()
        self._closing = True

    def _check_idle(self) -> None:
        self._timer = None
        if not self._registered:
            return
        st = self._st
        assert st.idle_timeout is not None
        remaining = self.last_activity + st.idle_timeout - st.loop.time()
        if remaining > 0.001:
            self._timer = st.loop.call_later(remaining, self._check_idle)
            return
        st.stats.idle_timeouts += 1
        # A connection already closing here is stuck flushing to a client that doesn't read.
        if self._closing:
            self._transport.abort()  # type: ignore[union-attr]
        else:
            self.close(abort_if_pending=True)

    # -- flow control ---------------------------------------------------------

    def pause_writing(self) -> None:
        self._paused = True
        self._st.stats.write_pauses += 1
        if not self._closing:
            self._transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self._paused = False
        if not self._closing:
            # The client is reading: that counts as activity. Process what was
            # buffered while paused outside of the transport's write callback.
            self.last_activity = self._st.loop.time()
            self._st.loop.call_soon(self._resume)

    def _resume(self) -> None:
        if self._paused or self._closing:
            return
        buf = self._buf
        if buf:
            data = bytes(buf)
            buf.clear()
            self._consume(data)
        if not self._paused and not self._closing:
            self._transport.resume_reading()  # type: ignore[union-attr]

    # -- data path ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        buf = self._buf
        if buf or self._paused:
            buf += data
            if self._paused or len(buf) < self._need:
                return
            data = bytes(buf)
            buf.clear()
        self._consume(data)

    def _consume(self, data: bytes) -> None:
        """Handle every complete message in ``data`` and buffer the remainder."""
        n = len(data)
        pos = 0
        need = 2
        handled = False
        while n - pos >= 2:
            length = (data[pos] << 8) | data[pos + 1]
            if length < _HEADER_LEN:
                self._st.stats.malformed += 1
                logger.debug("TCP: %d-byte message is too short; closing connection", length)
                self.close()
                return
            end = pos + 2 + length
            if end > n:
                need = 2 + length
                break
            handled = True
            self._answer(data[pos + 2 : end])
            pos = end
            if self._closing:
                return
            if self._paused:
                break
        if handled and self._registered:
            self.last_activity = self._st.loop.time()
            self._st.conns.move_to_end(self)
        if pos < n:
            self._buf += memoryview(data)[pos:]
        self._need = need

    def _answer(self, msg: bytes) -> None:
        st = self._st
        try:
            resp = st.holder.engine.handle(msg, True)
            if resp is not None:
                rlen = len(resp)
                if rlen > _MAX_MESSAGE:
                    st.stats.errors += 1
                    logger.error("TCP: %d-byte response cannot be framed; closing connection", rlen)
                    self.close()
                    return
                st.stats.queries_answered += 1  # before the write: a reader may look at once
                self._transport.write(rlen.to_bytes(2, "big") + resp)  # type: ignore[union-attr]
            else:
                st.stats.queries_dropped += 1
        except Exception:
            st.stats.errors += 1
            logger.exception("TCP: error handling a %d-byte message", len(msg))
        self._queries += 1
        if self._queries == st.max_queries:
            self.close()


_SERVERS: weakref.WeakKeyDictionary[asyncio.AbstractServer, _ServerState] = (
    weakref.WeakKeyDictionary()
)


async def start_tcp(
    holder: EngineHolder,
    host: str,
    port: int,
    *,
    max_connections: int = 1000,
    idle_timeout: float = 10.0,
    max_queries_per_connection: int = 0,
    reuse_port: bool = False,
    backlog: int = 1024,
    stats: TCPStats | None = None,
    sock: socket.socket | None = None,
) -> asyncio.Server:
    """Start answering DNS over TCP on ``host``:``port`` (``port`` 0 picks a free one).

    ``max_connections`` and ``max_queries_per_connection`` of 0 mean unlimited;
    an ``idle_timeout`` of 0 disables the idle timeout. Each message counts
    toward ``max_queries_per_connection``, whether answered or dropped.
    Counters go to ``stats`` (also reachable via :func:`tcp_stats`). With ``sock``
    (a bound TCP socket, e.g. inherited from the supervisor), ``host`` and ``port``
    are ignored and that socket is served.
    """
    loop = asyncio.get_running_loop()
    state = _ServerState(
        holder,
        loop,
        stats if stats is not None else TCPStats(),
        max_connections,
        idle_timeout,
        max_queries_per_connection,
    )
    if sock is None:
        sock = create_bound_socket(host, port, socket.SOCK_STREAM, reuse_port=reuse_port)
    try:
        server = await loop.create_server(
            functools.partial(_DNSStreamProtocol, state), sock=sock, backlog=backlog
        )
    except BaseException:
        sock.close()
        raise
    _SERVERS[server] = state
    return server


def tcp_bound_port(server: asyncio.AbstractServer) -> int:
    """Return the local port a server from :func:`start_tcp` listens on."""
    return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]


def tcp_stats(server: asyncio.AbstractServer) -> TCPStats:
    """Return the counters of a server from :func:`start_tcp`."""
    return _SERVERS[server].stats


async def stop_tcp(server: asyncio.AbstractServer) -> None:
    """Stop listening and close every open connection of a server from :func:`start_tcp`."""
    server.close()
    state = _SERVERS.get(server)
    if state is not None:
        for conn in list(state.conns):
            conn.close(abort_if_pending=True)
    await server.wait_closed()
