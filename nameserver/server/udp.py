"""DNS over UDP: a thin layer between a socket and the sans-IO engine.

On Linux datagrams move in batches (:mod:`nameserver.server.mmsg`, recvmmsg and
sendmmsg); elsewhere, or when asked, through an asyncio DatagramProtocol. Both look
the engine up through ``holder.engine`` (per batch, or per datagram) so that a
reload can swap it atomically (a single attribute assignment). A socket bound to a
wildcard address answers each query from the address it was sent to (packet
information: see :mod:`nameserver.server.mmsg`), on both paths.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import sys
from typing import Any, Protocol

from nameserver.server import mmsg

logger = logging.getLogger("nameserver.server")

# Not exported by the socket module; these are the Linux values (asm-generic/socket.h).
_SO_SNDBUFFORCE: int | None = getattr(
    socket, "SO_SNDBUFFORCE", 32 if sys.platform.startswith("linux") else None
)
_SO_RCVBUFFORCE: int | None = getattr(
    socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None
)


class EngineHolder(Protocol):
    """Anything with an ``engine`` attribute exposing ``handle(wire, over_tcp)``."""

    engine: Any


class UDPStats:
    """Counters for one UDP listener (plain ints, no locking)."""

    __slots__ = ("errors", "truncated", "send_errors", "oversized")

    def __init__(self) -> None:
        self.errors = 0
        self.truncated = 0  # responses sent with TC set
        self.send_errors = 0  # answers the kernel would not send (batched path)
        self.oversized = 0  # datagrams too large for a query slot, dropped (batched path)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def address_family(host: str) -> socket.AddressFamily:
    """Return AF_INET or AF_INET6 for an IP address literal (ValueError otherwise)."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"listen address must be an IP literal, got {host!r}") from None
    return socket.AF_INET6 if addr.version == 6 else socket.AF_INET


def _set_buffer(sock: socket.socket, force: int | None, normal: int, size: int) -> None:
    """Set a socket buffer size, using the *FORCE variant when root; never raises."""
    if force is not None and hasattr(os, "geteuid") and os.geteuid() == 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:
            pass
    try:
        sock.setsockopt(socket.SOL_SOCKET, normal, size)
    except OSError as exc:
        logger.debug("could not set socket buffer option %d to %d: %s", normal, size, exc)


def create_bound_socket(
    host: str,
    port: int,
    sock_type: socket.SocketKind,
    *,
    reuse_port: bool = False,
    bufsize: int | None = None,
) -> socket.socket:
    """Create, configure and bind a non-blocking socket for ``host`` (an IP literal).

    Sets SO_REUSEADDR on TCP sockets (so a restart is not blocked by TIME_WAIT),
    never on UDP ones, where Linux would let a second server share the port
    silently; IPV6_V6ONLY for IPv6, SO_REUSEPORT if asked, and the send and
    receive buffers to ``bufsize`` if given. The caller owns the socket.
    """
    family = address_family(host)
    sock = socket.socket(family, sock_type)
    try:
        if sock_type == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError("SO_REUSEPORT is not supported on this platform")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if bufsize is not None:
            _set_buffer(sock, _SO_RCVBUFFORCE, socket.SO_RCVBUF, bufsize)
            _set_buffer(sock, _SO_SNDBUFFORCE, socket.SO_SNDBUF, bufsize)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _DNSDatagramProtocol(asyncio.DatagramProtocol):
    """Hands each datagram to ``holder.engine`` and sends back what it returns."""

    __slots__ = ("_holder", "_transport", "stats")

    def __init__(self, holder: EngineHolder, stats: UDPStats) -> None:
        self._holder = holder
        self._transport: asyncio.DatagramTransport | None = None
        self.stats = stats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            resp = self._holder.engine.handle(data, False)
            if resp is not None:
                if resp[2] & 2:  # TC: one byte test, for the metrics
                    self.stats.truncated += 1
                self._transport.sendto(resp, addr)  # type: ignore[union-attr]
        except Exception:
            self.stats.errors += 1
            logger.exception("UDP: error handling a %d-byte message from %s", len(data), addr)

    def error_received(self, exc: Exception) -> None:
        # Typically ICMP errors (e.g. port unreachable) reported for an earlier sendto.
        logger.debug("UDP socket error: %s", exc)


# The packet information a wildcard socket receives, and sends back as the source.
_PKTINFO = {(socket.IPPROTO_IP, mmsg.IP_PKTINFO), (socket.IPPROTO_IPV6, mmsg.IPV6_PKTINFO)}


class _PktinfoReader:
    """The unbatched path for a wildcard socket: ``recvmsg``/``sendmsg``, so that each
    answer leaves from the address its query reached (asyncio's transports drop
    ancillary data)."""

    def __init__(self, sock: socket.socket, holder: EngineHolder, stats: UDPStats) -> None:
        self.sock = sock
        self.holder = holder
        self.stats = stats

    def drain(self) -> None:
        sock = self.sock
        for _ in range(mmsg.BATCH):
            try:
                data, ancillary, _flags, addr = sock.recvmsg(mmsg.SLOT, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error reported for an earlier answer
                logger.debug("UDP socket error: %s", exc)
                continue
            try:
                resp = self.holder.engine.handle(data, False)
            except Exception:
                self.stats.errors += 1
                logger.exception("UDP: error handling a %d-byte message from %s", len(data), addr)
                continue
            if resp is None:
                continue
            if resp[2] & 2:
                self.stats.truncated += 1
            control = [
                (level, kind, mmsg.reply_pktinfo(sock.family, value))
                for level, kind, value in ancillary
                if (level, kind) in _PKTINFO
            ]
            try:
                sock.sendmsg([resp], control, 0, addr)
            except OSError as exc:  # a full send buffer, an unreachable address
                self.stats.send_errors += 1
                logger.debug("sendmsg: %s", exc)


class UDPListener:
    """A UDP socket being answered; :meth:`close` stops answering and closes it."""

    def __init__(self, sock: socket.socket, stats: UDPStats, stop: Any, batched: bool) -> None:
        self.sock = sock
        self.stats = stats
        self.batched = batched
        self._stop = stop

    def close(self) -> None:
        """Stop reading and close this process's copy of the socket."""
        self._stop()


async def start_udp(
    holder: EngineHolder,
    host: str,
    port: int,
    rcvbuf: int = 4 * 1024 * 1024,
    *,
    reuse_port: bool = False,
    stats: UDPStats | None = None,
    sock: socket.socket | None = None,
    batched: bool | None = None,
) -> UDPListener:
    """Start answering DNS over UDP on ``host``:``port`` (``port`` 0 picks a free one).

    ``rcvbuf`` sizes both SO_RCVBUF and SO_SNDBUF. ``batched`` None means batched
    wherever the platform has recvmmsg. Counters go to ``stats``.
    """
    loop = asyncio.get_running_loop()
    if sock is None:  # else: a bound socket handed over, e.g. inherited from the supervisor
        sock = create_bound_socket(
            host, port, socket.SOCK_DGRAM, reuse_port=reuse_port, bufsize=rcvbuf
        )
    stats = stats if stats is not None else UDPStats()
    if batched is None:
        batched = mmsg.available()
    try:
        # (The option values in mmsg are Linux's; elsewhere answers keep the default source.)
        pktinfo = sys.platform.startswith("linux") and mmsg.is_wildcard(sock)
        if pktinfo:
            mmsg.enable_pktinfo(sock)
        if batched or pktinfo:
            sock.setblocking(False)
            reader: Any = (
                mmsg.BatchedUDPReader(sock, lambda: holder.engine, stats, pktinfo)
                if batched
                else _PktinfoReader(sock, holder, stats)
            )
            fd = sock.fileno()
            loop.add_reader(fd, reader.drain)

            def stop() -> None:
                loop.remove_reader(fd)
                sock.close()

            return UDPListener(sock, stats, stop, batched)
        proto = _DNSDatagramProtocol(holder, stats)
        transport, _ = await loop.create_datagram_endpoint(lambda: proto, sock=sock)
    except BaseException:
        sock.close()
        raise
    return UDPListener(sock, stats, transport.close, False)


def udp_bound_port(listener: UDPListener) -> int:
    """Return the local port a listener from :func:`start_udp` is bound to."""
    return int(listener.sock.getsockname()[1])


def udp_stats(listener: UDPListener) -> UDPStats:
    """Return the counters of a listener from :func:`start_udp`."""
    return listener.stats
