"""Metrics in the Prometheus text exposition format, gathered from every worker.

Why not prometheus-client: the text format (version 0.0.4) is a few lines of code —
a ``# HELP`` and a ``# TYPE`` line per metric and one ``name{label="value"} number``
line per sample — while the library's multiprocess mode, which a forking server
needs, keeps its values in memory-mapped files in a shared directory that every
process writes and that must be wiped at each start: a new dependency and a
directory to manage, for little. Here the counters stay where they already are
(plain ints in the engine and the transports) and travel to the supervisor:

* Each worker has a pipe to the supervisor, created before the fork. Once a second
  (an asyncio ``call_later`` loop; nothing is added to the query path) and once
  more when it exits, the worker writes one JSON line of its *cumulative* counters
  (:func:`worker_snapshot`). The write end is non-blocking: a snapshot that does
  not fit is finished later, and since every snapshot is cumulative nothing is
  lost by a late one.
* The supervisor reads the pipes in its select loop (:class:`ReportPipe`) and keeps
  the latest snapshot per worker in :class:`Metrics`. When a pipe reaches end of
  file — its worker has exited, after a reload, a stop or a crash — the worker's
  last snapshot is added to a "retired" total, so a counter never goes backwards
  across reloads and restarts (a worker killed outright loses at most its last
  second).
* A daemon thread in the supervisor (:class:`MetricsServer`, a
  ``ThreadingHTTPServer``) answers ``GET /metrics``; anything else is 404.

Label cardinality is bounded whatever the traffic: ``qtype`` is one of a fixed list
of mnemonics, ``none`` (no question) or ``other``; ``rcode`` one of 16 values;
``transport`` udp or tcp; ``zone`` one per configured zone; ``process`` two values.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dns.rcode
import dns.rdatatype

from nameserver.engine.core import COUNTED_QTYPES

logger = logging.getLogger("nameserver")

REPORT_INTERVAL = 1.0  # seconds between two snapshots from a worker
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HTTP_TIMEOUT = 10.0  # seconds a scraper has to send its request
MAX_LINE = 1 << 20  # a report line longer than this is garbage, not a snapshot

_QTYPE_LABELS: dict[bytes, str] = {
    # The engine counts these one by one and every other QTYPE as "other".
    int(dns.rdatatype.from_text(t)).to_bytes(2, "big"): t for t in COUNTED_QTYPES
}
_RCODE_LABELS = tuple(dns.rcode.to_text(i) for i in range(16))

# Counters in a worker's snapshot (all cumulative) and its gauges.
COUNTERS = (
    "queries_udp",
    "queries_tcp",
    "truncated",
    "malformed_udp",
    "malformed_tcp",
    "errors_udp",
    "errors_tcp",
    "udp_send_failures",
    "tcp_accepted",
    "tcp_refused",
    "tcp_evicted",
    "tcp_idle_timeouts",
)
GAUGES = ("tcp_open",)


# --------------------------------------------------------------------------- worker side


def worker_snapshot(engine: Any, udp: Iterable[Any], tcp: Iterable[Any]) -> dict[str, Any]:
    """The cumulative counters of one worker: ``engine`` (its bare Engine, with
    ``counts`` and ``dropped``) and the UDPStats and TCPStats of its listeners.

    The engine counts every message it handles, whatever the transport; the TCP
    counters say how many of those came over TCP, so UDP is the difference (plus
    the UDP messages whose handling raised, which the engine did not count).
    """
    responses: dict[str, int] = {}
    answered = 0
    for (qtype, rcode), n in engine.counts.items():  # a fresh dict each time
        answered += n
        label = f"{_QTYPE_LABELS.get(qtype[:2], 'other') if qtype else 'none'} "
        label += _RCODE_LABELS[rcode & 0x0F]
        responses[label] = responses.get(label, 0) + n
    udp_errors = udp_truncated = udp_oversized = udp_send_failures = 0
    for u in udp:
        udp_errors += u.errors
        udp_truncated += u.truncated
        udp_oversized += u.oversized
        udp_send_failures += u.send_errors
    t = dict.fromkeys(
        (
            "queries_answered",
            "queries_dropped",
            "errors",
            "malformed",
            "connections_accepted",
            "connections_refused",
            "connections_evicted",
            "idle_timeouts",
            "connections_open",
        ),
        0,
    )
    for s in tcp:
        for name in t:
            t[name] += getattr(s, name)
    dropped = engine.dropped
    # Every TCP message the engine handled was answered, dropped or (response too
    # long to frame) counted as a TCP error; errors also count exceptions.
    handled_tcp = t["queries_answered"] + t["queries_dropped"]
    counters = {
        "queries_udp": max(0, answered + dropped - handled_tcp) + udp_errors + udp_oversized,
        "queries_tcp": handled_tcp + t["errors"],
        "truncated": udp_truncated,
        "malformed_udp": max(0, dropped - t["queries_dropped"]) + udp_oversized,
        "malformed_tcp": t["queries_dropped"] + t["malformed"],
        "errors_udp": udp_errors,
        "errors_tcp": t["errors"],
        "udp_send_failures": udp_send_failures,
        "tcp_accepted": t["connections_accepted"],
        "tcp_refused": t["connections_refused"],
        "tcp_evicted": t["connections_evicted"],
        "tcp_idle_timeouts": t["idle_timeouts"],
    }
    return {"c": counters, "g": {"tcp_open": t["connections_open"]}, "r": responses}


def encode_snapshot(snapshot: dict[str, Any]) -> bytes:
    return json.dumps(snapshot, separators=(",", ":")).encode() + b"\n"


# --------------------------------------------------------------------------- supervisor side


class ReportPipe:
    """The supervisor's end of one worker's report pipe: bytes in, snapshots out."""

    __slots__ = ("fd", "key", "pid", "_buf")

    def __init__(self, fd: int, key: int, pid: int) -> None:
        self.fd = fd
        self.key = key  # unique for the supervisor's life, unlike pids and fds
        self.pid = pid
        self._buf = b""

    def read(self) -> tuple[dict[str, Any] | None, bool]:
        """Read what is there: (the newest complete snapshot or None, end of file)."""
        eof = False
        chunks = [self._buf]
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not data:
                eof = True
                break
            chunks.append(data)
        data = b"".join(chunks)
        *lines, self._buf = data.split(b"\n")
        if len(self._buf) > MAX_LINE:
            self._buf = b""
        latest = None
        for line in reversed(lines):
            snapshot = _parse_snapshot(line)
            if snapshot is not None:
                latest = snapshot
                break
        return latest, eof


def _parse_snapshot(line: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(line)
        snapshot = {
            "c": {k: int(v) for k, v in data["c"].items() if k in COUNTERS},
            "g": {k: int(v) for k, v in data["g"].items() if k in GAUGES},
            "r": {str(k): int(v) for k, v in data["r"].items()},
        }
    except (ValueError, TypeError, KeyError, AttributeError):
        logger.debug("unreadable worker report %r", line[:200])
        return None
    return snapshot


@dataclass(frozen=True)
class ZoneState:
    """What the metrics say about one zone being served."""

    origin: str
    serial: int
    records: int
    loaded_at: float
    load_seconds: float
    earliest_expiry: int | None


@dataclass(frozen=True)
class ServerState:
    """The supervisor's state as the metrics show it, published by the supervisor's
    thread and read by the HTTP thread (a new object each time, never changed)."""

    started_at: float
    generation: int
    supervisor_pid: int
    worker_pids: tuple[int, ...]
    zones: tuple[ZoneState, ...]
    # origin -> (whether its last load succeeded, when), for every configured zone
    zone_loads: tuple[tuple[str, bool, float], ...]
    reload_ok: bool
    reload_at: float
    query_log: bool
    worker_restarts: int
    version: str = ""


@dataclass
class _Totals:
    counters: dict[str, int] = field(default_factory=dict)
    responses: dict[str, int] = field(default_factory=dict)

    def add(self, snapshot: dict[str, Any]) -> None:
        for part, into in (("c", self.counters), ("r", self.responses)):
            for k, v in snapshot[part].items():
                into[k] = into.get(k, 0) + v


class Metrics:
    """Worker snapshots and the supervisor's state, rendered on demand (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[int, dict[str, Any]] = {}  # ReportPipe.key -> latest snapshot
        self._retired = _Totals()
        self._state: ServerState | None = None

    def update(self, key: int, snapshot: dict[str, Any]) -> None:
        with self._lock:
            self._live[key] = snapshot

    def retire(self, key: int) -> None:
        """The worker behind ``key`` has exited: its last snapshot joins the total."""
        with self._lock:
            snapshot = self._live.pop(key, None)
            if snapshot is not None:
                self._retired.add(snapshot)

    def publish(self, state: ServerState) -> None:
        self._state = state  # one reference: atomic for the reading thread

    def totals(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """(counters, responses by "QTYPE RCODE", gauges) over every worker ever."""
        with self._lock:
            totals = _Totals(dict(self._retired.counters), dict(self._retired.responses))
            gauges: dict[str, int] = {}
            for snapshot in self._live.values():
                totals.add(snapshot)
                for k, v in snapshot["g"].items():
                    gauges[k] = gauges.get(k, 0) + v
        for name in COUNTERS:
            totals.counters.setdefault(name, 0)
        for name in GAUGES:
            gauges.setdefault(name, 0)
        return totals.counters, totals.responses, gauges

    def render(self) -> str:
        """The whole exposition, as ``GET /metrics`` returns it."""
        counters, responses, gauges = self.totals()
        state = self._state
        out = _Exposition()
        by_transport = ("udp", "tcp")
        out.family(
            "dns_queries_total",
            "counter",
            "DNS messages received, by transport.",
            [({"transport": t}, counters[f"queries_{t}"]) for t in by_transport],
        )
        out.family(
            "dns_responses_total",
            "counter",
            "DNS responses sent, by QTYPE of the question (none: no question; other: "
            "a type without its own label) and RCODE.",
            [
                ({"qtype": qtype, "rcode": rcode}, n)
                for (qtype, rcode), n in sorted(
                    (tuple(k.split(" ", 1)), v) for k, v in responses.items()
                )
            ],
        )
        out.family(
            "dns_responses_truncated_total",
            "counter",
            "UDP responses sent with the TC bit set (the client should retry over TCP).",
            [({}, counters["truncated"])],
        )
        out.family(
            "dns_malformed_dropped_total",
            "counter",
            "Messages dropped unanswered as malformed (too short for a header, a "
            "response, or broken TCP framing), by transport.",
            [({"transport": t}, counters[f"malformed_{t}"]) for t in by_transport],
        )
        out.family(
            "dns_errors_total",
            "counter",
            "Messages whose handling failed with an internal error (logged), by transport.",
            [({"transport": t}, counters[f"errors_{t}"]) for t in by_transport],
        )
        out.family(
            "dns_udp_send_failures_total",
            "counter",
            "UDP answers the kernel refused to send (send buffer full, unreachable).",
            [({}, counters["udp_send_failures"])],
        )
        out.family(
            "dns_tcp_connections_open",
            "gauge",
            "TCP connections open now.",
            [({}, gauges["tcp_open"])],
        )
        for name, key, text in (
            ("accepted", "tcp_accepted", "TCP connections accepted (refused ones included)."),
            (
                "refused",
                "tcp_refused",
                "TCP connections closed on arrival because the connection limit was reached.",
            ),
            (
                "evicted",
                "tcp_evicted",
                "Idle TCP connections closed to make room at the connection limit.",
            ),
        ):
            out.family(f"dns_tcp_connections_{name}_total", "counter", text, [({}, counters[key])])
        out.family(
            "dns_tcp_idle_timeouts_total",
            "counter",
            "TCP connections closed because they were idle for tcp.idle_timeout.",
            [({}, counters["tcp_idle_timeouts"])],
        )
        if state is not None:
            self._render_state(out, state)
        return out.text()

    def _render_state(self, out: _Exposition, state: ServerState) -> None:
        zones = state.zones
        for name, kind, text, attr in (
            ("nameserver_zone_serial", "gauge", "SOA serial of the zone being served.", "serial"),
            ("nameserver_zone_records", "gauge", "Records in the zone being served.", "records"),
            (
                "nameserver_zone_loaded_timestamp_seconds",
                "gauge",
                "When the zone being served was loaded (Unix time).",
                "loaded_at",
            ),
            (
                "nameserver_zone_load_duration_seconds",
                "gauge",
                "How long loading the zone being served took.",
                "load_seconds",
            ),
        ):
            out.family(name, kind, text, [({"zone": z.origin}, getattr(z, attr)) for z in zones])
        out.family(
            "nameserver_zone_rrsig_expiry_timestamp_seconds",
            "gauge",
            "Earliest RRSIG expiration in the zone being served (Unix time); "
            "absent for an unsigned zone.",
            [
                ({"zone": z.origin}, z.earliest_expiry)
                for z in zones
                if z.earliest_expiry is not None
            ],
        )
        out.family(
            "nameserver_zone_last_load_success",
            "gauge",
            "Whether the last attempt to load the zone succeeded (1) or was refused (0, "
            "the previous version is still served if there was one).",
            [({"zone": origin}, int(ok)) for origin, ok, _ in state.zone_loads],
        )
        out.family(
            "nameserver_zone_last_load_timestamp_seconds",
            "gauge",
            "When the zone was last loaded or tried (Unix time).",
            [({"zone": origin}, at) for origin, _, at in state.zone_loads],
        )
        out.family(
            "nameserver_reload_last_success",
            "gauge",
            "Whether the last reload (or the start) went through without an error.",
            [({}, int(state.reload_ok))],
        )
        out.family(
            "nameserver_reload_last_timestamp_seconds",
            "gauge",
            "When the last reload (or the start) happened (Unix time).",
            [({}, state.reload_at)],
        )
        workers_rss = sum(_rss(pid) for pid in state.worker_pids)
        out.family(
            "nameserver_memory_rss_bytes",
            "gauge",
            "Resident memory of the supervisor and of all its workers together (pages "
            "the workers share with the supervisor count in each).",
            [
                ({"process": "supervisor"}, _rss(state.supervisor_pid)),
                ({"process": "workers"}, workers_rss),
            ],
        )
        out.family(
            "nameserver_workers",
            "gauge",
            "Worker processes running.",
            [({}, len(state.worker_pids))],
        )
        out.family(
            "nameserver_worker_restarts_total",
            "counter",
            "Workers that died and were started again.",
            [({}, state.worker_restarts)],
        )
        out.family(
            "nameserver_generation",
            "gauge",
            "Worker generation: goes up by one at each reload.",
            [({}, state.generation)],
        )
        out.family(
            "nameserver_query_log_enabled",
            "gauge",
            "Whether the query log is on.",
            [({}, int(state.query_log))],
        )
        out.family(
            "nameserver_start_time_seconds",
            "gauge",
            "When the server started (Unix time).",
            [({}, state.started_at)],
        )
        out.family(
            "nameserver_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            [({}, max(0.0, time.time() - state.started_at))],
        )
        out.family(
            "nameserver_build_info",
            "gauge",
            "Always 1; the label says which version is running.",
            [({"version": state.version}, 1)],
        )


def _rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _Exposition:
    """Builds the text format: https://prometheus.io/docs/instrumenting/exposition_formats/"""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        text: str,
        samples: Iterable[tuple[dict[str, str], float | int]],
    ) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
                self._lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                self._lines.append(f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    server_version = "nameserver-metrics"
    protocol_version = "HTTP/1.0"
    timeout = HTTP_TIMEOUT

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "only /metrics is here")
            return
        try:
            body = self.server.render().encode()  # type: ignore[attr-defined]
        except Exception:
            logger.exception("metrics: rendering failed")
            self.send_error(500)
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Never straight to stderr: the supervisor forks while this thread runs, and
        # the logging module's locks are the ones made safe across fork.
        logger.debug("metrics: %s " + format, self.address_string(), *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the address up in the DNS (getfqdn): a
        # name server must not wait on a resolver to start.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints to sys.stderr itself; through logging instead (see above).
        logger.debug("metrics: request from %s failed", client_address, exc_info=True)


class MetricsServer:
    """``GET /metrics`` on ``address``:``port``, answered by ``render`` in threads."""

    def __init__(self, address: str, port: int, render: Callable[[], str]) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server_class = type("_Server", (_HTTPServer,), {"address_family": family})
        self.httpd = server_class((address, port), _Handler)  # binds now
        self.httpd.render = render  # type: ignore[attr-defined]
        self.address, self.port = address, int(self.httpd.server_address[1])
        host = f"[{address}]" if ":" in address else address
        self.url = f"http://{host}:{self.port}/metrics"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.25},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()

    def fileno(self) -> int:
        return self.httpd.fileno()

    def close_in_child(self) -> None:
        """In a forked worker: close the inherited listening socket (no thread runs)."""
        with contextlib.suppress(OSError):
            self.httpd.socket.close()

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(5)
        self.httpd.server_close()
