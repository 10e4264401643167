"""Batched UDP: up to :data:`BATCH` datagrams per system call with Linux's recvmmsg(2)
and sendmmsg(2), called through ctypes.

Python's socket module moves one datagram per call, and each ``recvfrom`` builds an
address tuple (an IP string) that ``sendto`` parses again. At 100k queries a second
those two calls per query were about 2 µs of the ~11 µs of server CPU per answer
(benchmarks/RESULTS.md). Here the buffers are laid out once per socket: BATCH receive
slots and BATCH send slots, each with its iovec, sharing BATCH address slots, so the
answer to the datagram in slot k leaves from send slot k to the address the kernel
wrote in slot k: the address is never decoded, and per datagram Python only slices
the query out and copies the answer in.

:class:`BatchedUDPReader` is driven by the event loop (``loop.add_reader``); on each
wake-up it drains the socket a few batches at a time, so TCP and timers still run.

A socket bound to a wildcard address (0.0.0.0, ::) must answer from the address each
query was sent to, or a multi-homed server's answers leave from whatever address
routing picks and resolvers discard them. With ``pktinfo`` the kernel reports each
datagram's destination (IP_PKTINFO, IPV6_PKTINFO: :func:`enable_pktinfo`) in a
control slot beside its address slot, and the answer is sent with that same
control message as its source.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("nameserver.server")

BATCH = 64  # datagrams per system call
SLOT = 4096  # bytes per datagram slot: the largest UDP payload we answer with (config max)
MAX_BATCHES_PER_WAKEUP = 16  # then yield to the event loop
_NAME_SLOT = 128  # sizeof(struct sockaddr_storage)
# Plain ints: the socket module's are IntFlag members, and ``int & IntFlag`` runs
# enum code written in Python (~0.6 µs per datagram, a tenth of an answer's cost).
_MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0x40))
_MSG_TRUNC = int(getattr(socket, "MSG_TRUNC", 0x20))
# Packet information (Linux values; Python 3.11's socket module lacks IP_PKTINFO).
IP_PKTINFO = int(getattr(socket, "IP_PKTINFO", 8))
IPV6_RECVPKTINFO = int(getattr(socket, "IPV6_RECVPKTINFO", 49))
IPV6_PKTINFO = int(getattr(socket, "IPV6_PKTINFO", 50))
_CONTROL_SLOT = 64  # bytes per datagram: CMSG_SPACE(in6_pktinfo) is 40
_CMSG_HEADER = 16  # sizeof(struct cmsghdr) on 64-bit Linux: the data follows it
# Where the interface index lies in in_pktinfo {ifindex, spec_dst, addr} and in
# in6_pktinfo {addr, ifindex}.
_IFINDEX_AT = {socket.AF_INET: 0, socket.AF_INET6: 16}


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


def _load_calls() -> tuple[Any, Any] | None:
    """libc's recvmmsg and sendmmsg, or None where there are none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the C library this Python runs on
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recv.restype = ctypes.c_int
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    return recv, send


_CALLS = _load_calls()


_WORKS: bool | None = None  # the self-test's verdict, once made


def _sockaddr_size(family: int) -> int:
    """sizeof(struct sockaddr_in) or sizeof(struct sockaddr_in6)."""
    return 28 if family == socket.AF_INET6 else 16


def is_wildcard(sock: socket.socket) -> bool:
    """Whether ``sock`` is bound to the unspecified address of its family."""
    return sock.getsockname()[0] in ("0.0.0.0", "::")


def enable_pktinfo(sock: socket.socket) -> None:
    """Ask the kernel for each datagram's destination address (see the module docstring)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


def reply_pktinfo(family: int, info: bytes) -> bytes:
    """The packet information that sends an answer from the address a query reached:
    the query's own, with the interface index cleared, so that the routing table, not
    the arrival interface, picks the way out (as Unbound does)."""
    at = _IFINDEX_AT[family]
    return info[:at] + b"\0\0\0\0" + info[at + 4 :]


class _Echo:
    @staticmethod
    def handle(wire: bytes, over_tcp: bool) -> bytes:
        return wire[::-1]


def available() -> bool:
    """Whether batched UDP works here: Linux's calls exist, and a datagram sent to a
    batched reader on loopback comes back answered to its sender (checked once; a
    sandbox that forbids the calls, or a structure layout we got wrong, fails it)."""
    global _WORKS
    if _WORKS is None:
        _WORKS = _CALLS is not None and _self_test()
    return _WORKS


def _self_test() -> bool:
    from nameserver.server.udp import UDPStats  # (udp imports this module)

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, socket.socket(
            socket.AF_INET, socket.SOCK_DGRAM
        ) as client:
            server.bind(("127.0.0.1", 0))
            server.setblocking(False)
            client.settimeout(1.0)
            client.sendto(b"batched UDP self-test", server.getsockname())
            reader = BatchedUDPReader(server, lambda: _Echo, UDPStats())
            reader.drain()
            data, peer = client.recvfrom(64)
            return data == b"tset-fles PDU dehctab" and peer == server.getsockname()
    except OSError as e:
        logger.debug("batched UDP self-test failed: %s", e)
        return False


class BatchedUDPReader:
    """Answers the datagrams of one non-blocking UDP socket in batches.

    ``engine()`` returns the object whose ``handle(wire, False)`` answers a query
    (read once per batch, so a reload's swap takes effect at the next batch);
    ``stats`` has ``errors``, ``truncated``, ``send_errors`` and ``oversized`` counters.
    """

    def __init__(
        self, sock: socket.socket, engine: Callable[[], Any], stats: Any, pktinfo: bool = False
    ) -> None:
        assert _CALLS is not None, "batched UDP needs Linux"
        self._recvmmsg, self._sendmmsg = _CALLS
        self.sock = sock
        self.fd = sock.fileno()
        self.engine = engine
        self.stats = stats
        n = BATCH
        self._rbuf = ctypes.create_string_buffer(n * SLOT)
        self._sbuf = ctypes.create_string_buffer(n * SLOT)
        self._names = ctypes.create_string_buffer(n * _NAME_SLOT)
        self._riov = (_Iovec * n)()
        self._siov = (_Iovec * n)()
        self._rmsgs = (_Mmsghdr * n)()
        self._smsgs = (_Mmsghdr * n)()
        rbase, sbase = ctypes.addressof(self._rbuf), ctypes.addressof(self._sbuf)
        names = ctypes.addressof(self._names)
        for k in range(n):
            self._riov[k].base, self._riov[k].len = rbase + k * SLOT, SLOT
            self._siov[k].base, self._siov[k].len = sbase + k * SLOT, 0
            for msgs, iov, namelen in (
                (self._rmsgs, self._riov, _NAME_SLOT),
                # The kernel reports every peer in the socket's own family.
                (self._smsgs, self._siov, _sockaddr_size(sock.family)),
            ):
                hdr = msgs[k].hdr
                hdr.name, hdr.namelen = names + k * _NAME_SLOT, namelen
                hdr.iov, hdr.iovlen = ctypes.addressof(iov[k]), 1
        self._control: Any = None
        if pktinfo:
            self._set_up_control(sock.family)
        self._msg_size = ctypes.sizeof(_Mmsghdr)
        self._rmsgs_at = ctypes.addressof(self._rmsgs)
        self._smsgs_at = ctypes.addressof(self._smsgs)
        # Flat views for cheap per-datagram access from Python.
        self._rwords = memoryview(self._rmsgs).cast("B").cast("I")
        self._siov_words = memoryview(self._siov).cast("B").cast("N")
        self._rview = memoryview(self._rbuf).cast("B")
        self._sview = memoryview(self._sbuf).cast("B")
        self._step = self._msg_size // 4
        self._len_at = _Mmsghdr.len.offset // 4
        self._flags_at = _Msghdr.flags.offset // 4
        self._iov_len_at = _Iovec.len.offset // ctypes.sizeof(ctypes.c_size_t)
        self._iov_step = ctypes.sizeof(_Iovec) // ctypes.sizeof(ctypes.c_size_t)

    def _set_up_control(self, family: int) -> None:
        """A control slot per datagram, shared by its receive and send headers."""
        n = BATCH
        self._control = ctypes.create_string_buffer(n * _CONTROL_SLOT)
        base = ctypes.addressof(self._control)
        for k in range(n):
            self._rmsgs[k].hdr.control = self._smsgs[k].hdr.control = base + k * _CONTROL_SLOT
            self._rmsgs[k].hdr.controllen = _CONTROL_SLOT
        words = ctypes.sizeof(ctypes.c_size_t)
        # controllen (a size_t) of every header, and the interface index of every slot.
        self._controllen_at = _Msghdr.controllen.offset // words
        self._hdr_words = ctypes.sizeof(_Mmsghdr) // words
        self._rlong = memoryview(self._rmsgs).cast("B").cast("N")
        self._slong = memoryview(self._smsgs).cast("B").cast("N")
        sizes = (ctypes.c_size_t * n)(*[_CONTROL_SLOT] * n)  # to reset every controllen
        self._slot_sizes = memoryview(sizes).cast("B").cast("N")
        self._ifindex = memoryview(self._control).cast("B").cast("I")[
            (_CMSG_HEADER + _IFINDEX_AT[family]) // 4 :: _CONTROL_SLOT // 4
        ]
        self._zeros = memoryview(bytes(4 * n)).cast("I")

    def drain(self) -> None:
        """Read, answer and send batches until the socket is empty (or enough for now)."""
        control = self._control is not None
        for _ in range(MAX_BATCHES_PER_WAKEUP):
            if control:  # the kernel shortened each controllen to what it wrote
                at, step = self._controllen_at, self._hdr_words
                self._rlong[at : BATCH * step : step] = self._slot_sizes
            count = self._recvmmsg(self.fd, self._rmsgs_at, BATCH, _MSG_DONTWAIT, None)
            if count <= 0:
                err = ctypes.get_errno() if count < 0 else 0
                if err not in (0, errno.EAGAIN, errno.EINTR):
                    logger.debug("recvmmsg: %s", errno.errorcode.get(err, "?"))
                return
            if control:
                self._reply_from_destinations(count)
            try:
                self._answer(count)
            except Exception:  # a bug here must not stop the listener
                self.stats.errors += count
                logger.exception("UDP: error answering a batch of %d datagrams", count)
            if count < BATCH:
                return

    def _reply_from_destinations(self, count: int) -> None:
        """Make each received packet information the source of its answer
        (:func:`reply_pktinfo`, for a whole batch in two copies)."""
        self._ifindex[:count] = self._zeros[:count]
        at, step = self._controllen_at, self._hdr_words
        self._slong[at : count * step : step] = self._rlong[at : count * step : step]

    def _answer(self, count: int) -> None:
        handle = self.engine().handle
        rwords, siov = self._rwords, self._siov_words
        rview, sview = self._rview, self._sview
        step, len_at, flags_at = self._step, self._len_at, self._flags_at
        iov_len_at, iov_step = self._iov_len_at, self._iov_step
        stats = self.stats
        skipped: list[int] = []
        # Every datagram's length and flags, read in two calls.
        lengths = rwords[len_at : count * step : step].tolist()
        flags = rwords[flags_at : count * step : step].tolist()
        start = -SLOT
        for k in range(count):
            start += SLOT
            length = lengths[k]
            if flags[k] & _MSG_TRUNC:
                stats.oversized += 1  # larger than any DNS query over UDP: dropped
                skipped.append(k)
                continue
            wire = rview[start : start + length].tobytes()
            try:
                response = handle(wire, False)
            except Exception:
                stats.errors += 1
                logger.exception("UDP: error handling a %d-byte message", length)
                skipped.append(k)
                continue
            if response is None:
                skipped.append(k)
                continue
            size = len(response)
            if size > SLOT:
                stats.errors += 1
                logger.error("UDP: a %d-byte response does not fit a datagram slot", size)
                skipped.append(k)
                continue
            if response[2] & 2:  # TC
                stats.truncated += 1
            sview[start : start + size] = response
            siov[k * iov_step + iov_len_at] = size
        first = 0
        for k in skipped:
            if k > first:
                self._send(first, k)
            first = k + 1
        if count > first:
            self._send(first, count)

    def _send(self, first: int, end: int) -> None:
        """Send the answers in slots first..end-1; skip one that the kernel refuses."""
        while first < end:
            sent = self._sendmmsg(
                self.fd, self._smsgs_at + first * self._msg_size, end - first, _MSG_DONTWAIT
            )
            if sent >= 0:
                first += max(sent, 1)  # (0 cannot happen for a non-empty vector)
                continue
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            self.stats.send_errors += 1
            if err in (errno.EAGAIN, errno.ENOBUFS):
                self.stats.send_errors += end - first - 1
                return  # the send buffer is full: like a full queue, the rest are dropped
            logger.debug("sendmmsg: %s", errno.errorcode.get(err, "?"))
            first += 1  # e.g. an unreachable address: skip that one answer
