"""Transport tests: real UDP/TCP sockets on loopback against a fake engine.

The server runs in a background thread with its own event loop (uvloop and the
stock asyncio loop); the test body is a plain blocking socket client with
timeouts on every operation.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import dns.message
import pytest
import uvloop

from nameserver.server import mmsg
from nameserver.server.tcp import start_tcp, stop_tcp, tcp_bound_port, tcp_stats
from nameserver.server.udp import UDPListener, start_udp, udp_bound_port, udp_stats

TIMEOUT = 3.0
ID_DROP = 0xFFFF
ID_RAISE = 0xDEAD
ID_HUGE = 0xB16B


class EchoEngine:
    """Fake engine: echoes the query with QR (plus ``extra_flags``) set.

    Returns None for id 0xFFFF, raises for id 0xDEAD and returns an unframeable
    70000-byte "response" for id 0xB16B. ``pad_to`` pads responses to that size.
    """

    def __init__(self, extra_flags: int = 0, pad_to: int = 0) -> None:
        self.extra_flags = extra_flags
        self.pad_to = pad_to
        self.calls: list[tuple[int, bool]] = []

    def handle(self, wire: bytes, over_tcp: bool) -> bytes | None:
        qid = int.from_bytes(wire[:2], "big")
        self.calls.append((qid, over_tcp))
        if qid == ID_DROP:
            return None
        if qid == ID_RAISE:
            raise RuntimeError("engine exploded")
        if qid == ID_HUGE:
            return b"\0" * 70000
        resp = wire[:2] + bytes([wire[2] | 0x80 | self.extra_flags]) + wire[3:]
        if len(resp) < self.pad_to:
            resp += b"\0" * (self.pad_to - len(resp))
        return resp


def query(qid: int, name: str = "example.coop.") -> bytes:
    msg = dns.message.make_query(name, "A")
    msg.id = qid
    return msg.to_wire()


def answer(q: bytes, extra_flags: int = 0) -> bytes:
    return q[:2] + bytes([q[2] | 0x80 | extra_flags]) + q[3:]


def frame(msg: bytes) -> bytes:
    return len(msg).to_bytes(2, "big") + msg


def wait_for(cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HOSTS = [
    "127.0.0.1",
    pytest.param(
        "::1",
        marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback"),
    ),
]


class Harness:
    """An event loop in a background thread hosting the servers under test."""

    def __init__(self, loop_kind: str, host: str) -> None:
        self.host = host
        self.loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine = EchoEngine()
        self.holder = SimpleNamespace(engine=self.engine)
        self.udp: list[UDPListener] = []
        self.batched: bool | None = None  # the UDP path: None = the platform's default
        self.tcp: list[asyncio.Server] = []

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def start_udp(self, port: int = 0, **kw: Any) -> int:
        kw.setdefault("batched", self.batched)
        listener = self.run(start_udp(self.holder, self.host, port, **kw))
        self.udp.append(listener)
        return udp_bound_port(listener)

    def start_tcp(self, port: int = 0, **kw: Any) -> int:
        kw.setdefault("idle_timeout", 5.0)
        server = self.run(start_tcp(self.holder, self.host, port, **kw))
        self.tcp.append(server)
        return tcp_bound_port(server)

    def udp_client(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.settimeout(TIMEOUT)
        return sock

    def tcp_client(self, port: int, rcvbuf: int | None = None) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(TIMEOUT)
        sock.connect((self.host, port))
        return sock

    def close(self) -> None:
        async def shutdown() -> None:
            for listener in self.udp:
                listener.close()
            for server in self.tcp:
                await stop_tcp(server)

        try:
            self.run(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
            self.loop.close()


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=HOSTS)
def h(request: pytest.FixtureRequest, loop_kind: str) -> Iterator[Harness]:
    harness = Harness(loop_kind, request.param)
    try:
        yield harness
    finally:
        harness.close()


UDP_PATHS = [
    pytest.param(
        True,
        id="batched",
        marks=pytest.mark.skipif(not mmsg.available(), reason="no recvmmsg here"),
    ),
    pytest.param(False, id="datagram-protocol"),
]


@pytest.fixture(params=UDP_PATHS)
def hu(request: pytest.FixtureRequest, h: Harness) -> Harness:
    """The harness, with each UDP path in turn (batched recvmmsg, DatagramProtocol)."""
    h.batched = request.param
    return h


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        data = sock.recv(n - len(chunks))
        if not data:
            raise EOFError(f"connection closed after {len(chunks)} of {n} bytes")
        chunks += data
    return bytes(chunks)


def read_msg(sock: socket.socket) -> bytes:
    return recv_exact(sock, int.from_bytes(recv_exact(sock, 2), "big"))


def assert_closed(sock: socket.socket, timeout: float = TIMEOUT) -> None:
    """Assert the peer closes the connection (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return
    assert data == b"", f"expected EOF, got {data[:40]!r}"


def assert_open(sock: socket.socket, qid: int, extra_flags: int = 0) -> None:
    q = query(qid)
    sock.sendall(frame(q))
    assert read_msg(sock) == answer(q, extra_flags)


# -- UDP ----------------------------------------------------------------------


def test_udp_answer(hu: Harness) -> None:
    port = hu.start_udp()
    assert port != 0
    with hu.udp_client() as c:
        q = query(1)
        c.sendto(q, (hu.host, port))
        data, _ = c.recvfrom(65535)
    assert data == answer(q)
    assert hu.engine.calls == [(1, False)]


def test_udp_drop_on_none(hu: Harness) -> None:
    port = hu.start_udp()
    with hu.udp_client() as c:
        c.sendto(query(ID_DROP), (hu.host, port))
        q = query(2)
        c.sendto(q, (hu.host, port))
        data, _ = c.recvfrom(65535)  # the first datagram back is the answer to q
    assert data == answer(q)
    assert hu.engine.calls == [(ID_DROP, False), (2, False)]


def test_udp_exception_keeps_listener(hu: Harness, caplog: pytest.LogCaptureFixture) -> None:
    port = hu.start_udp()
    with hu.udp_client() as c:
        c.sendto(query(ID_RAISE), (hu.host, port))
        q = query(3)
        c.sendto(q, (hu.host, port))
        data, _ = c.recvfrom(65535)
    assert data == answer(q)
    assert udp_stats(hu.udp[0]).errors == 1
    errors = [r for r in caplog.records if r.name == "nameserver.server" and r.exc_info]
    assert len(errors) == 1
    assert isinstance(errors[0].exc_info[1], RuntimeError)  # type: ignore[index]


def test_udp_holder_swap(hu: Harness) -> None:
    port = hu.start_udp()
    with hu.udp_client() as c:
        q = query(4)
        c.sendto(q, (hu.host, port))
        assert c.recvfrom(65535)[0] == answer(q)
        hu.holder.engine = EchoEngine(extra_flags=0x04)
        c.sendto(q, (hu.host, port))
        assert c.recvfrom(65535)[0] == answer(q, 0x04)


def test_udp_burst_answers_every_query_to_its_sender(hu: Harness) -> None:
    """More datagrams than one batch, from two clients, with drops and an engine error
    in the middle of batches: every other query is answered, to the client that sent it."""
    port = hu.start_udp()
    ids = list(range(1, 300))
    silent = {7, 64, 65, 130, 299}  # dropped by the engine (one at each batch edge)
    with hu.udp_client() as a, hu.udp_client() as b:
        sent: dict[int, bytes] = {}
        for qid in ids:
            wire_id = ID_DROP if qid in silent else qid
            q = query(wire_id, f"q{qid}.coop.")
            sent[qid] = q
            (a if qid % 2 else b).sendto(q, (hu.host, port))
        a.sendto(query(ID_RAISE), (hu.host, port))
        got: dict[socket.socket, list[bytes]] = {a: [], b: []}
        for c in (a, b):
            expected = sum(1 for qid in ids if (qid % 2 == (c is a)) and qid not in silent)
            while len(got[c]) < expected:
                got[c].append(c.recvfrom(65535)[0])
    for c, parity in ((a, 1), (b, 0)):
        want = {answer(sent[qid]) for qid in ids if qid % 2 == parity and qid not in silent}
        assert set(got[c]) == want
    wait_for(lambda: udp_stats(hu.udp[0]).errors == 1)


def test_batched_udp_slots_fit_the_largest_udp_answer() -> None:
    from nameserver.config import UDP_PAYLOAD_MAX

    assert mmsg.SLOT >= UDP_PAYLOAD_MAX
    if sys.platform.startswith("linux"):
        assert mmsg.available()  # the loopback self-test passes where recvmmsg exists


def test_udp_oversized_query_dropped(hu: Harness) -> None:
    port = hu.start_udp()
    with hu.udp_client() as c:
        c.sendto(query(8) + b"\0" * 5000, (hu.host, port))  # larger than any UDP query slot
        q = query(9)
        c.sendto(q, (hu.host, port))
        assert c.recvfrom(65535)[0] in (answer(q), answer(query(8) + b"\0" * 5000))
        if hu.batched:  # the batched path drops it before the engine sees it
            assert [qid for qid, _ in hu.engine.calls] == [9]
            assert udp_stats(hu.udp[0]).oversized == 1


def test_udp_counts_truncated(hu: Harness) -> None:
    port = hu.start_udp()
    hu.holder.engine = EchoEngine(extra_flags=0x02)  # TC
    with hu.udp_client() as c:
        for qid in (10, 11, 12):
            c.sendto(query(qid), (hu.host, port))
            c.recvfrom(65535)
    assert udp_stats(hu.udp[0]).truncated == 3


def test_udp_socket_options(hu: Harness) -> None:
    port = hu.start_udp(rcvbuf=65536)
    sock = hu.udp[0].sock
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 65536
    if ":" in hu.host:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    assert port == udp_bound_port(hu.udp[0])
    with pytest.raises(OSError):  # a second server on the same UDP port fails loudly
        hu.start_udp(port)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port(h: Harness) -> None:
    port = h.start_udp(reuse_port=True)
    assert h.start_udp(port, reuse_port=True) == port
    tport = h.start_tcp(reuse_port=True)
    assert h.start_tcp(tport, reuse_port=True) == tport
    with h.tcp_client(tport) as c:
        assert_open(c, 5)


def test_non_literal_host_rejected(h: Harness) -> None:
    with pytest.raises(ValueError):
        h.run(start_udp(h.holder, "localhost", 0))
    with pytest.raises(ValueError):
        h.run(start_tcp(h.holder, "localhost", 0))


# -- TCP ----------------------------------------------------------------------


def test_tcp_single_query(h: Harness) -> None:
    port = h.start_tcp()
    sock = h.tcp[0].sockets[0]
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
    if ":" in h.host:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    with pytest.raises(OSError):  # port taken (no SO_REUSEPORT)
        h.start_tcp(port)
    with h.tcp_client(port) as c:
        assert_open(c, 7)
    assert h.engine.calls == [(7, True)]
    stats = tcp_stats(h.tcp[0])
    assert stats.queries_answered == 1
    wait_for(lambda: stats.connections_open == 0)
    assert stats.connections_accepted == 1


def test_tcp_pipelined(h: Harness) -> None:
    port = h.start_tcp()
    queries = [query(i, f"host{i}.example.coop.") for i in range(100, 150)]
    with h.tcp_client(port) as c:
        c.sendall(b"".join(frame(q) for q in queries))
        for q in queries:
            assert read_msg(c) == answer(q)
    assert [qid for qid, _ in h.engine.calls] == list(range(100, 150))


def test_tcp_split_byte_by_byte(h: Harness) -> None:
    port = h.start_tcp()
    q1, q2 = query(11), query(12, "other.example.coop.")
    payload = frame(q1) + frame(q2)
    with h.tcp_client(port) as c:
        for i in range(len(payload)):
            c.sendall(payload[i : i + 1])
            time.sleep(0.001)
        assert read_msg(c) == answer(q1)
        assert read_msg(c) == answer(q2)
        # Odd-sized chunks straddling message boundaries.
        payload = b"".join(frame(query(i)) for i in range(20, 30))
        for i in range(0, len(payload), 7):
            c.sendall(payload[i : i + 7])
        for i in range(20, 30):
            assert read_msg(c) == answer(query(i))


def test_tcp_drop_and_exception_keep_connection(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    port = h.start_tcp()
    q1, q2 = query(21), query(22)
    with h.tcp_client(port) as c:
        c.sendall(frame(q1) + frame(query(ID_DROP)) + frame(query(ID_RAISE)) + frame(q2))
        assert read_msg(c) == answer(q1)
        assert read_msg(c) == answer(q2)
    stats = tcp_stats(h.tcp[0])
    assert (stats.queries_answered, stats.queries_dropped, stats.errors) == (2, 1, 1)
    errors = [r for r in caplog.records if r.name == "nameserver.server" and r.exc_info]
    assert len(errors) == 1


def test_tcp_oversized_response_closes(h: Harness) -> None:
    port = h.start_tcp()
    q1 = query(31)
    with h.tcp_client(port) as c:
        c.sendall(frame(q1) + frame(query(ID_HUGE)) + frame(query(32)))
        assert read_msg(c) == answer(q1)
        assert_closed(c)
    assert tcp_stats(h.tcp[0]).errors == 1


def test_tcp_holder_swap(h: Harness) -> None:
    port = h.start_tcp()
    with h.tcp_client(port) as c:
        assert_open(c, 41)
        h.holder.engine = EchoEngine(extra_flags=0x04)
        assert_open(c, 42, extra_flags=0x04)


@pytest.mark.parametrize("bad", [b"\x00\x00", b"\x00\x05hello"])
def test_tcp_short_message_closes(h: Harness, bad: bytes) -> None:
    port = h.start_tcp()
    q = query(51)
    with h.tcp_client(port) as c:
        c.sendall(frame(q) + bad + frame(query(52)))
        assert read_msg(c) == answer(q)
        assert_closed(c)
    assert [qid for qid, _ in h.engine.calls] == [51]
    assert tcp_stats(h.tcp[0]).malformed == 1


def test_tcp_idle_timeout(h: Harness) -> None:
    port = h.start_tcp(idle_timeout=0.3)
    stats = tcp_stats(h.tcp[0])
    with h.tcp_client(port) as c:
        # Queries keep resetting the timer well past the 0.3 s timeout.
        for i in range(6):
            if i:
                time.sleep(0.15)
            assert_open(c, 60 + i)
        last_answer = time.monotonic()
        assert_closed(c)
        assert 0.2 < time.monotonic() - last_answer < 1.5
    # A partial message does not count as activity (no slowloris).
    with h.tcp_client(port) as c:
        start = time.monotonic()
        c.sendall(b"\x00")
        assert_closed(c)
        assert time.monotonic() - start < 1.5
    wait_for(lambda: stats.idle_timeouts == 2 and stats.connections_open == 0)


def test_tcp_max_queries_per_connection(h: Harness) -> None:
    port = h.start_tcp(max_queries_per_connection=3)
    queries = [query(i) for i in range(70, 75)]
    with h.tcp_client(port) as c:
        c.sendall(b"".join(frame(q) for q in queries))
        for q in queries[:3]:
            assert read_msg(c) == answer(q)
        assert_closed(c)
    with h.tcp_client(port) as c:  # a new connection gets a fresh allowance
        for i in range(3):
            assert_open(c, 80 + i)
        assert_closed(c)


def test_tcp_connection_limit(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="nameserver.server")
    port = h.start_tcp(max_connections=2)
    stats = tcp_stats(h.tcp[0])
    a = h.tcp_client(port)
    b = h.tcp_client(port)
    try:
        assert_open(a, 1)
        assert_open(b, 2)  # both registered; b now idles
        time.sleep(0.6)
        assert_open(a, 3)  # a stays active
        time.sleep(0.6)  # b idle ~1.2 s > 1 s, a idle ~0.6 s
        with h.tcp_client(port) as c:
            assert_open(c, 4)  # served: the longest-idle connection (b) made room
            assert_closed(b)
            assert_open(a, 5)  # the active one is never cut
            with h.tcp_client(port) as d:
                assert_closed(d)  # nobody idle > 1 s: the newcomer is refused
            assert_open(a, 6)
            assert_open(c, 7)
        assert stats.connections_evicted == 1
        assert stats.connections_refused == 1
        warnings = [r for r in caplog.records if "connection limit" in r.getMessage()]
        assert len(warnings) == 1  # rate-limited to one per second
        assert warnings[0].levelno == logging.WARNING
    finally:
        a.close()
        b.close()
    wait_for(lambda: stats.connections_open == 0)


def test_tcp_connection_limit_refuses_when_all_active(h: Harness) -> None:
    port = h.start_tcp(max_connections=2)
    stats = tcp_stats(h.tcp[0])
    with h.tcp_client(port) as a, h.tcp_client(port) as b:
        assert_open(a, 1)
        assert_open(b, 2)
        for _ in range(3):
            with h.tcp_client(port) as extra:
                assert_closed(extra)
        assert_open(a, 3)
        assert_open(b, 4)
    assert stats.connections_refused == 3
    assert stats.connections_evicted == 0


def test_tcp_flow_control(h: Harness) -> None:
    """A client that doesn't read makes the server stop reading, not buffer without bound."""
    big = EchoEngine(pad_to=60000)
    h.holder.engine = big
    port = h.start_tcp(idle_timeout=10.0)
    stats = tcp_stats(h.tcp[0])
    n = 200  # 200 * 60 kB = 12 MB of answers, far beyond the socket buffers
    with h.tcp_client(port, rcvbuf=4096) as c:
        c.sendall(b"".join(frame(query(i)) for i in range(n)))
        wait_for(lambda: stats.write_pauses >= 1)
        time.sleep(0.2)
        handled = len(big.calls)
        assert handled < n
        time.sleep(0.2)
        assert len(big.calls) == handled  # still paused
        for i in range(n):
            resp = read_msg(c)
            assert len(resp) == 60000
            assert resp[:2] == i.to_bytes(2, "big")
        assert_open_big = query(9999)
        c.sendall(frame(assert_open_big))
        assert read_msg(c)[:2] == (9999).to_bytes(2, "big")
    assert len(big.calls) == n + 1


def test_tcp_stop_closes_connections(h: Harness) -> None:
    port = h.start_tcp()
    stats = tcp_stats(h.tcp[0])
    with h.tcp_client(port) as c:
        assert_open(c, 1)
        h.run(stop_tcp(h.tcp.pop()))
        assert_closed(c)
    wait_for(lambda: stats.connections_open == 0)


# -- wildcard listeners ----------------------------------------------------------------

def _loopback_aliases() -> list[str]:
    """Addresses of 127.0.0.0/8 besides 127.0.0.1 that answer here (Linux: all of it)."""
    found = []
    for addr in ("127.0.0.2", "127.0.0.3"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((addr, 0))
        except OSError:
            continue
        found.append(addr)
    return found


@pytest.mark.skipif(len(_loopback_aliases()) < 2, reason="127.0.0.2-3 are not local here")
@pytest.mark.parametrize("batched", UDP_PATHS)
def test_wildcard_udp_answers_from_the_address_asked(loop_kind: str, batched: bool) -> None:
    """A socket on 0.0.0.0 answers each query from the address it was sent to, within
    one batch too; otherwise the answer to 127.0.0.2 leaves from 127.0.0.1 (the route's
    source) and a resolver discards it."""
    harness = Harness(loop_kind, "0.0.0.0")
    try:
        harness.batched = batched
        port = harness.start_udp()
        targets = ["127.0.0.2", "127.0.0.1", "127.0.0.3"] * 30  # several per batch
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(TIMEOUT)
            sent = {}
            for qid, addr in enumerate(targets, start=1):
                q = query(qid)
                sent[qid] = (q, addr)
                c.sendto(q, (addr, port))
            for _ in targets:
                data, peer = c.recvfrom(65535)
                q, addr = sent[int.from_bytes(data[:2], "big")]
                assert data == answer(q)
                assert peer == (addr, port)
    finally:
        harness.close()


def test_specific_address_needs_no_packet_information(h: Harness) -> None:
    h.start_udp()
    sock = h.udp[0].sock
    if sock.family == socket.AF_INET6:
        assert sock.getsockopt(socket.IPPROTO_IPV6, mmsg.IPV6_RECVPKTINFO) == 0
    else:
        assert sock.getsockopt(socket.IPPROTO_IP, mmsg.IP_PKTINFO) == 0
