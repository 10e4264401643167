"""Reloads while queries keep coming: none lost, none mixed, errors reported, old zone kept."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from bindsign import sign_with_bind
from conftest import MINIMAL_ZONE

from nameserver.control import send

REPO = Path(__file__).resolve().parent.parent

# The serial is also spelled in the data: an answer mixing two snapshots would show.
ZONE = MINIMAL_ZONE + """serial.nic CNAME s{serial}.nic
s{serial}.nic TXT "{serial}"
"""


def write_zone(path: Path, serial: int, extra: str = "") -> None:
    path.write_text(ZONE.format(serial=serial) + extra)


def ctl(server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nameserver", *args, "--control", str(server.control)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )


def soa_serial(port: int, tcp: bool = False) -> int:
    q = dns.message.make_query("coop", "SOA")
    fn = dns.query.tcp if tcp else dns.query.udp
    r = fn(q, "127.0.0.1", port=port, timeout=2)
    return r.answer[0][0].serial


@pytest.fixture
def served(nameserver_factory, tmp_path):
    zone = tmp_path / "coop.zone"
    write_zone(zone, 1)
    server = nameserver_factory(zone=zone, ipv6=False)
    server.zone = zone
    server.control = next(server.stderr_path.parent.glob(f"control-{server.port}.sock"))
    return server


def test_status_reports_zone_and_workers(served) -> None:
    out = ctl(served, "status")
    assert out.returncode == 0, out.stderr
    assert "zone coop.: serial 1, 7 records" in out.stdout
    assert f"127.0.0.1@{served.port}" in out.stdout


def test_reload_serves_new_serial(served) -> None:
    write_zone(served.zone, 2)
    out = ctl(served, "reload")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "zone coop.: serial 2 loaded" in out.stdout
    assert soa_serial(served.port) == 2
    assert soa_serial(served.port, tcp=True) == 2


def test_sighup_reloads(served) -> None:
    write_zone(served.zone, 3)
    os.kill(served.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while soa_serial(served.port) != 3:
        assert time.monotonic() < deadline, "SIGHUP did not reload"
        time.sleep(0.05)


@pytest.mark.parametrize(("breakage", "reason"), [
    ("bad.nic A 1.2.3\n", "bad A data"),
    ("serial.nic A 192.0.2.9\n", "CNAME at serial.nic.coop. beside other data"),
    ("( unclosed\n", "is never closed"),
])
def test_broken_zone_is_refused_and_old_serial_kept(served, breakage: str, reason: str) -> None:
    write_zone(served.zone, 4, breakage)
    out = ctl(served, "reload")
    assert out.returncode == 1
    assert reason in out.stdout
    assert f"{served.zone}:" in out.stdout  # file:line
    assert "still serving serial 1" in out.stdout
    assert soa_serial(served.port) == 1
    write_zone(served.zone, 5)  # fixed: the next reload goes through
    assert ctl(served, "reload").returncode == 0
    assert soa_serial(served.port) == 5


def test_reload_of_unknown_zone_is_an_error(served) -> None:
    out = ctl(served, "reload", "example.")
    assert out.returncode == 1 and "no zone example. is configured" in out.stdout


def test_stop(served) -> None:
    assert ctl(served, "stop").returncode == 0
    assert served.proc.wait(10) == 0
    assert not served.control.exists()


def test_no_query_lost_or_mixed_during_many_reloads(served) -> None:
    """UDP and TCP clients query all along while the zone is reloaded 15 times."""
    port = served.port
    stop = threading.Event()
    failures: list[str] = []
    counts = {"udp": 0, "tcp": 0}
    serials: set[int] = set()

    def check(q: dns.message.Message, r: dns.message.Message) -> None:
        """One snapshot per answer: the CNAME's target names the serial the TXT holds."""
        if r.id != q.id:
            failures.append(f"answer {r.id} to query {q.id}")
            return
        cname = [x for x in r.answer if x.rdtype == dns.rdatatype.CNAME]
        txt = [x for x in r.answer if x.rdtype == dns.rdatatype.TXT]
        if len(cname) != 1 or len(txt) != 1:
            failures.append(f"incomplete answer: {r.answer}")
            return
        serial = int(txt[0][0].strings[0])
        if cname[0][0].target.labels[0] != f"s{serial}".encode():
            failures.append(f"mixed answer: {cname[0][0].target} with TXT {serial}")
        serials.add(serial)

    def udp_client() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            while not stop.is_set():
                q = dns.message.make_query("serial.nic.coop", "TXT")
                s.sendto(q.to_wire(), ("127.0.0.1", port))
                try:
                    check(q, dns.message.from_wire(s.recv(4096)))
                except TimeoutError:
                    failures.append(f"UDP query {q.id} unanswered")
                counts["udp"] += 1

    def tcp_client() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    for _ in range(20):
                        q = dns.message.make_query("serial.nic.coop", "TXT")
                        wire = q.to_wire()
                        s.sendall(struct.pack("!H", len(wire)) + wire)
                        n = struct.unpack("!H", _recv(s, 2))[0]
                        check(q, dns.message.from_wire(_recv(s, n)))
                        counts["tcp"] += 1
            except OSError as e:
                failures.append(f"TCP: {e}")

    threads = [threading.Thread(target=f, daemon=True) for f in (udp_client, tcp_client)]
    for t in threads:
        t.start()
    for serial in range(10, 25):
        write_zone(served.zone, serial)
        out = ctl(served, "reload")
        assert out.returncode == 0, out.stdout + out.stderr
        assert soa_serial(port) == serial
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(10)
    assert not failures, failures[:10]
    assert counts["udp"] > 1000 and counts["tcp"] > 100, counts
    assert len(serials) > 5  # the clients really saw the reloads


def _recv(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def test_signed_zone_with_expired_signatures_is_refused(nameserver_factory, tmp_path) -> None:
    """At start and at reload: expired RRSIGs refuse the zone; the old one keeps serving."""
    source = tmp_path / "source.zone"
    write_zone(source, 30)
    good = sign_with_bind(tmp_path, source, "nsec3-optout", output="live.zone")
    server = nameserver_factory(zone=good, ipv6=False)
    control = next(server.stderr_path.parent.glob(f"control-{server.port}.sock"))
    write_zone(source, 31)
    expired = sign_with_bind(tmp_path, source, "nsec3-optout", output="expired.zone",
                             extra=("-P", "-s", "now-30d", "-e", "now-1d"))
    good.write_text(expired.read_text())
    out = subprocess.run(
        [sys.executable, "-m", "nameserver", "reload", "--control", str(control)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "expired at" in out.stdout and f"{good}:" in out.stdout
    assert soa_serial(server.port) == 30
    check = subprocess.run(
        [sys.executable, "-m", "nameserver", "check", str(expired), "--origin", "coop."],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 1 and "expired at" in check.stdout


def test_zone_signed_by_a_key_not_in_its_dnskey_set_is_refused(tmp_path) -> None:
    source = tmp_path / "source.zone"
    write_zone(source, 40)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    signed_a = dns.zone.from_file(str(sign_with_bind(tmp_path / "a", source, "nsec")), "coop.")
    signed_b = dns.zone.from_file(str(sign_with_bind(tmp_path / "b", source, "nsec")), "coop.")
    # B's zone, but A's DNSKEY set (self-signed by A's KSK): every other RRSIG names a
    # key the DNSKEY set lacks.
    apex_a, apex_b = signed_a.find_node("@"), signed_b.find_node("@")
    for rdtype, covers in ((dns.rdatatype.DNSKEY, 0), (dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY)):
        apex_b.replace_rdataset(apex_a.find_rdataset(dns.rdataclass.IN, rdtype, covers))
    mixed = tmp_path / "mixed.zone"
    signed_b.to_file(str(mixed), relativize=False)
    check = subprocess.run(
        [sys.executable, "-m", "nameserver", "check", str(mixed), "--origin", "coop."],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert check.returncode == 1, check.stdout
    assert f"{mixed}:1: coop. SOA is signed with key tag" in check.stdout
    assert "which is not in the DNSKEY set" in check.stdout


def _config_server(nameserver_factory, zones: list[tuple[str, Path]], workers: int):
    def config(port: int) -> str:
        listed = ", ".join(f"{{origin: {o}, file: {f}}}" for o, f in zones)
        return f'listen: ["127.0.0.1@{port}"]\nzones: [{listed}]\nworkers: {workers}\n'

    server = nameserver_factory(config=config, ipv6=False)
    server.control = server.stderr_path.parent / f"control-{server.port}.sock"
    server.config = server.stderr_path.parent / f"config-{server.port}.yaml"
    return server, config


def test_every_worker_serves_the_reloaded_serial(nameserver_factory, tmp_path) -> None:
    zone = tmp_path / "coop.zone"
    write_zone(zone, 50)
    server, _ = _config_server(nameserver_factory, [("coop.", zone)], workers=3)
    write_zone(zone, 51)
    assert ctl(server, "reload").returncode == 0
    # Each query from a new socket (a new source port) lands on a worker picked by the
    # SO_REUSEPORT hash: 300 of them reach every worker with near certainty.
    serials = {soa_serial(server.port) for _ in range(300)}
    assert serials == {51}
    status = json_status(server)
    assert len(status["workers"]) == 3
    assert {w["generation"] for w in status["workers"]} == {status["generation"]}


def test_reload_adds_and_removes_zones(nameserver_factory, tmp_path) -> None:
    coop, example = tmp_path / "coop.zone", tmp_path / "example.zone"
    write_zone(coop, 60)
    example.write_text(MINIMAL_ZONE.replace("$ORIGIN coop.", "$ORIGIN example.").format(serial=7))
    server, config = _config_server(nameserver_factory, [("coop.", coop)], workers=1)
    q = dns.message.make_query("example", "SOA")
    assert dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2).rcode() == 5  # REFUSED
    server.config.write_text(config(server.port).replace(
        "zones: [", f"zones: [{{origin: example., file: {example}}}, "))
    out = ctl(server, "reload")
    assert out.returncode == 0 and "zone example.: serial 7 loaded" in out.stdout
    r = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2)
    assert r.answer[0][0].serial == 7
    server.config.write_text(config(server.port))
    out = ctl(server, "reload")
    assert "zone example.: removed" in out.stdout
    assert dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2).rcode() == 5
    assert soa_serial(server.port) == 60


def json_status(server) -> dict:
    return send(server.control, {"command": "status"})["status"]


def _big_zone(path: Path, serial: int, broken_at: int | None = None) -> list[int]:
    """A zone file past the size that the loader reads in two processes (FORK_MIN_BYTES),
    made big by comments so that loading stays quick, and without directives (the
    file is cut in two only where a record states its owner and TTL and no directive
    came before: forkread.plan). With ``broken_at``, that delegation gets a bad A
    record. Returns the line number of each delegation."""
    from nameserver.zone.load import FORK_MIN_BYTES

    count = 20_000
    padding = "; " + "x" * ((FORK_MIN_BYTES // count) + 16) + "\n"
    lines = [
        f"coop. 300 SOA ns1.nic.coop. hostmaster.nic.coop. {serial} 7200 3600 1209600 900\n",
        "coop. 300 NS ns1.nic.coop.\n",
        "ns1.nic.coop. 300 A 192.0.2.1\n",
    ]
    numbers = []
    for i in range(count):
        lines.append(padding)
        lines.append(f"d{i}.coop. 300 NS ns1.provider.example.\n")
        numbers.append(len(lines))
        if i == broken_at:
            lines.append(f"d{i}.coop. 300 A 192.0.2.300\n")
    path.write_text("".join(lines))
    assert path.stat().st_size > FORK_MIN_BYTES
    return numbers


def test_big_zone_reload_reports_the_line_and_keeps_serving(nameserver_factory, tmp_path) -> None:
    """A file big enough to be read in two processes, reloaded through the supervisor
    (whose signal handlers and sockets the reading child inherits): a bad line in the
    part a child would read is reported with its line, the old zone keeps serving,
    and a fixed file loads whole, data from both parts of the file served."""
    zone = tmp_path / "coop.zone"
    _big_zone(zone, 1)
    server = nameserver_factory(zone=zone, ipv6=False)
    server.control = next(server.stderr_path.parent.glob(f"control-{server.port}.sock"))
    assert soa_serial(server.port) == 1

    lines = _big_zone(zone, 2, broken_at=100)  # in the first tenth of the file
    out = ctl(server, "reload")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{zone}:{lines[100] + 1}: bad A data" in out.stdout, out.stdout
    assert "still serving serial 1" in out.stdout
    assert soa_serial(server.port) == 1

    _big_zone(zone, 3)
    out = ctl(server, "reload")
    assert out.returncode == 0, out.stdout + out.stderr
    assert soa_serial(server.port) == 3
    for name in ("d5.coop", "d19999.coop"):  # near the start and near the end
        r = dns.query.udp(dns.message.make_query(f"www.{name}", "A"), "127.0.0.1",
                          port=server.port, timeout=2)
        assert [str(rr.name) for rr in r.authority] == [f"{name}."]
        assert r.authority[0].rdtype == dns.rdatatype.NS
