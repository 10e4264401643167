#!/usr/bin/env python3
"""Benchmark our nameserver against Knot DNS and NSD with dnsperf, on loopback.

    python benchmarks/run.py [--delegations 10000] [--queries 1000000] [--duration 20]
                             [--rounds 3] [--servers ours,knot,nsd]
                             [--mix tld-do,tld,random-do] [--pin]

Generates (or reuses) a zone and query files in benchmarks/out/, starts every server on its
own loopback port, runs dnsperf against each server in turn for every mix, round after round
(each throughput run followed by a rate-limited per-query run for p50/p99 latency), and
prints medians.  The same report goes to benchmarks/out/latest.md (per-run samples in
latest.json, raw dnsperf output in latest-raw.log).  See benchmarks/README.md.

Standard library only, except the correctness sample, which uses dnspython (a dependency of
the project: run with its venv) and is skipped, with a note in the report, without it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import refservers as rs  # noqa: E402

ORIGIN = "coop."
KNOWN_SERVERS = ("ours", "knot", "nsd")
BASE_MIXES = ("tld", "random")
MIX_SUFFIXES = {
    "": [],
    "do": ["-D"],
    "edns": ["-e"],
    # TCP: dnsperf keeps each client's connection for many queries (RFC 7766 reuse).
    "do-tcp": ["-D", "-m", "tcp"],
    "tcp": ["-m", "tcp"],
    # TCP, one connection per query: connect, query, answer, close. dnsperf 2.10 cannot
    # measure a server's capacity this way (README: "One connection per query"), so these
    # mixes run at a fixed offered rate with their own clients (see TCP1_* and --tcp1-*).
    "do-tcp1": ["-D", "-m", "tcp", "-O", "num-queries-per-conn=1"],
    "tcp1": ["-m", "tcp", "-O", "num-queries-per-conn=1"],
}
ONE_QUERY_PER_CONN = ("do-tcp1", "tcp1")
# dnsperf settings of the one-connection-per-query mixes: 100 connections (NSD's default
# tcp-count) in 4 sender/receiver thread pairs, at most one query per connection in
# flight, and 200 queries (connections) per second: a rate every server reached in every
# trial here, which also keeps dnsperf's TIME_WAIT ports far below the 28k ephemeral
# ports (dnsperf binds each connection's port and closes first).
TCP1_CLIENTS, TCP1_THREADS, TCP1_RATE = 100, 4, 200
DEFAULT_OURS_CMD = (
    "{python} -m nameserver serve --zone coop.={zone} --listen {address}@{port}"
    " --workers {workers} --control {control}"
)
MB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    name: str  # e.g. "tld-do"
    base: str  # query file kind passed to genqueries.py --mix
    flags: tuple[str, ...]  # extra dnsperf flags
    # Per-mix dnsperf settings; None: the command line's --clients / --outstanding, one
    # thread, no rate limit.
    clients: int | None = None  # -c
    outstanding: int | None = None  # -q
    threads: int | None = None  # -T
    rate: int | None = None  # -Q, for the throughput run and as a cap for the latency run

    @property
    def one_query_per_conn(self) -> bool:
        return "num-queries-per-conn=1" in self.flags

    @property
    def transport(self) -> str:
        return "tcp" if "tcp" in self.flags else "udp"


def parse_mix(text: str) -> Mix:
    base, _, suffix = text.strip().partition("-")
    if base not in BASE_MIXES or suffix not in MIX_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"bad mix {text!r}: expected one of {', '.join(BASE_MIXES)}"
            " optionally followed by -do (DNSSEC OK, implies EDNS), -edns, -tcp, -do-tcp"
            " (TCP, many queries per connection), -tcp1 or -do-tcp1 (one per connection)"
        )
    mix = Mix(text.strip(), base, tuple(MIX_SUFFIXES[suffix]))
    if suffix in ONE_QUERY_PER_CONN:
        mix = replace(
            mix, clients=TCP1_CLIENTS, outstanding=TCP1_CLIENTS, threads=TCP1_THREADS,
            rate=TCP1_RATE,
        )
    return mix


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [kind(x) for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        return items

    return parse


def _server_name(text: str) -> str:
    name = text.strip()
    if name not in KNOWN_SERVERS:
        raise argparse.ArgumentTypeError(f"unknown server {name!r} (known: {KNOWN_SERVERS})")
    return name


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--delegations", type=int, default=10000, help="delegations in the zone")
    p.add_argument("--seed", type=int, default=1844, help="generator seed (genzone default)")
    p.add_argument(
        "--unsigned", dest="signed", action="store_false",
        help="serve the zone unsigned (default: signed with NSEC3 opt-out by dnssec-signzone)",
    )
    p.add_argument("--queries", type=int, default=1000000, help="queries per query file")
    p.add_argument("--duration", type=float, default=20, help="seconds per dnsperf run (-l)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    p.add_argument(
        "--servers",
        type=_csv(_server_name),
        default=list(KNOWN_SERVERS),
        help="comma-separated subset of ours,knot,nsd",
    )
    p.add_argument(
        "--mix",
        type=_csv(parse_mix),
        default="tld-do,tld,random-do",
        help="comma-separated mixes: tld|random [-do|-edns|-tcp|-do-tcp|-tcp1|-do-tcp1]",
    )
    p.add_argument("--pin", action="store_true", help="server on CPU 0, dnsperf on CPU 1")
    p.add_argument("--clients", type=int, default=8, help="dnsperf -c")
    p.add_argument("--outstanding", type=int, default=500, help="dnsperf -q")
    p.add_argument("--timeout", type=float, default=5, help="dnsperf -t (query timeout, s)")
    p.add_argument(
        "--tcp1-clients",
        type=int,
        default=TCP1_CLIENTS,
        help="dnsperf -c (and -q) of the one-connection-per-query mixes (-tcp1, -do-tcp1)",
    )
    p.add_argument(
        "--tcp1-threads", type=int, default=TCP1_THREADS, help="dnsperf -T of the -tcp1 mixes"
    )
    p.add_argument(
        "--tcp1-rate",
        type=int,
        default=TCP1_RATE,
        help="dnsperf -Q of the -tcp1 mixes (0: unlimited; see README before raising it)",
    )
    p.add_argument(
        "--sample",
        type=int,
        default=500,
        help="questions per mix whose answers are compared with Knot's after the rounds"
        " (0: no comparison)",
    )
    p.add_argument(
        "--latency-rate",
        type=int,
        default=20000,
        help="dnsperf -Q of the per-query latency run after each measurement (p50/p99)",
    )
    p.add_argument(
        "--latency-duration",
        type=float,
        default=5,
        help="seconds of the per-query latency run (dnsperf -v -l); 0 disables it",
    )
    p.add_argument(
        "--warmup", type=float, default=2, help="unrecorded dnsperf seconds per server first"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="knot udp-workers and nsd server-count (ours: put flags in --ours-cmd)",
    )
    p.add_argument(
        "--ready-timeout", type=float, default=120, help="max seconds until a server answers"
    )
    p.add_argument(
        "--ours-cmd",
        default=DEFAULT_OURS_CMD,
        help="command for our server; {python} {zone} {address} {port} {origin} are filled in",
    )
    p.add_argument("--out", type=Path, default=HERE / "out", help="output directory")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.queries < 1 or args.delegations < 1:
        p.error("--rounds, --duration, --queries and --delegations must be positive")
    if args.latency_duration < 0 or args.latency_rate < 1:
        p.error("--latency-duration must be >= 0 and --latency-rate positive")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        p.error("--pin needs at least 2 CPUs")
    if args.tcp1_clients < 1 or args.tcp1_threads < 1 or args.tcp1_rate < 0:
        p.error("--tcp1-clients and --tcp1-threads must be positive, --tcp1-rate >= 0")
    args.servers = list(dict.fromkeys(args.servers))
    args.mix = [
        replace(
            m, clients=args.tcp1_clients, outstanding=args.tcp1_clients,
            threads=args.tcp1_threads, rate=args.tcp1_rate or None,
        )
        if m.one_query_per_conn
        else m
        for m in dict.fromkeys(args.mix)
    ]
    return args


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shown(path: Path) -> Path:
    """A path as printed: relative to the repository when inside it (``--out`` may not be)."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def _supports_option(script: Path, option: str) -> bool:
    res = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=False
    )
    return option in res.stdout


def ensure_generated(
    target: Path, script: Path, script_args: list[str], sources: Sequence[Path] = ()
) -> Path:
    """Run ``script`` to produce ``target`` unless it exists from the same command and the
    same generator sources (``script`` plus ``sources``; recorded in ``<target>.json``)."""
    for src in (script, *sources):
        if not src.exists():
            raise SystemExit(f"error: generator {src} not found")
    cmd = [str(script.relative_to(REPO)), *script_args]
    manifest = target.with_name(target.name + ".json")
    wanted = {
        "cmd": cmd,
        "sources_sha256": {src.name: _sha256(src) for src in (script, *sources)},
    }
    if target.exists() and manifest.exists():
        with contextlib.suppress(ValueError, OSError):
            if json.loads(manifest.read_text()) == wanted:
                print(f"reusing {_shown(target)}")
                return target
    tmp = target.with_name(target.name + ".tmp")
    print(f"generating {_shown(target)} ...", flush=True)
    t0 = time.monotonic()
    try:
        subprocess.run(
            [sys.executable, str(script), *script_args, "-o", str(tmp)], check=True, cwd=REPO
        )
    except subprocess.CalledProcessError as exc:
        tmp.unlink(missing_ok=True)
        raise SystemExit(f"error: {script.name} failed with status {exc.returncode}") from exc
    tmp.replace(target)
    manifest.write_text(json.dumps(wanted, indent=1) + "\n")
    print(f"  done in {time.monotonic() - t0:.1f} s", flush=True)
    return target


def sign_zone(zone: Path, out: Path) -> Path:
    """Sign ``zone`` as a TLD signs: ECDSA P-256 KSK+ZSK, NSEC3 with opt-out, 0 extra
    iterations, no salt (RFC 9276), by dnssec-signzone, so every server serves the same
    signed file. Reused while newer than the zone; the keys are made once in ``out``."""
    signed = zone.with_name(zone.stem + ".signed.zone")
    if signed.exists() and signed.stat().st_mtime > zone.stat().st_mtime:
        print(f"reusing {_shown(signed)}")
        return signed
    keydir = out / "keys"
    keydir.mkdir(exist_ok=True)
    if not list(keydir.glob("Kcoop.+*.key")):
        for flags in (["-f", "KSK"], []):
            subprocess.run(
                ["dnssec-keygen", "-q", "-K", str(keydir), "-a", "ECDSAP256SHA256", *flags, "coop"],
                check=True, capture_output=True,
            )
    unsigned = out / (zone.stem + ".with-keys.zone")
    includes = "".join(f"$INCLUDE {k}\n" for k in sorted(keydir.glob("Kcoop.+*.key")))
    unsigned.write_text(zone.read_text() + includes)
    print(f"signing {_shown(zone)} with dnssec-signzone ...", flush=True)
    t0 = time.monotonic()
    subprocess.run(
        ["dnssec-signzone", "-q", "-K", str(keydir), "-o", ORIGIN, "-3", "-", "-H", "0", "-A",
         "-f", str(signed), str(unsigned)],
        check=True, cwd=out,
    )
    unsigned.unlink()
    print(f"  done in {time.monotonic() - t0:.1f} s", flush=True)
    return signed


def prepare_inputs(args: argparse.Namespace) -> tuple[Path, dict[str, Path]]:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    genzone, genqueries = HERE / "genzone.py", HERE / "genqueries.py"
    n, seed = args.delegations, args.seed
    zone = ensure_generated(
        out / f"coop-d{n}-s{seed}.zone",
        genzone,
        ["--delegations", str(n), "--seed", str(seed)],
    )
    if args.signed:
        zone = sign_zone(zone, out)
    query_seed = ["--seed", str(seed)] if _supports_option(genqueries, "--seed") else []
    queries = {}
    for base in sorted({m.base for m in args.mix}):
        queries[base] = ensure_generated(
            out / f"queries-d{n}-s{seed}-{base}-n{args.queries}.txt",
            genqueries,
            ["--delegations", str(n), "--count", str(args.queries), "--mix", base, *query_seed],
            sources=[genzone],  # genqueries re-derives the delegation names with genzone
        )
    return zone, queries


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def start_server(name: str, zone: Path, port: int, args: argparse.Namespace) -> rs.RefServer:
    cpus = {0} if args.pin else None
    if name == "knot":
        return rs.start_knot(zone, ORIGIN, port, udp_workers=args.workers, cpus=cpus)
    if name == "nsd":
        return rs.start_nsd(zone, ORIGIN, port, server_count=args.workers, cpus=cpus)
    fields = {
        "python": sys.executable,
        "zone": str(zone),
        "address": "127.0.0.1",
        "port": str(port),
        "origin": ORIGIN,
        "workers": str(args.workers),
        # A private control socket, so a benchmark never clashes with a running server.
        "control": str(Path(tempfile.mkdtemp(prefix="nameserver-bench-")) / "control.sock"),
    }
    argv = [token.format(**fields) for token in shlex.split(args.ours_cmd)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return rs.start_process("ours", argv, ORIGIN, port, cwd=REPO, env=env, cpus=cpus)


def tool_versions() -> dict[str, str]:
    versions = {
        "knotd": rs.knotd_version() or "not installed",
        "nsd": rs.nsd_version() or "not installed",
    }
    try:
        res = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True, check=False)
        match = re.search(r"Version\s+(\S+)", res.stdout + res.stderr)
        versions["dnsperf"] = match.group(1) if match else "unknown"
    except OSError:
        versions["dnsperf"] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


# --------------------------------------------------------------------------------------------
# dnsperf
# --------------------------------------------------------------------------------------------


@dataclass
class DnsperfResult:
    sent: int
    completed: int
    lost: int
    qps: float
    runtime_s: float
    avg_latency_s: float | None = None
    min_latency_s: float | None = None
    max_latency_s: float | None = None
    stddev_latency_s: float | None = None
    request_size: int | None = None
    response_size: int | None = None
    rcodes: dict[str, int] = field(default_factory=dict)


def _grab(pattern: str, text: str) -> re.Match[str] | None:
    return re.search(pattern, text, re.MULTILINE)


def parse_dnsperf(text: str) -> DnsperfResult:
    """Parse the "Statistics:" block of dnsperf 2.x output."""
    needed = {
        "sent": r"^\s*Queries sent:\s+(\d+)",
        "completed": r"^\s*Queries completed:\s+(\d+)",
        "lost": r"^\s*Queries lost:\s+(\d+)",
        "qps": r"^\s*Queries per second:\s+([\d.]+)",
        "runtime_s": r"^\s*Run time \(s\):\s+([\d.]+)",
    }
    values: dict[str, Any] = {}
    for key, pattern in needed.items():
        match = _grab(pattern, text)
        if match is None:
            raise ValueError(f"dnsperf output lacks {key!r}")
        values[key] = float(match.group(1)) if key in ("qps", "runtime_s") else int(match[1])
    result = DnsperfResult(**values)
    if m := _grab(r"^\s*Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)", text):
        result.avg_latency_s, result.min_latency_s, result.max_latency_s = map(float, m.groups())
    if m := _grab(r"^\s*Latency StdDev \(s\):\s+([\d.]+)", text):
        result.stddev_latency_s = float(m[1])
    if m := _grab(r"^\s*Average packet size:\s+request (\d+), response (\d+)", text):
        result.request_size, result.response_size = int(m[1]), int(m[2])
    if m := _grab(r"^\s*Response codes:\s+(.*)$", text):
        result.rcodes = {k: int(v) for k, v in re.findall(r"([A-Z0-9]+) (\d+) \(", m[1])}
    return result


def dnsperf_command(
    port: int,
    queryfile: Path,
    duration: float,
    mix: Mix,
    args: Any,
    *,
    rate: int | None = None,
    verbose: bool = False,
) -> list[str]:
    """dnsperf for one run. ``rate`` (default: the mix's) is ``-Q``. ``verbose`` (the
    latency run) adds ``-v``, one line per query, and keeps the timeout lines (``> T``)
    that the throughput runs suppress."""
    rate = rate or mix.rate
    cmd = [
        "dnsperf",
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(queryfile),
        "-l",
        f"{duration:g}",
        "-c",
        str(mix.clients or args.clients),
        *(["-T", str(mix.threads)] if mix.threads else []),
        "-q",
        str(mix.outstanding or args.outstanding),
        "-t",
        f"{args.timeout:g}",
        *(["-v"] if verbose else ["-O", "suppress=timeouts"]),
        *(["-Q", str(rate)] if rate else []),
        *mix.flags,
    ]
    if args.pin:
        cmd = ["taskset", "-c", "1", *cmd]
    return cmd


# --------------------------------------------------------------------------------------------
# Per-query latency run (dnsperf -v)
# --------------------------------------------------------------------------------------------


def latency_us(text: str) -> int:
    """dnsperf's ``S.UUUUUU`` seconds (``%u.%06u``) as integer microseconds, exactly."""
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or not (frac == "" or frac.isdigit()):
        raise ValueError(f"bad latency {text!r}")
    return int(whole) * 1_000_000 + int((frac + "000000")[:6])


@dataclass
class LatencyStream:
    """What a ``dnsperf -v`` output stream says, kept small: a histogram of the answered
    queries' latencies by whole microsecond (dnsperf's resolution, so the percentiles are
    exact), the count of timed-out (``> T``) and interrupted (``> I``) queries, and the
    other lines (status, statistics, warnings), of which only the last ``keep`` remain."""

    histogram: Counter[int] = field(default_factory=Counter)
    timeouts: int = 0
    interrupted: int = 0
    other: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    other_dropped: int = 0

    def feed(self, line: str) -> None:
        if line.startswith("> "):
            parts = line.split()
            # "> T name TYPE" (timed out: lost, no latency), "> I name TYPE" (interrupted),
            # "> RCODE name TYPE 0.000670" (answered)
            if len(parts) >= 2 and parts[1] == "T":
                self.timeouts += 1
                return
            if len(parts) >= 2 and parts[1] == "I":
                self.interrupted += 1
                return
            with contextlib.suppress(ValueError, IndexError):
                self.histogram[latency_us(parts[-1])] += 1
                return
        if len(self.other) == self.other.maxlen:
            self.other_dropped += 1
        self.other.append(line.rstrip("\n"))

    @property
    def answered(self) -> int:
        return sum(self.histogram.values())

    def text(self) -> str:
        return "\n".join(self.other)


def percentile_us(histogram: Mapping[int, int], pct: float) -> int | None:
    """Nearest-rank percentile (the smallest value with at least ``pct`` % of the samples
    at or below it) of a ``{value: count}`` histogram; None if it is empty."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(pct / 100 * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)  # not reached


@dataclass
class LatencyResult:
    rate: int  # dnsperf -Q
    sent: int
    completed: int
    lost: int  # dnsperf's count: timed out, whether or not a "> T" line was printed
    timeout_lines: int
    answered_lines: int
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None


def latency_result(stream: LatencyStream, rate: int) -> LatencyResult:
    """Combine the per-query lines with dnsperf's final statistics (which must be present)."""
    stats = parse_dnsperf(stream.text())
    hist = stream.histogram
    n = stream.answered

    def ms(us: int | None) -> float | None:
        return None if us is None else us / 1000

    return LatencyResult(
        rate=rate,
        sent=stats.sent,
        completed=stats.completed,
        lost=stats.lost,
        timeout_lines=stream.timeouts,
        answered_lines=n,
        p50_ms=ms(percentile_us(hist, 50)),
        p99_ms=ms(percentile_us(hist, 99)),
        mean_ms=sum(v * c for v, c in hist.items()) / n / 1000 if n else None,
        max_ms=ms(max(hist) if hist else None),
    )


def latency_rate(mix: Mix, args: argparse.Namespace) -> int:
    """The latency run's -Q: --latency-rate, but never above the mix's own rate."""
    return min(args.latency_rate, mix.rate) if mix.rate else args.latency_rate


def latency_run(
    srv: rs.RefServer, mix: Mix, queryfile: Path, args: argparse.Namespace, raw: TextIO
) -> tuple[LatencyResult | None, str | None]:
    """A rate-limited ``dnsperf -v`` run, its per-query lines read into a histogram.
    Returns (result, error).

    dnsperf prints each query's line from its receiving thread, so it writes to an
    unlinked temporary file (about 40 bytes a query) rather than a pipe: a runner slow to
    read a pipe would stall that thread and add to the latencies, and reading as it
    runs would take CPU from the server and dnsperf on a small machine. The file is read
    line by line afterwards; only the histogram and the last non-query lines are kept."""
    rate = latency_rate(mix, args)
    cmd = dnsperf_command(
        srv.port, queryfile, args.latency_duration, mix, args, rate=rate, verbose=True
    )
    stream = LatencyStream()
    limit = args.latency_duration + args.timeout + 60
    with tempfile.TemporaryFile("w+", prefix="dnsperf-v-") as out:
        try:
            # dnsperf stops itself after -l; the timeout only guards against a hang.
            rc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, timeout=limit, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            return None, f"latency run: dnsperf hung for {limit:g} s and was killed"
        out.seek(0)
        for line in out:
            stream.feed(line)
    raw.write(f"### latency run: {shlex.join(cmd)}\n")
    if stream.other_dropped:
        raw.write(f"({stream.other_dropped} earlier non-query lines not kept)\n")
    raw.write(stream.text() + "\n")
    raw.write(
        f"(per-query lines: {stream.answered} answered, {stream.timeouts} timed out,"
        f" {stream.interrupted} interrupted)\n\n"
    )
    raw.flush()
    if not srv.alive():
        return None, f"server exited during the latency run ({_exit_text(srv)})"
    try:
        return latency_result(stream, rate), None
    except ValueError as exc:
        tail = "\n".join(list(stream.other)[-10:])
        return None, f"latency run: dnsperf exit {rc}: {exc}\n{tail}"


def udp_counters() -> dict[str, int]:
    """The Udp: line of /proc/net/snmp (this network namespace, all sockets)."""
    with open("/proc/net/snmp") as fh:
        rows = [line.split() for line in fh if line.startswith("Udp:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:]), strict=True))


@dataclass
class Sample:
    server: str
    mix: str
    round: int
    ok: bool
    error: str | None = None
    dnsperf: DnsperfResult | None = None
    cpu_s: float | None = None
    cpu_us_per_query: float | None = None
    sys_us_per_query: float | None = None  # the kernel's part of cpu_us_per_query
    cpu_util: float | None = None
    rss_bytes: int | None = None
    pss_bytes: int | None = None
    rcvbuf_errors: int | None = None
    wall_s: float | None = None
    latency: LatencyResult | None = None  # the per-query run after the measurement
    latency_error: str | None = None


def _exit_text(srv: rs.RefServer) -> str:
    rc = srv.returncode
    text = f"status {rc}"
    if rc is not None and rc <= 0:
        text += "; it was stopped by a signal or asked to shut down, perhaps from outside"
    return f"{text}; log tail:\n{srv.log_tail()}"


def measure(
    srv: rs.RefServer,
    mix: Mix,
    queryfile: Path,
    rnd: int,
    duration: float,
    args: argparse.Namespace,
    raw: TextIO,
) -> Sample:
    sample = Sample(srv.name, mix.name, rnd, ok=False)
    if not srv.alive():
        sample.error = f"server had exited ({_exit_text(srv)})"
        return sample
    cmd = dnsperf_command(srv.port, queryfile, duration, mix, args)
    udp0, cpu0, t0 = udp_counters(), srv.cpu_seconds(), time.monotonic()
    sys0 = srv.system_cpu_seconds()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            timeout=duration + args.timeout + 60,
        )
    except subprocess.TimeoutExpired as exc:
        sample.error = f"dnsperf hung: {exc}"
        return sample
    wall = time.monotonic() - t0
    cpu1, sys1, udp1 = srv.cpu_seconds(), srv.system_cpu_seconds(), udp_counters()
    raw.write(f"### {srv.name} {mix.name} round {rnd}: {shlex.join(cmd)}\n")
    raw.write(proc.stdout + proc.stderr + "\n")
    raw.flush()
    if not srv.alive():
        sample.error = f"server exited during the run ({_exit_text(srv)})"
        return sample
    try:
        result = parse_dnsperf(proc.stdout)
    except ValueError as exc:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-10:])
        sample.error = f"dnsperf exit {proc.returncode}: {exc}\n{tail}"
        return sample
    sample.ok = True
    sample.dnsperf = result
    sample.wall_s = wall
    sample.cpu_s = cpu1 - cpu0
    sample.cpu_util = sample.cpu_s / result.runtime_s if result.runtime_s > 0 else None
    if result.completed:
        sample.cpu_us_per_query = sample.cpu_s * 1e6 / result.completed
        sample.sys_us_per_query = (sys1 - sys0) * 1e6 / result.completed
    sample.rss_bytes = srv.rss_bytes()
    sample.pss_bytes = srv.pss_bytes()
    sample.rcvbuf_errors = udp1["RcvbufErrors"] - udp0["RcvbufErrors"]
    if args.latency_duration > 0 and rnd > 0:  # not after the warm-up
        sample.latency, sample.latency_error = latency_run(srv, mix, queryfile, args, raw)
    return sample


# --------------------------------------------------------------------------------------------
# Correctness sample: the same questions to every server and to Knot
# --------------------------------------------------------------------------------------------

SAMPLE_EXAMPLES = 5  # mismatching questions listed per (server, mix)
SAMPLE_TIMEOUT = 2.0  # seconds per try; UDP is tried twice
SAMPLE_GIVE_UP = 5  # consecutive unanswered questions after which a server is skipped


def sample_questions(path: Path, n: int) -> list[tuple[str, str]]:
    """``n`` (name, TYPE) lines spread evenly over a dnsperf query file: line
    ``i * lines // n`` for i in 0..n-1, the same lines every time for the same file.
    Reads the file twice instead of holding it."""
    with open(path, "rb") as fh:
        total = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    n = min(n, total)
    if n <= 0:
        return []
    wanted = [i * total // n for i in range(n)]  # strictly increasing as n <= total
    picked: list[tuple[str, str]] = []
    it = iter(wanted)
    nxt = next(it, None)
    with open(path) as fh:
        for lineno, line in enumerate(fh):
            if nxt is None:
                break
            if lineno == nxt:
                parts = line.split()
                if len(parts) >= 2:
                    picked.append((parts[0], parts[1]))
                nxt = next(it, None)
    return picked


@dataclass(frozen=True)
class Shape:
    """What the sample compares: rcode, AA, TC and the record counts of the answer,
    authority and additional sections (as in the header: the OPT record counts)."""

    rcode: str
    aa: bool
    tc: bool
    counts: tuple[int, int, int]

    def text(self) -> str:
        flags = "".join(f" {f}" for f, on in (("aa", self.aa), ("tc", self.tc)) if on)
        return f"{self.rcode}{flags} {'/'.join(map(str, self.counts))}"


def response_shape(message: Any) -> Shape:
    """The :class:`Shape` of a dnspython ``dns.message.Message``."""
    import dns.flags
    import dns.message
    import dns.rcode

    return Shape(
        rcode=dns.rcode.to_text(message.rcode()),
        aa=bool(message.flags & dns.flags.AA),
        tc=bool(message.flags & dns.flags.TC),
        counts=(
            message.section_count(dns.message.ANSWER),
            message.section_count(dns.message.AUTHORITY),
            message.section_count(dns.message.ADDITIONAL),
        ),
    )


def sample_query(name: str, qtype: str, mix: Mix) -> Any:
    """The question as dnsperf sends it for ``mix``: RD set; with -e or -D, EDNS version 0
    with a 4096-byte payload, and DO with -D."""
    import dns.message

    do = "-D" in mix.flags
    edns = do or "-e" in mix.flags
    return dns.message.make_query(
        name, qtype, use_edns=0 if edns else False, want_dnssec=do, payload=4096
    )


def ask(query: Any, port: int, transport: str) -> Shape | str:
    """Send ``query`` to 127.0.0.1:``port``; the response's :class:`Shape`, or an error."""
    import dns.exception
    import dns.query

    tries = 2 if transport == "udp" else 1
    error = "no answer"
    for _ in range(tries):
        try:
            if transport == "udp":
                resp = dns.query.udp(query, "127.0.0.1", port=port, timeout=SAMPLE_TIMEOUT)
            else:
                resp = dns.query.tcp(query, "127.0.0.1", port=port, timeout=SAMPLE_TIMEOUT)
        except dns.exception.Timeout:
            error = f"no answer within {SAMPLE_TIMEOUT:g} s"
            continue
        except (OSError, dns.exception.DNSException) as exc:
            return f"{type(exc).__name__}: {exc}"
        return response_shape(resp)
    return error


@dataclass
class SampleCheck:
    """One server's answers to one mix's sample, compared with Knot's."""

    server: str
    mix: str
    sampled: int
    compared: int = 0  # questions Knot answered and this server was asked
    mismatches: int = 0  # includes questions this server did not answer
    no_answer: int = 0
    skipped: str | None = None  # why the rest of the sample was not asked
    examples: list[str] = field(default_factory=list)

    def cell(self) -> str:
        return f"{self.mismatches}/{self.compared}" + ("!" if self.skipped else "")


@dataclass
class Correctness:
    reference: str | None  # how Knot took part, or None: no comparison was made
    note: str | None = None  # why not, or what else to know
    questions: dict[str, int] = field(default_factory=dict)  # mix -> sampled
    ref_unanswered: dict[str, int] = field(default_factory=dict)  # mix -> Knot's silences
    checks: list[SampleCheck] = field(default_factory=list)

    def check(self, server: str, mix: str) -> SampleCheck | None:
        for c in self.checks:
            if c.server == server and c.mix == mix:
                return c
        return None


def compare_sample(
    questions: list[tuple[str, str]],
    mix: Mix,
    ref: Callable[[Any], Shape | str],
    servers: Mapping[str, Callable[[Any], Shape | str]],
    alive: Callable[[str], bool] = lambda name: True,
) -> tuple[list[SampleCheck], int]:
    """Ask every question of ``mix`` to ``ref`` and to each server (callables taking the
    query), compare the shapes; returns the checks and the number of questions the
    reference left unanswered (not compared)."""
    checks = {name: SampleCheck(name, mix.name, len(questions)) for name in servers}
    silent = dict.fromkeys(servers, 0)
    ref_unanswered = 0
    for name, qtype in questions:
        query = sample_query(name, qtype, mix)
        expected = ref(query)
        if isinstance(expected, str):
            ref_unanswered += 1
            continue
        for server, send in servers.items():
            check = checks[server]
            if check.skipped:
                continue
            if not alive(server):
                check.skipped = "server not running"
                continue
            got = send(query)
            check.compared += 1
            if isinstance(got, str):
                check.no_answer += 1
                silent[server] += 1
                if silent[server] >= SAMPLE_GIVE_UP:
                    check.skipped = f"{SAMPLE_GIVE_UP} questions in a row unanswered"
            else:
                silent[server] = 0
            if got != expected:
                check.mismatches += 1
                shown = got if isinstance(got, str) else got.text()
                example = f"{name} {qtype}: {server} {shown}, knot {expected.text()}"
                if len(check.examples) < SAMPLE_EXAMPLES and example not in check.examples:
                    check.examples.append(example)
    return list(checks.values()), ref_unanswered


def check_correctness(
    args: argparse.Namespace,
    zone: Path,
    queries: Mapping[str, Path],
    servers: Mapping[str, rs.RefServer],
) -> Correctness:
    """Compare a sample of each mix's questions between every running server and Knot,
    starting Knot on its own port if it is not among the servers."""
    if args.sample <= 0:
        return Correctness(None, "off (--sample 0)")
    try:
        import dns.message  # noqa: F401
        import dns.query  # noqa: F401
    except ImportError:
        return Correctness(
            None, "no comparison made: dnspython is not importable (use the project's venv)"
        )
    others = {n: s for n, s in servers.items() if n != "knot" and s.alive()}
    if not others:
        return Correctness(None, "no comparison made: no server other than Knot is running")
    knot = servers.get("knot")
    started: rs.RefServer | None = None
    if knot is not None and knot.alive():
        reference = "knot (under test)"
    else:
        try:
            knot = started = start_server("knot", zone, rs.free_port(), args)
            knot.wait_ready(args.ready_timeout)
        except rs.ServerStartError as exc:
            if started is not None:
                started.stop()
            return Correctness(None, f"no comparison made: Knot did not start: {exc}")
        reference = "knot (started for the sample only)"
    result = Correctness(reference)
    try:
        for mix in args.mix:
            questions = sample_questions(queries[mix.base], args.sample)
            result.questions[mix.name] = len(questions)

            def sender(port: int, transport: str = mix.transport) -> Callable[[Any], Any]:
                return lambda query: ask(query, port, transport)

            checks, unanswered = compare_sample(
                questions,
                mix,
                sender(knot.port),
                {name: sender(srv.port) for name, srv in others.items()},
                alive=lambda name: others[name].alive(),
            )
            result.checks += checks
            result.ref_unanswered[mix.name] = unanswered
    finally:
        if started is not None:
            started.stop()
    return result


def correctness_report(result: Correctness) -> str:
    """Markdown: the reference, mismatches per (server, mix) and the first examples."""
    head = "### Correctness sample (rcode, AA, TC and section counts, compared with Knot)\n\n"
    if result.reference is None:
        return head + (result.note or "no comparison made")
    lines = [
        f"Reference: {result.reference}. A mismatch shows rcode, flags and the counts of"
        " answer/authority/additional records (OPT included) of both answers."
    ]
    if result.note:
        lines.append(result.note)
    for mix, n in result.questions.items():
        silent = result.ref_unanswered.get(mix, 0)
        lines.append(
            f"- {mix}: {n} questions spread over the query file"
            + (f"; Knot did not answer {silent} (not compared)" if silent else "")
        )
        for c in (c for c in result.checks if c.mix == mix):
            text = f"  - {c.server}: {c.mismatches} of {c.compared} differ"
            if c.no_answer:
                text += f" ({c.no_answer} unanswered)"
            if c.skipped:
                text += f"; stopped early: {c.skipped}"
            lines.append(text)
            lines += [f"    - `{e}`" for e in c.examples]
    return head + "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class Startup:
    server: str
    ok: bool
    port: int | None = None
    ready_s: float | None = None
    pids: list[int] = field(default_factory=list)
    rss_bytes: int | None = None
    pss_bytes: int | None = None
    error: str | None = None


def _median(values: list[float | int | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def summarize(samples: list[Sample]) -> dict[tuple[str, str], dict[str, Any]]:
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.server, s.mix), []).append(s)
    summary: dict[tuple[str, str], dict[str, Any]] = {}
    for key, group in groups.items():
        good = [s for s in group if s.ok and s.dnsperf is not None]
        rcodes: dict[str, int] = {}
        for s in good:
            assert s.dnsperf is not None
            for code, count in s.dnsperf.rcodes.items():
                rcodes[code] = rcodes.get(code, 0) + count
        summary[key] = {
            "runs": len(good),
            "failed": len(group) - len(good),
            "qps": _median([s.dnsperf.qps for s in good if s.dnsperf]),
            "cpu_us": _median([s.cpu_us_per_query for s in good]),
            "sys_us": _median([s.sys_us_per_query for s in good]),
            "cpu_util": _median([s.cpu_util for s in good]),
            "lat_ms": _median(
                [
                    s.dnsperf.avg_latency_s * 1000
                    for s in good
                    if s.dnsperf and s.dnsperf.avg_latency_s is not None
                ]
            ),
            "p50_ms": _median([s.latency.p50_ms for s in good if s.latency]),
            "p99_ms": _median([s.latency.p99_ms for s in good if s.latency]),
            "lat_lost": _median([s.latency.lost for s in good if s.latency]),
            "lost": _median([s.dnsperf.lost for s in good if s.dnsperf]),
            "sent": _median([s.dnsperf.sent for s in good if s.dnsperf]),
            "rcvbuf": _median([s.rcvbuf_errors for s in good]),
            "rss_mb": _median([s.rss_bytes / MB for s in good if s.rss_bytes is not None]),
            "pss_mb": _median([s.pss_bytes / MB for s in good if s.pss_bytes is not None]),
            "rcodes": rcodes,
        }
    return summary


def _rcode_text(rcodes: dict[str, int]) -> str:
    total = sum(rcodes.values())
    if not total:
        return "–"
    ordered = sorted(rcodes.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{code} {100 * count / total:.1f}%" for code, count in ordered)


def _correctness_cell(correctness: Correctness | None, server: str, mix: str) -> str:
    if correctness is None or correctness.reference is None:
        return "–"
    if server == "knot" and correctness.reference.endswith("(under test)"):
        return "ref"
    check = correctness.check(server, mix)
    return check.cell() if check else "–"


def render_report(
    args: argparse.Namespace,
    startups: dict[str, Startup],
    samples: list[Sample],
    *,
    interrupted: bool,
    correctness: Correctness | None = None,
) -> tuple[str, str]:
    """Return (tables, failures) as Markdown text."""
    summary = summarize(samples)
    parts: list[str] = []

    rows = []
    for mix in args.mix:
        for server in args.servers:
            st = summary.get((server, mix.name))
            if st is None:
                continue
            rows.append(
                [
                    server,
                    mix.name,
                    _fmt(st["qps"], ",.0f"),
                    _fmt(st["cpu_us"], ".1f"),
                    _fmt(st["sys_us"], ".1f"),
                    _fmt(None if st["cpu_util"] is None else 100 * st["cpu_util"], ".0f"),
                    _fmt(st["lat_ms"], ".3f"),
                    _fmt(st["p50_ms"], ".3f"),
                    _fmt(st["p99_ms"], ".3f"),
                    _fmt(st["lost"], ",.0f"),
                    _fmt(st["lat_lost"], ",.0f"),
                    _fmt(st["rcvbuf"], ",.0f"),
                    _fmt(st["rss_mb"], ".1f"),
                    _fmt(st["pss_mb"], ".1f"),
                    f"{st['runs']}" + (f" ({st['failed']} failed)" if st["failed"] else ""),
                    _correctness_cell(correctness, server, mix.name),
                    _rcode_text(st["rcodes"]),
                ]
            )
    header = [
        "server",
        "mix",
        "qps",
        "CPU µs/q",
        "of it sys",
        "srv CPU %",
        "avg lat ms",
        "p50 ms",
        "p99 ms",
        "lost",
        "p-run lost",
        "rcvbuf errs",
        "RSS MB",
        "PSS MB",
        "runs",
        "≠ knot",
        "rcodes",
    ]
    medians = "### Medians per (server, mix)\n\n" + (_table(header, rows) if rows else "none")
    tcp1 = [m for m in args.mix if m.one_query_per_conn and m.rate]
    if tcp1:
        medians += (
            f"\n\n{', '.join(m.name for m in tcp1)}: one TCP connection per query at a fixed"
            f" offered rate (dnsperf -Q {tcp1[0].rate}); compare CPU µs/q and lost, not qps"
            " (equal by construction) nor latency (dnsperf's own up-to-100 ms receive"
            " wait); see benchmarks/README.md."
        )
    parts.append(medians)

    ratio_rows = []
    for mix in args.mix:
        ours = summary.get(("ours", mix.name))
        for base in ("knot", "nsd"):
            ref = summary.get((base, mix.name))
            if ours is None or ref is None:
                continue

            def ratio(key: str, o: dict[str, Any] = ours, r: dict[str, Any] = ref) -> str:
                if o[key] is None or not r[key]:
                    return "–"
                return f"{o[key] / r[key]:.2f}"

            ratio_rows.append(
                [
                    mix.name,
                    f"ours/{base}",
                    ratio("qps"),
                    ratio("cpu_us"),
                    ratio("lat_ms"),
                    ratio("p50_ms"),
                    ratio("p99_ms"),
                    ratio("rss_mb"),
                    ratio("pss_mb"),
                ]
            )
    if ratio_rows:
        parts.append(
            "### Ratios (ours / reference; qps: higher is better, the rest: lower is better)\n\n"
            + _table(
                ["mix", "ratio", "qps", "CPU µs/q", "avg lat", "p50", "p99", "RSS", "PSS"],
                ratio_rows,
            )
        )
    elif "ours" in args.servers:
        parts.append("### Ratios\n\nnone: ours or the references have no successful runs")

    start_rows = []
    for name in args.servers:
        su = startups.get(name)
        if su is None:
            start_rows.append([name, "not started", "–", "–", "–", "–"])
            continue
        start_rows.append(
            [
                name,
                "ok" if su.ok else "FAILED",
                _fmt(su.ready_s, ".3f"),
                " ".join(map(str, su.pids)) or "–",
                _fmt(None if su.rss_bytes is None else su.rss_bytes / MB, ".1f"),
                _fmt(None if su.pss_bytes is None else su.pss_bytes / MB, ".1f"),
            ]
        )
    if correctness is not None:
        parts.append(correctness_report(correctness))
    parts.append(
        "### Startup (spawn -> first NOERROR SOA answer; memory then, before load)\n\n"
        + _table(["server", "start", "first answer s", "pids", "RSS MB", "PSS MB"], start_rows)
    )

    failures = []
    for su in startups.values():
        if not su.ok:
            failures.append(f"- **{su.server} failed to start**:\n\n```\n{su.error}\n```")
    for s in samples:
        if not s.ok:
            failures.append(
                f"- **{s.server} {s.mix} round {s.round} failed**:\n\n```\n{s.error}\n```"
            )
        elif s.latency_error:
            failures.append(
                f"- **{s.server} {s.mix} round {s.round}: latency run failed**:"
                f"\n\n```\n{s.latency_error}\n```"
            )
    if correctness is not None:
        for c in correctness.checks:
            if c.skipped:
                failures.append(f"- **{c.server} {c.mix} correctness sample**: {c.skipped}")
    if interrupted:
        failures.append("- **interrupted** (Ctrl-C / SIGTERM): results are partial")
    return "\n\n".join(parts), "\n".join(failures)


def write_markdown(
    path: Path,
    args: argparse.Namespace,
    argv: Sequence[str],
    versions: dict[str, str],
    tables: str,
    failures: str,
    zone: Path | None,
    queries: dict[str, Path],
) -> None:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    cmdline = shlex.join([Path(sys.executable).name, *argv])
    lines = [
        "# Benchmark results",
        "",
        f"- date: {now}",
        f"- command: `{cmdline}`",
        f"- git: {git_revision()}",
        f"- nproc: {len(os.sched_getaffinity(0))} (CPU: {cpu_model}; kernel {platform.release()})",
        f"- versions: knotd `{versions['knotd']}`, nsd `{versions['nsd']}`,"
        f" dnsperf {versions['dnsperf']}, python {versions['python']}",
        f"- zone: {zone.name if zone else '–'} ({args.delegations} delegations, seed {args.seed})",
        f"- query files: {', '.join(p.name for p in queries.values()) or '–'}",
        f"- dnsperf: -l {args.duration:g} -c {args.clients} -q {args.outstanding}"
        f" -t {args.timeout:g}; {args.rounds} round(s); pinned: {'yes' if args.pin else 'no'};"
        f" knot udp-workers / nsd server-count: {args.workers}",
        *(
            f"- {m.name}: dnsperf -c {m.clients} -T {m.threads} -q {m.outstanding}"
            + (f" -Q {m.rate}" if m.rate else " (no rate limit)")
            for m in args.mix
            if m.one_query_per_conn
        ),
        "- latency (p50/p99): "
        + (
            f"dnsperf -v -Q {args.latency_rate} -l {args.latency_duration:g} after each run,"
            " answered queries only (timeouts count as p-run lost)"
            if args.latency_duration > 0
            else "off (--latency-duration 0)"
        ),
        "",
        tables,
        "",
    ]
    if failures:
        lines += ["### Failures", "", failures, ""]
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else [sys.argv[0], *argv])
    args = parse_args(argv[1:])
    if shutil.which("dnsperf") is None:
        print("error: dnsperf not found (Debian package dnsperf)", file=sys.stderr)
        return 2
    if args.pin and shutil.which("taskset") is None:
        print("error: --pin needs taskset (util-linux)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)

    versions = tool_versions()
    servers: dict[str, rs.RefServer] = {}
    startups: dict[str, Startup] = {}
    samples: list[Sample] = []
    correctness: Correctness | None = None
    interrupted = False
    zone: Path | None = None
    queries: dict[str, Path] = {}
    out: Path = args.out
    try:
        zone, queries = prepare_inputs(args)
        raw = open(out / "latest-raw.log", "w")  # noqa: SIM115 - closed below
        try:
            for name in args.servers:
                su = startups[name] = Startup(name, ok=False)
                try:
                    su.port = rs.free_port()
                    srv = start_server(name, zone, su.port, args)
                    servers[name] = srv
                    su.ready_s = srv.wait_ready(args.ready_timeout)
                except rs.ServerStartError as exc:
                    su.error = str(exc)
                    print(f"\n*** {name}: FAILED TO START ***\n{exc}\n", file=sys.stderr)
                    if name in servers:
                        servers.pop(name).stop()
                    continue
                su.ok = True
                su.pids = srv.pids()
                su.rss_bytes, su.pss_bytes = srv.rss_bytes(), srv.pss_bytes()
                print(
                    f"{name}: pid {srv.pid} on 127.0.0.1@{srv.port}, "
                    f"first answer after {su.ready_s:.3f} s",
                    flush=True,
                )
            if not servers:
                print("error: no server could be started", file=sys.stderr)
            elif args.warmup > 0:
                first = args.mix[0]
                for name, srv in servers.items():
                    print(f"warm-up {name} ({args.warmup:g} s)", flush=True)
                    measure(srv, first, queries[first.base], 0, args.warmup, args, raw)

            order = [n for n in args.servers if n in servers]
            total = args.rounds * len(order) * len(args.mix)
            done = 0
            for rnd in range(1, args.rounds + 1):
                # Rotate the order each round so position effects hit everyone alike.
                shift = (rnd - 1) % len(order) if order else 0
                for name in order[shift:] + order[:shift]:
                    srv = servers[name]
                    for mix in args.mix:
                        done += 1
                        print(
                            f"[{done}/{total}] round {rnd} {name} {mix.name} ...",
                            end=" ",
                            flush=True,
                        )
                        s = measure(srv, mix, queries[mix.base], rnd, args.duration, args, raw)
                        samples.append(s)
                        if s.ok and s.dnsperf:
                            lat = s.latency
                            print(
                                f"{s.dnsperf.qps:,.0f} qps, {s.cpu_us_per_query or 0:.1f} µs/q,"
                                f" lost {s.dnsperf.lost}, rcvbuf errs {s.rcvbuf_errors}"
                                + (
                                    f"; at {lat.rate} qps p50 {_fmt(lat.p50_ms, '.3f')} ms"
                                    f" p99 {_fmt(lat.p99_ms, '.3f')} ms, lost {lat.lost}"
                                    if lat
                                    else ""
                                )
                                + (f"; LATENCY RUN FAILED: {s.latency_error}"
                                   if s.latency_error else ""),
                                flush=True,
                            )
                        else:
                            print(f"FAILED: {s.error}", flush=True)
            if servers:
                # After the rounds: answers as served under load, caches warm.
                print(
                    f"correctness sample: {args.sample} questions per mix, compared with Knot",
                    flush=True,
                )
                correctness = check_correctness(args, zone, queries, servers)
        finally:
            raw.close()
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted; stopping servers", file=sys.stderr)
    finally:
        for srv in servers.values():
            srv.stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    if correctness is None and servers:
        correctness = Correctness(None, "not run (interrupted or failed before the end)")
    tables, failures = render_report(
        args, startups, samples, interrupted=interrupted, correctness=correctness
    )
    print("\n" + tables)
    if failures:
        print("\n### Failures\n\n" + failures)
    if zone is not None:
        md = out / "latest.md"
        write_markdown(md, args, argv, versions, tables, failures, zone, queries)
        (out / "latest.json").write_text(
            json.dumps(
                {
                    "argv": argv,
                    "versions": versions,
                    "mixes": [asdict(m) for m in args.mix],
                    "startups": [asdict(s) for s in startups.values()],
                    "samples": [asdict(s) for s in samples],
                    "correctness": asdict(correctness) if correctness else None,
                },
                indent=1,
            )
            + "\n"
        )
        print(f"\nwrote {_shown(md)}")
    if interrupted:
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
