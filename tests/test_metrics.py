"""Prometheus metrics of a running server: scraped over real HTTP, parsed line by line,
and watched as UDP and TCP queries, reloads and worker restarts happen."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from conftest import MINIMAL_ZONE, REPO, NameServer, free_port

from nameserver.control import send
from nameserver.metrics import REPORT_INTERVAL, Metrics, ReportPipe, encode_snapshot

TIMEOUT = 10.0  # seconds for anything to show up in the metrics (workers report every 1 s)

# big.nic is too big for 512 bytes.
ZONE = MINIMAL_ZONE + "".join(f'big.nic TXT "{c * 200}"\n' for c in "abcde")

# One line of the text format: https://prometheus.io/docs/instrumenting/exposition_formats/
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
HELP_RE = re.compile(rf"# HELP ({NAME}) (.*)")
TYPE_RE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)")
SAMPLE_RE = re.compile(rf"({NAME})(?:\{{({LABEL}(?:,{LABEL})*)?\}})? (\S+)")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')

Series = tuple[str, frozenset[tuple[str, str]]]


class Scrape:
    """A parsed /metrics page: every line checked against the text format."""

    def __init__(self, text: str):
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: dict[Series, float] = {}
        helped: set[str] = set()
        for line in text.splitlines():
            if m := HELP_RE.fullmatch(line):
                assert m.group(1) not in helped, f"second HELP: {line}"
                helped.add(m.group(1))
            elif m := TYPE_RE.fullmatch(line):
                name, kind = m.groups()
                assert name in helped and name not in self.types, f"TYPE out of place: {line}"
                self.types[name] = kind
                if kind == "counter":
                    assert name.endswith("_total"), line
            elif m := SAMPLE_RE.fullmatch(line):
                name, labels, value = m.groups()
                assert name in self.types, f"sample before its TYPE: {line}"
                series = (name, frozenset(LABEL_RE.findall(labels or "")))
                assert series not in self.samples, f"duplicate series: {line}"
                self.samples[series] = float(value)  # NaN/+Inf parse too
            else:
                pytest.fail(f"not in the Prometheus text format: {line!r}")

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def labels(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (n, labels) in self.samples if n == name]

    def counters(self) -> dict[Series, float]:
        return {s: v for s, v in self.samples.items() if self.types[s[0]] == "counter"}


def scrape(port: int, path: str = "/metrics") -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return Scrape(r.read().decode())


def wait_for(port: int, check: Callable[[Scrape], bool], what: str) -> Scrape:
    deadline = time.monotonic() + TIMEOUT
    while True:
        s = scrape(port)
        if check(s):
            return s
        assert time.monotonic() < deadline, f"{what} never showed in the metrics:\n{s.text}"
        time.sleep(0.1)


def settled(port: int) -> Scrape:
    """A scrape that includes every query answered so far: each worker has reported
    since (they report once a second)."""
    time.sleep(REPORT_INTERVAL + 0.3)
    return scrape(port)


def write_zone(path: Path, serial: int, extra: str = "") -> None:
    path.write_text(ZONE.format(serial=serial) + extra)


def ctl(server: NameServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nameserver", *args, "--control", str(server.control)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )


def start(factory: Callable[..., NameServer], zone: Path, extra: str = "") -> NameServer:
    """A server on ``zone`` with metrics on a free port (server.metrics_port)."""
    ports: dict[str, int] = {}

    def config(port: int) -> str:
        ports["metrics"] = free_port(ipv6=False)
        return f"metrics: {{listen: 127.0.0.1@{ports['metrics']}}}\n{extra}"

    server = factory(zone=zone, config=config, ipv6=False)
    server.metrics_port = ports["metrics"]
    server.zone = zone
    server.control = server.stderr_path.parent / f"control-{server.port}.sock"
    return server


@pytest.fixture(scope="module")
def served(nameserver_factory, tmp_path_factory) -> NameServer:
    zone = tmp_path_factory.mktemp("metrics") / "coop.zone"
    write_zone(zone, 1)
    return start(nameserver_factory, zone, "workers: 2\n")


def udp(port: int, name: str, rdtype: str, *, edns: bool = True) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3)


def tcp(port: int, name: str, rdtype: str) -> dns.message.Message:
    return dns.query.tcp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=3)


# --------------------------------------------------------------------------- tests


def test_report_pipe_and_retired_totals() -> None:
    """The supervisor's side in isolation: partial lines, garbage, and a worker's
    counts kept after it exits while its gauges go."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    pipe, metrics = ReportPipe(r, 1, 4242), Metrics()
    old = {"c": {"queries_udp": 3}, "g": {"tcp_open": 1}, "r": {"A NOERROR": 3}}
    new = {"c": {"queries_udp": 5}, "g": {"tcp_open": 2}, "r": {"A NOERROR": 5}}
    line = encode_snapshot(new)
    os.write(w, encode_snapshot(old) + line[:10])
    assert pipe.read() == (old, False)
    os.write(w, line[10:] + b"{not json\n")
    assert pipe.read() == (new, False)  # the newest line that reads
    metrics.update(pipe.key, new)
    counters, responses, gauges = metrics.totals()
    assert (counters["queries_udp"], responses, gauges) == (5, {"A NOERROR": 5}, {"tcp_open": 2})
    os.close(w)
    assert pipe.read() == (None, True)
    os.close(r)
    metrics.retire(pipe.key)
    metrics.update(2, {"c": {"queries_udp": 1}, "g": {"tcp_open": 0}, "r": {"A NOERROR": 1}})
    counters, responses, gauges = metrics.totals()
    assert (counters["queries_udp"], responses, gauges) == (6, {"A NOERROR": 6}, {"tcp_open": 0})
    text = Scrape(metrics.render()).text  # renders (and parses) without a server state
    assert 'dns_responses_total{qtype="A",rcode="NOERROR"} 6' in text


def test_format_and_families(served: NameServer) -> None:
    s = scrape(served.metrics_port)
    for name, kind in {
        "dns_queries_total": "counter",
        "dns_responses_total": "counter",
        "dns_responses_truncated_total": "counter",
        "dns_malformed_dropped_total": "counter",
        "dns_errors_total": "counter",
        "dns_tcp_connections_open": "gauge",
        "dns_tcp_connections_accepted_total": "counter",
        "dns_tcp_connections_refused_total": "counter",
        "dns_tcp_connections_evicted_total": "counter",
        "dns_tcp_idle_timeouts_total": "counter",
        "nameserver_zone_serial": "gauge",
        "nameserver_zone_records": "gauge",
        "nameserver_zone_loaded_timestamp_seconds": "gauge",
        "nameserver_zone_load_duration_seconds": "gauge",
        "nameserver_zone_rrsig_expiry_timestamp_seconds": "gauge",
        "nameserver_zone_last_load_success": "gauge",
        "nameserver_zone_last_load_timestamp_seconds": "gauge",
        "nameserver_reload_last_success": "gauge",
        "nameserver_reload_last_timestamp_seconds": "gauge",
        "nameserver_memory_rss_bytes": "gauge",
        "nameserver_workers": "gauge",
        "nameserver_worker_restarts_total": "counter",
        "nameserver_generation": "gauge",
        "nameserver_query_log_enabled": "gauge",
        "nameserver_start_time_seconds": "gauge",
        "nameserver_uptime_seconds": "gauge",
        "nameserver_build_info": "gauge",
    }.items():
        assert s.types.get(name) == kind, name
    assert s.get("nameserver_zone_serial", zone="coop.") == 1
    assert s.get("nameserver_zone_records", zone="coop.") == 10
    assert s.get("nameserver_zone_last_load_success", zone="coop.") == 1
    assert s.labels("nameserver_zone_rrsig_expiry_timestamp_seconds") == []  # unsigned
    assert s.get("nameserver_workers") == 2
    assert s.get("nameserver_memory_rss_bytes", process="supervisor") > 1_000_000
    assert s.get("nameserver_memory_rss_bytes", process="workers") > 1_000_000
    assert 0 < s.get("nameserver_uptime_seconds") < 600
    assert {"udp", "tcp"} == {d["transport"] for d in s.labels("dns_queries_total")}


def test_other_paths_are_404(served: NameServer) -> None:
    for path in ("/", "/metricsx", "/favicon.ico"):
        with pytest.raises(urllib.error.HTTPError) as info:
            scrape(served.metrics_port, path)
        assert info.value.code == 404
    scrape(served.metrics_port, "/metrics?x=1")  # a query string is fine


def test_counters_move_with_udp_and_tcp_queries(served: NameServer) -> None:
    port = served.port
    before = settled(served.metrics_port)
    for _ in range(5):
        assert udp(port, "coop", "SOA").rcode() == dns.rcode.NOERROR
    for _ in range(3):
        assert tcp(port, "coop", "NS").rcode() == dns.rcode.NOERROR
    for _ in range(2):
        assert udp(port, "nope.coop", "AAAA").rcode() == dns.rcode.NXDOMAIN
    assert tcp(port, "example", "A").rcode() == dns.rcode.REFUSED
    assert udp(port, "big.nic.coop", "TXT", edns=False).flags & dns.flags.TC
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x12\x34\x01", ("127.0.0.1", port))  # shorter than a header: dropped
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(struct.pack("!H", 3) + b"abc")  # a 3-byte "message": connection closed
        assert s.recv(10) == b""

    def delta(after: Scrape, name: str, **labels: str) -> float:
        return after.get(name, **labels) - before.get(name, **labels)

    def moved(s: Scrape) -> bool:
        return (
            delta(s, "dns_queries_total", transport="udp") >= 9
            and delta(s, "dns_queries_total", transport="tcp") >= 4
            and delta(s, "dns_malformed_dropped_total", transport="udp") >= 1
            and delta(s, "dns_malformed_dropped_total", transport="tcp") >= 1
        )

    wait_for(served.metrics_port, moved, "the queries")
    after = settled(served.metrics_port)
    assert delta(after, "dns_queries_total", transport="udp") == 9
    assert delta(after, "dns_queries_total", transport="tcp") == 4
    assert delta(after, "dns_responses_total", qtype="SOA", rcode="NOERROR") == 5
    assert delta(after, "dns_responses_total", qtype="NS", rcode="NOERROR") == 3
    assert delta(after, "dns_responses_total", qtype="AAAA", rcode="NXDOMAIN") == 2
    assert delta(after, "dns_responses_total", qtype="A", rcode="REFUSED") == 1
    assert delta(after, "dns_responses_total", qtype="TXT", rcode="NOERROR") == 1
    assert delta(after, "dns_responses_truncated_total") == 1
    assert delta(after, "dns_malformed_dropped_total", transport="udp") == 1
    assert delta(after, "dns_malformed_dropped_total", transport="tcp") == 1
    assert delta(after, "dns_tcp_connections_accepted_total") == 5
    assert delta(after, "dns_errors_total", transport="udp") == 0
    rcodes = {d["rcode"] for d in after.labels("dns_responses_total")}
    assert {"NOERROR", "NXDOMAIN", "REFUSED"} <= rcodes


def test_qtype_label_is_bounded(served: NameServer) -> None:
    for rdtype in ("TYPE65000", "TYPE4242", "TYPE123"):
        udp(served.port, "coop", rdtype)
    s = wait_for(
        served.metrics_port,
        lambda s: s.get("dns_responses_total", qtype="other", rcode="NOERROR") >= 3,
        "qtype other",
    )
    qtypes = {d["qtype"] for d in s.labels("dns_responses_total")}
    assert not any(q.startswith("TYPE") for q in qtypes), qtypes


def test_reload_changes_serial_and_no_counter_goes_backwards(served: NameServer) -> None:
    for _ in range(3):
        udp(served.port, "coop", "SOA")
        tcp(served.port, "coop", "SOA")
    before = wait_for(
        served.metrics_port,
        lambda s: s.get("dns_queries_total", transport="tcp") >= 3,
        "the queries",
    )
    generation = before.get("nameserver_generation")
    write_zone(served.zone, 2)
    assert ctl(served, "reload").returncode == 0
    after = wait_for(
        served.metrics_port,
        lambda s: s.get("nameserver_zone_serial", zone="coop.") == 2,
        "serial 2",
    )
    assert after.get("nameserver_generation") == generation + 1
    assert after.get("nameserver_reload_last_success") == 1
    assert after.get("nameserver_zone_loaded_timestamp_seconds", zone="coop.") > before.get(
        "nameserver_zone_loaded_timestamp_seconds", zone="coop."
    )
    time.sleep(1.5)  # the old workers' final reports and the new ones' first
    later = scrape(served.metrics_port)
    for s in (after, later):
        for series, value in before.counters().items():
            assert s.samples.get(series, 0.0) >= value, f"{series} went backwards"

    # A refused zone: the old serial stays, and the metrics say the load failed.
    write_zone(served.zone, 3, "bad.nic A 1.2.3\n")
    assert ctl(served, "reload").returncode == 1
    failed = scrape(served.metrics_port)
    assert failed.get("nameserver_zone_serial", zone="coop.") == 2
    assert failed.get("nameserver_zone_last_load_success", zone="coop.") == 0
    assert failed.get("nameserver_reload_last_success") == 0
    write_zone(served.zone, 4)
    assert ctl(served, "reload").returncode == 0
    fixed = scrape(served.metrics_port)
    assert fixed.get("nameserver_zone_serial", zone="coop.") == 4
    assert fixed.get("nameserver_zone_last_load_success", zone="coop.") == 1


def test_killed_worker_is_restarted_and_counters_hold(served: NameServer) -> None:
    for _ in range(4):
        udp(served.port, "coop", "NS")
    before = wait_for(
        served.metrics_port,
        lambda s: s.get("dns_responses_total", qtype="NS", rcode="NOERROR") >= 4,
        "the queries",
    )
    workers = send(served.control, {"command": "status"})["status"]["workers"]
    os.kill(workers[0]["pid"], signal.SIGKILL)
    after = wait_for(
        served.metrics_port,
        lambda s: s.get("nameserver_worker_restarts_total") == 1
        and s.get("nameserver_workers") == 2,
        "the restart",
    )
    for series, value in before.counters().items():
        assert after.samples.get(series, 0.0) >= value, f"{series} went backwards"
    assert udp(served.port, "coop", "SOA").rcode() == dns.rcode.NOERROR


def _listening_tcp_ports(pids: list[int]) -> set[int]:
    """Local ports of the TCP sockets in LISTEN state that ``pids`` hold open."""
    inodes = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if m := re.fullmatch(r"socket:\[(\d+)\]", target):
                inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_are_off_by_default(nameserver_factory, tmp_path: Path) -> None:
    zone = tmp_path / "coop.zone"
    write_zone(zone, 1)
    server = nameserver_factory(zone=zone, ipv6=False)
    tcp(server.port, "coop", "SOA")  # the worker listens on TCP a moment after UDP
    pid = server.proc.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(p) for p in f.read().split()]
    assert children  # the workers
    assert _listening_tcp_ports([pid, *children]) == {server.port}
    assert "metrics on" not in server.stderr_text()
