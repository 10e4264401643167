#!/usr/bin/env python3
"""Answer latency and lost queries while the server reloads a large zone.

What it measures: our server (``nameserver serve``, one supervisor and its workers) is
started on a zone, a steady UDP load is sent at a fixed rate (open loop: a query leaves on
schedule whether or not earlier ones were answered), and while that load runs the zone is
reloaded K times, one after another, through the control socket.  Every query is timed
from just before ``sendto`` to the kernel's receive timestamp of its answer
(``SO_TIMESTAMPNS``, so the client thread's own scheduling delays are left out; the
user-space receive time is kept too, for comparison).  An answer later than ``--timeout``
seconds, or none at all, counts as lost.

Reported: queries sent, answered, lost; latency p50 / p99 / p99.9 / max overall, for the
queries sent during a reload (from the reload command to its reply, which comes once the
new workers answer and the old ones have stopped) and for those sent outside; per reload
its duration, the new generation and worker, the SOA serial answered afterwards and its
own figures; every stretch of more than ``--silence`` ms with no answer arriving at all
(what a pause in answering shows) and the worst seconds, each with what the server was
doing then (the reload step from its log, how long the newest worker had been up) and the
CPU use of the machine, the supervisor and the workers (sampled from /proc).

Usage (stdlib and dnspython only)::

    python benchmarks/reload_latency.py --zone /tmp/z1m.signed --delegations 1000000 \\
        --duration 120 --reloads 3 --rate 5000 [--json out.json]

The query names come from ``genqueries.py`` (``--mix tld``, DNSSEC OK, EDNS 1232).  The
server gets a free loopback port and its own control socket in a private (0700) temporary
directory, and is stopped by PID at the end whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import genqueries  # noqa: E402
import refservers as rs  # noqa: E402

from nameserver.control import ControlError, send  # noqa: E402

# Linux: kernel receive timestamps as a struct timespec (not exposed by the socket module).
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@qq")
RECV_BUFFER = 4 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------


@dataclass
class QuerySet:
    """Prepared query messages (ID 0, patched per send) and their question sections."""

    wires: list[bytes]
    questions: list[bytes]


def make_queries(delegations: int, count: int, seed: int | None) -> QuerySet:
    """``count`` queries of genqueries' tld mix, as wire messages with DO set."""
    out = io.StringIO()
    if seed is None:
        genqueries.generate(delegations, count, "tld", out=out)
    else:
        genqueries.generate(delegations, count, "tld", seed=seed, out=out)
    wires: list[bytes] = []
    questions: list[bytes] = []
    for line in out.getvalue().splitlines():
        name, qtype = line.split()
        msg = dns.message.make_query(name, qtype, want_dnssec=True, use_edns=0, payload=1232)
        msg.id = 0
        wire = msg.to_wire()
        end = 12
        while wire[end]:
            end += wire[end] + 1
        wires.append(wire)
        questions.append(wire[12 : end + 5].lower())
    return QuerySet(wires, questions)


# --------------------------------------------------------------------------------------------
# Load: one sender thread at a fixed rate, one receiver thread matching answers by ID
# --------------------------------------------------------------------------------------------


class Load:
    """Open-loop UDP load. Sequence number ``s`` uses query ``s % len(queries)`` and ID
    ``s & 0xFFFF``; times are ``time.time_ns()`` (CLOCK_REALTIME, as kernel timestamps)."""

    def __init__(
        self, address: str, port: int, queries: QuerySet, rate: float, capacity: int
    ) -> None:
        self.queries = queries
        self.rate = rate
        self.capacity = capacity
        self.sent_ns = [0] * capacity
        self.kernel_ns = [0] * capacity  # kernel receive timestamp of the answer (0: none)
        self.user_ns = [0] * capacity  # when the receiver thread got it
        self.count = 0  # queries sent
        self.duplicates = 0
        self.unmatched = 0
        self.max_behind = 0.0  # seconds the sender fell behind its schedule, at most
        self.kernel_stamps = True
        self._by_id = [-1] * 65536
        self._stop_send = threading.Event()
        self._stop_recv = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            self.kernel_stamps = False
        self.sock.connect((address, port))
        self.sock.settimeout(0.2)
        self._sender = threading.Thread(target=self._send_loop, name="sender", daemon=True)
        self._receiver = threading.Thread(target=self._recv_loop, name="receiver", daemon=True)
        self.started_ns = 0

    def start(self) -> None:
        self.started_ns = time.time_ns()
        self._receiver.start()
        self._sender.start()

    def stop_sending(self) -> None:
        self._stop_send.set()
        if self._sender.is_alive():
            self._sender.join()

    def stop_receiving(self) -> None:
        self._stop_recv.set()
        self._receiver.join()
        self.sock.close()

    def _send_loop(self) -> None:
        wires = self.queries.wires
        n = len(wires)
        by_id = self._by_id
        sent_ns = self.sent_ns
        send = self.sock.send
        start = time.monotonic()
        rate = self.rate
        seq = 0
        while not self._stop_send.is_set() and seq < self.capacity:
            due = min(int((time.monotonic() - start) * rate), self.capacity)
            if due - seq > 1:
                behind = (due - seq) / self.rate
                self.max_behind = max(self.max_behind, behind)
            while seq < due:
                qid = seq & 0xFFFF
                wire = wires[seq % n]
                by_id[qid] = seq
                sent_ns[seq] = time.time_ns()
                # An error (e.g. ECONNREFUSED after an ICMP): that query counts as lost.
                with contextlib.suppress(OSError):
                    send(qid.to_bytes(2, "big") + wire[2:])
                seq += 1
                self.count = seq
            time.sleep(0.001)

    def _recv_loop(self) -> None:
        recvmsg = self.sock.recvmsg
        ancsize = socket.CMSG_SPACE(_TIMESPEC.size)
        questions = self.queries.questions
        n = len(questions)
        by_id = self._by_id
        while not self._stop_recv.is_set():
            try:
                data, ancdata, _, _ = recvmsg(65535, ancsize)
            except (TimeoutError, ConnectionRefusedError):
                continue
            now = time.time_ns()
            if len(data) < 12:
                self.unmatched += 1
                continue
            seq = by_id[int.from_bytes(data[:2], "big")]
            question = questions[seq % n] if seq >= 0 else b""
            if seq < 0 or data[12 : 12 + len(question)].lower() != question:
                self.unmatched += 1  # a second answer, or one too late for a reused ID
                continue
            if self.user_ns[seq]:
                self.duplicates += 1
                continue
            stamp = now
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
                    stamp = sec * 1_000_000_000 + nsec
            self.kernel_ns[seq] = stamp
            self.user_ns[seq] = now


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence (None if empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Figures:
    sent: int = 0
    answered: int = 0
    lost: int = 0
    late: int = 0  # answered, but after the timeout (also counted in lost)
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None


def figures(load: Load, seqs: Sequence[int], timeout_ns: int) -> Figures:
    lat: list[float] = []
    late = lost = 0
    for s in seqs:
        got = load.kernel_ns[s]
        if not got:
            lost += 1
            continue
        ns = got - load.sent_ns[s]
        if ns > timeout_ns:
            late += 1
            lost += 1
            continue
        lat.append(ns / 1e6)
    lat.sort()
    return Figures(
        sent=len(seqs),
        answered=len(lat),
        lost=lost,
        late=late,
        p50_ms=percentile(lat, 50),
        p99_ms=percentile(lat, 99),
        p999_ms=percentile(lat, 99.9),
        max_ms=lat[-1] if lat else None,
    )


def silences(load: Load, threshold_ms: float) -> list[tuple[float, float]]:
    """Every stretch longer than ``threshold_ms`` with no answer arriving at the client:
    (when it began, in seconds after the load started; its length in ms)."""
    stamps = sorted(t for t in load.kernel_ns[: load.count] if t)
    limit = threshold_ms * 1e6
    return [
        ((a - load.started_ns) / 1e9, (b - a) / 1e6)
        for a, b in zip(stamps, stamps[1:], strict=False)
        if b - a > limit
    ]


class CpuSampler:
    """Every ``interval`` s: the machine's CPU ticks (busy, idle, steal) from /proc/stat and
    the server's, split into the supervisor and its workers, from /proc/<pid>/stat."""

    def __init__(self, supervisor: int, interval: float = 0.25) -> None:
        self.supervisor = supervisor
        self.interval = interval
        self.samples: list[tuple[int, int, int, int, int, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @staticmethod
    def _ticks(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[11]) + int(fields[12])  # utime + stime

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with open("/proc/stat") as fh:
                cpu = [int(x) for x in fh.readline().split()[1:]]
            idle, steal = cpu[3] + cpu[4], cpu[7] if len(cpu) > 7 else 0
            busy = sum(cpu[:8]) - idle - steal
            workers = {p: self._ticks(p) for p in rs.process_tree_pids(self.supervisor)[1:]}
            self.samples.append(
                (time.time_ns(), busy, idle, steal, self._ticks(self.supervisor), workers)
            )

    def between(self, start_ns: int, end_ns: int) -> dict[str, float]:
        """CPU use between two times, in % of one CPU (the machine: of all of them)."""
        inside = [s for s in self.samples if start_ns <= s[0] <= end_ns]
        if len(inside) < 2:
            return {}
        a, b = inside[0], inside[-1]
        seconds = (b[0] - a[0]) / 1e9
        hz = os.sysconf("SC_CLK_TCK")
        # Workers come and go: add up each sampling interval's ticks (a worker forked in
        # between counts from 0; one that exits loses only its last interval).
        worker_ticks = sum(
            t - prev[5].get(p, 0)
            for prev, cur in zip(inside, inside[1:], strict=False)
            for p, t in cur[5].items()
        )
        total = (b[1] - a[1]) + (b[2] - a[2]) + (b[3] - a[3]) or 1
        return {
            "machine_busy_pct": 100 * (b[1] - a[1]) / total,
            "machine_steal_pct": 100 * (b[3] - a[3]) / total,
            "supervisor_pct": 100 * (b[4] - a[4]) / hz / seconds,
            "workers_pct": 100 * worker_ticks / hz / seconds,
        }


def timeline(load: Load, timeout_ns: int, cpu: CpuSampler) -> list[dict[str, Any]]:
    """Per second of the load (by send time): the queries' figures and the CPU use."""
    bins: dict[int, list[int]] = {}
    for s in range(load.count):
        bins.setdefault((load.sent_ns[s] - load.started_ns) // 1_000_000_000, []).append(s)
    rows = []
    for second in sorted(bins):
        start = load.started_ns + second * 1_000_000_000
        rows.append(
            {
                "second": second,
                **asdict(figures(load, bins[second], timeout_ns)),
                **cpu.between(start, start + 1_000_000_000),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------
# Server control
# --------------------------------------------------------------------------------------------


def control(path: Path, request: dict[str, object], timeout: float) -> dict[str, Any]:
    """One command over the control socket, as ``nameserver reload|status`` send it."""
    try:
        return send(path, request, timeout)
    except ControlError as e:
        raise OSError(str(e)) from None


def soa_serial(address: str, port: int, origin: str) -> int | None:
    query = dns.message.make_query(origin, dns.rdatatype.SOA)
    try:
        answer = dns.query.udp(query, address, port=port, timeout=2.0)
    except (OSError, dns.exception.DNSException):
        return None
    for rrset in answer.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


@dataclass
class Reload:
    index: int
    start_s: float  # seconds after the load started
    end_s: float
    ok: bool
    messages: list[str]
    generation: int | None
    workers: list[int]
    serial: int | None
    start_ns: int = 0
    end_ns: int = 0
    figures: Figures = field(default_factory=Figures)


def run_reloads(
    sock: Path,
    load: Load,
    args: argparse.Namespace,
    address: str,
    port: int,
    origin: str,
) -> list[Reload]:
    done: list[Reload] = []
    time.sleep(args.warmup)
    for k in range(args.reloads):
        if k:
            time.sleep(args.gap)
        start_ns = time.time_ns()
        try:
            reply = control(sock, {"command": "reload"}, args.reload_timeout)
        except (OSError, ValueError) as e:
            reply = {"ok": False, "messages": [f"control socket: {e}"]}
        end_ns = time.time_ns()
        try:
            status = control(sock, {"command": "status"}, 10.0).get("status", {})
        except (OSError, ValueError):
            status = {}
        r = Reload(
            index=k + 1,
            start_s=(start_ns - load.started_ns) / 1e9,
            end_s=(end_ns - load.started_ns) / 1e9,
            ok=bool(reply.get("ok")),
            messages=[str(m) for m in reply.get("messages", [])],
            generation=status.get("generation"),
            workers=[w["pid"] for w in status.get("workers", [])],
            serial=soa_serial(address, port, origin),
            start_ns=start_ns,
            end_ns=end_ns,
        )
        print(
            f"  reload {r.index}: {r.start_s:.1f}-{r.end_s:.1f} s after the load began "
            f"({r.end_s - r.start_s:.1f} s), ok={r.ok}, generation {r.generation}, "
            f"workers {r.workers}, serial {r.serial}",
            flush=True,
        )
        done.append(r)
    return done


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zone", default="/tmp/z1m.signed", help="signed zone file")
    p.add_argument("--origin", default="coop.")
    p.add_argument(
        "--delegations",
        type=int,
        default=1_000_000,
        help="delegations the zone was generated with (for the query names)",
    )
    p.add_argument("--seed", type=int, default=None, help="genzone seed (default: its own)")
    p.add_argument(
        "--distinct",
        type=int,
        default=200_000,
        help="distinct queries, sent in a loop (default 200000)",
    )
    p.add_argument("--rate", type=float, default=5000.0, help="queries per second")
    p.add_argument(
        "--duration",
        type=float,
        default=120.0,
        help="seconds of load at least (longer if the reloads are not done)",
    )
    p.add_argument("--reloads", type=int, default=3)
    p.add_argument("--warmup", type=float, default=10.0, help="load before the first reload")
    p.add_argument("--gap", type=float, default=5.0, help="seconds between two reloads")
    p.add_argument("--tail", type=float, default=10.0, help="load after the last reload, at least")
    p.add_argument(
        "--timeout", type=float, default=2.0, help="an answer later than this counts as lost"
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--start-timeout", type=float, default=180.0)
    p.add_argument("--reload-timeout", type=float, default=300.0)
    p.add_argument(
        "--silence", type=float, default=20.0, help="list stretches without answers over this (ms)"
    )
    p.add_argument("--server-log", metavar="FILE", help="keep a copy of the server's log here")
    p.add_argument("--json", metavar="FILE", help="also write the figures here")
    return p.parse_args(argv)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cpu(use: dict[str, Any]) -> str:
    if "machine_busy_pct" not in use:
        return "not sampled"
    return (
        f"machine {use['machine_busy_pct']:.0f} % busy (of {os.cpu_count()} CPUs), steal "
        f"{use['machine_steal_pct']:.1f} %, supervisor {use['supervisor_pct']:.0f} %, workers "
        f"{use['workers_pct']:.0f} % (of one CPU)"
    )


def _row(label: str, f: Figures) -> str:
    return (
        f"| {label} | {f.sent:,} | {f.answered:,} | {f.lost:,} | {_ms(f.p50_ms)} | "
        f"{_ms(f.p99_ms)} | {_ms(f.p999_ms)} | {_ms(f.max_ms)} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    zone = Path(args.zone).resolve()
    if not zone.is_file():
        print(f"no zone file {zone}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    queries = make_queries(args.delegations, args.distinct, args.seed)
    print(f"{len(queries.wires):,} queries prepared in {time.monotonic() - t0:.1f} s", flush=True)

    address, port = "127.0.0.1", rs.free_port()
    # A private directory (mkdtemp: mode 0700) for the control socket and the server's
    # log; start_process removes it when the server is stopped.
    workdir = Path(tempfile.mkdtemp(prefix="reload-latency-"))
    os.chmod(workdir, 0o700)
    sock = workdir / "control.sock"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    argv_server = [
        sys.executable, "-m", "nameserver", "serve",
        "--zone", f"{args.origin}={zone}",
        "--listen", f"{address}@{port}",
        "--workers", str(args.workers),
        "--control", str(sock),
        "--log-level", "info",
    ]  # fmt: skip
    print("server:", " ".join(argv_server), flush=True)
    srv = rs.start_process(
        "ours", argv_server, args.origin, port, address, workdir=workdir, cwd=REPO, env=env
    )
    load: Load | None = None
    reloads: list[Reload] = []
    first_serial: int | None = None
    cpu = CpuSampler(srv.pid)
    try:
        ready = srv.wait_ready(args.start_timeout, interval=0.2)
        first_serial = soa_serial(address, port, args.origin)
        print(
            f"server pid {srv.pid} answers after {ready:.1f} s, serial {first_serial}", flush=True
        )
        longest = (
            args.warmup
            + args.reloads * (args.reload_timeout + args.gap)
            + max(args.duration, args.tail)
            + 10
        )
        load = Load(address, port, queries, args.rate, int(args.rate * longest))
        cpu.start()
        load.start()
        reloads = run_reloads(sock, load, args, address, port, args.origin)
        last_end = max((r.end_ns for r in reloads), default=load.started_ns)
        stop_at = max(load.started_ns + args.duration * 1e9, last_end + args.tail * 1e9)
        while time.time_ns() < stop_at and srv.alive():
            time.sleep(0.2)
        load.stop_sending()
        time.sleep(args.timeout + 0.5)  # the last queries get their full timeout
        load.stop_receiving()
    finally:
        cpu.stop()
        if load is not None:
            load.stop_sending()
        log = srv.log_text()  # whole, before stop() keeps only its end
        srv.stop()
    if args.server_log:
        Path(args.server_log).write_text(log)
    assert load is not None
    report(args, load, reloads, cpu, log, first_serial)
    failed = any(not r.ok for r in reloads) or len(reloads) < args.reloads
    return 1 if failed else 0


_EVENTS = re.compile(
    r"nameserver: (control: reload|zone \S+ loaded:|worker \d+ (started|stopped)|reload done)"
)


def server_events(log: str, started_ns: int) -> list[tuple[float, str]]:
    """The reload steps in the server's log, as (seconds after the load started, text)."""
    events = []
    for line in log.splitlines():
        if not _EVENTS.search(line):
            continue
        try:
            stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
            stamp += int(line[20:23]) / 1000
        except ValueError:
            continue
        text = line[24:].split(": ", 1)[-1]
        events.append((stamp - started_ns / 1e9, text))
    return events


def phase(at: float, reloads: Sequence[Reload], events: Sequence[tuple[float, str]]) -> str:
    """What the server was doing at ``at`` s: the reload and its last logged step, and how
    long the newest worker had been up."""
    started = [t for t, text in events if t <= at and re.match(r"worker \d+ started", text)]
    age = f"newest worker up {at - started[-1]:.1f} s" if started else "worker age unknown"
    for r in reloads:
        if r.start_s <= at <= r.end_s:
            steps = [text for t, text in events if r.start_s - 0.5 <= t <= at]
            last = "started"
            if steps:
                last = re.sub(r" loaded:.*", " loaded", steps[-1].split(",")[0].split(" (")[0])
            return f"reload {r.index}, after '{last}'; {age}"
    return f"no reload; {age}"


def report(
    args: argparse.Namespace,
    load: Load,
    reloads: list[Reload],
    cpu: CpuSampler,
    log: str,
    first_serial: int | None,
) -> None:
    timeout_ns = int(args.timeout * 1e9)
    sent = load.count
    during: list[int] = []
    for r in reloads:
        members = [s for s in range(sent) if r.start_ns <= load.sent_ns[s] <= r.end_ns]
        r.figures = figures(load, members, timeout_ns)
        during.extend(members)
    in_reload = set(during)
    outside = [s for s in range(sent) if s not in in_reload]
    overall = figures(load, range(sent), timeout_ns)
    fig_during = figures(load, during, timeout_ns)
    fig_outside = figures(load, outside, timeout_ns)
    elapsed = (load.sent_ns[sent - 1] - load.started_ns) / 1e9 if sent else 0.0
    gaps = silences(load, args.silence)
    seconds = timeline(load, timeout_ns, cpu)
    events = server_events(log, load.started_ns)
    client = sorted(
        (load.user_ns[s] - load.kernel_ns[s]) / 1e6 for s in range(sent) if load.kernel_ns[s]
    )
    cpu_during = [cpu.between(r.start_ns, r.end_ns) for r in reloads]
    kernel = "the kernel's receive timestamp" if load.kernel_stamps else "user space"

    print()
    print(
        f"load: {sent:,} queries in {elapsed:.1f} s ({sent / max(elapsed, 1e-9):,.0f}/s, "
        f"asked {args.rate:,.0f}/s; sender at most {load.max_behind * 1000:.1f} ms behind), "
        f"{len(reloads)} reloads, timeout {args.timeout:g} s; latency from sendto to {kernel}"
    )
    print()
    print("| queries | sent | answered | lost | p50 ms | p99 ms | p99.9 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|")
    print(_row("all", overall))
    print(_row("sent during a reload", fig_during))
    print(_row("sent outside reloads", fig_outside))
    for r in reloads:
        print(_row(f"reload {r.index} ({r.end_s - r.start_s:.1f} s)", r.figures))
    print()
    for r, use in zip(reloads, cpu_during, strict=True):
        note = "; ".join(r.messages)
        print(
            f"reload {r.index}: {r.start_s:.1f}-{r.end_s:.1f} s, ok={r.ok}, generation "
            f"{r.generation}, workers {r.workers}, serial after {r.serial} ({note}); "
            f"CPU: {_cpu(use)}"
        )
    print(f"serial before the reloads: {first_serial}")
    print(
        f"late answers (after the timeout, counted as lost): {overall.late}; "
        f"duplicates {load.duplicates}; unmatched {load.unmatched}"
    )
    print(f"stretches of more than {args.silence:g} ms with no answer at all: {len(gaps)}")
    for at, ms in sorted(gaps, key=lambda g: -g[1])[:10]:
        print(f"  {ms:7.1f} ms at {at:6.1f} s ({phase(at, reloads, events)})")
    full = [row for row in seconds if row["sent"] >= args.rate * 0.5]
    print("worst seconds by max latency (by send time):")
    for row in sorted(full, key=lambda row: -(row["max_ms"] or 0))[:8]:
        print(
            f"  {row['second']:4d} s: p99 {_ms(row['p99_ms'])} ms, max {_ms(row['max_ms'])} ms,"
            f" lost {row['lost']}; CPU: {_cpu(row)} ({phase(row['second'] + 0.5, reloads, events)})"
        )
    print(
        f"client receive delay (user space - kernel stamp): p50 {_ms(percentile(client, 50))}"
        f" ms, p99 {_ms(percentile(client, 99))} ms, max {_ms(client[-1] if client else None)}"
        " ms"
    )
    print("server log, reload steps (s after the load began):")
    for at, text in events:
        print(f"  {at:7.2f}  {text}")

    if args.json:
        result = {
            "args": vars(args),
            "sent": sent,
            "elapsed_s": elapsed,
            "overall": asdict(overall),
            "during_reloads": asdict(fig_during),
            "outside_reloads": asdict(fig_outside),
            "reloads": [asdict(r) | {"cpu": u} for r, u in zip(reloads, cpu_during, strict=True)],
            "first_serial": first_serial,
            "silences": gaps,
            "timeline": seconds,
            "server_events": events,
            "sender_max_behind_s": load.max_behind,
            "kernel_timestamps": load.kernel_stamps,
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
