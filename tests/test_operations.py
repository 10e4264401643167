"""Operating the server: the query log, SIGTERM, switching user, watching zone files."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from conftest import MINIMAL_ZONE, REPO, NameServer, free_port

from nameserver.control import send

WAIT = 10.0  # seconds for something the test waits for

ZONE = MINIMAL_ZONE


def write_zone(path: Path, serial: int, extra: str = "") -> None:
    path.write_text(ZONE.format(serial=serial) + extra)


def start(factory: Callable[..., NameServer], tmp_path: Path, config: str = "") -> NameServer:
    zone = tmp_path / "coop.zone"
    write_zone(zone, 1)
    server = factory(zone=zone, config=(lambda port: config) if config else None, ipv6=False)
    server.zone = zone
    server.control = server.stderr_path.parent / f"control-{server.port}.sock"
    return server


def ctl(server: NameServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nameserver", *args, "--control", str(server.control)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )


def query(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    fn = dns.query.tcp if tcp else dns.query.udp
    return fn(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=3)


def soa_serial(port: int) -> int:
    return query(port, "coop", "SOA").answer[0][0].serial


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def marker() -> str:
    return f"m{uuid.uuid4().hex[:12]}.coop"


# --------------------------------------------------------------------------- query log


def test_query_log_on_and_off(nameserver_factory, tmp_path: Path) -> None:
    server = start(nameserver_factory, tmp_path)
    before = marker()
    query(server.port, before)
    out = ctl(server, "querylog", "on")
    assert out.returncode == 0 and out.stdout.strip() == "query log on", out
    on_udp, on_tcp = marker(), marker()
    assert query(server.port, on_udp, "AAAA").rcode() == dns.rcode.NXDOMAIN
    query(server.port, on_tcp, "TXT", tcp=True)
    wait_until(lambda: f"{on_tcp}. IN TXT tcp" in server.stderr_text(), "the query log line")
    text = server.stderr_text()
    assert f"query {on_udp}. IN AAAA udp NXDOMAIN " in text
    assert "query log on (control)" in text
    assert ctl(server, "querylog", "off").stdout.strip() == "query log off"
    off = marker()
    query(server.port, off)
    # With one worker the log is in order: once this line is there, "off" would be too.
    os.kill(server.proc.pid, signal.SIGUSR1)  # the signal does what the command does
    last = marker()
    wait_until(
        lambda: query(server.port, last) is not None and f"{last}." in server.stderr_text(),
        "the query log to come back on",
    )
    text = server.stderr_text()
    assert before not in text and off not in text
    assert "query log on (signal)" in text
    status = send(server.control, {"command": "status"})["status"]
    assert status["query_log"] is True
    bad = send(server.control, {"command": "querylog", "state": "maybe"})
    assert bad["ok"] is False and "on or off" in bad["error"]


def test_query_log_from_configuration_survives_reload(nameserver_factory, tmp_path) -> None:
    server = start(nameserver_factory, tmp_path, "query_log: true\n")
    first = marker()
    query(server.port, first)
    wait_until(lambda: first in server.stderr_text(), "the query log line")
    assert ctl(server, "querylog", "off").returncode == 0
    assert ctl(server, "reload").returncode == 0  # same configuration: stays off
    after = marker()
    query(server.port, after)
    assert ctl(server, "querylog", "on").returncode == 0
    last = marker()
    wait_until(
        lambda: query(server.port, last) is not None and last in server.stderr_text(),
        "the query log line",
    )
    assert after not in server.stderr_text()


# --------------------------------------------------------------------------- stopping


def test_sigterm_exits_zero_promptly_while_queries_flow(nameserver_factory, tmp_path) -> None:
    server = start(nameserver_factory, tmp_path, "workers: 2\n")
    port = server.port
    stop = threading.Event()
    answered = {"udp": 0, "tcp": 0}

    def udp_client() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while not stop.is_set():
                s.sendto(dns.message.make_query("coop", "SOA").to_wire(), ("127.0.0.1", port))
                try:
                    s.recv(4096)
                    answered["udp"] += 1
                except OSError:
                    pass

    def tcp_client() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    while not stop.is_set():
                        wire = dns.message.make_query("coop", "NS").to_wire()
                        s.sendall(struct.pack("!H", len(wire)) + wire)
                        if len(s.recv(4096)) < 2:
                            break
                        answered["tcp"] += 1
            except OSError:
                time.sleep(0.05)

    threads = [threading.Thread(target=f, daemon=True) for f in (udp_client, tcp_client)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: answered["udp"] > 20 and answered["tcp"] > 20, "queries to flow")
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        status = server.proc.wait(10)
        took = time.monotonic() - started
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert status == 0, server.stderr_text()
    # The workers drain TCP for at most 2 s; an open connection that keeps asking
    # must not hold the server up past that.
    assert took < 5.0, f"SIGTERM took {took:.1f} s"
    text = server.stderr_text()
    assert "stopping" in text and text.rstrip().endswith("stopped")
    assert "Traceback" not in text
    assert not server.control.exists()


# --------------------------------------------------------------------------- user


_AS_NOBODY = """
import os, sys
import nameserver.server.supervisor
from nameserver.cli import main
if os.geteuid() == 0:  # everything is imported: become an ordinary user
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
sys.exit(main(sys.argv[1:]))
"""


def test_user_refused_when_not_root(tmp_path: Path) -> None:
    zone = tmp_path / "coop.zone"
    write_zone(zone, 1)
    control = Path(f"/tmp/nameserver-test-{uuid.uuid4().hex[:8]}") / "control.sock"
    out = subprocess.run(
        [
            sys.executable, "-c", _AS_NOBODY, "serve", "--user", "nobody",
            "--zone", f"coop.={zone}", "--listen", f"127.0.0.1@{free_port(ipv6=False)}",
            "--control", str(control),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=30,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert out.returncode == 1, out.stderr
    assert "not starting: user is set to 'nobody', but only root can switch users" in out.stderr
    assert "CAP_NET_BIND_SERVICE" in out.stderr
    assert "loaded" not in out.stderr and "listening" not in out.stderr  # refused first
    assert not control.parent.exists()


def _ids(pid: int) -> dict[str, list[str]]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {k: fields[k].split() for k in ("Uid", "Gid", "Groups")}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_user_switch_as_root(nameserver_factory, tmp_path: Path) -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    server = start(nameserver_factory, tmp_path, "user: nobody\n")
    assert soa_serial(server.port) == 1
    assert query(server.port, "coop", "NS", tcp=True).answer
    status = send(server.control, {"command": "status"})["status"]
    pids = [status["pid"], *(w["pid"] for w in status["workers"])]
    assert status["pid"] == server.proc.pid and len(pids) == 2
    for pid in pids:
        ids = _ids(pid)
        assert ids["Uid"] == [str(nobody.pw_uid)] * 4, (pid, ids)
        assert ids["Gid"] == [str(nobody.pw_gid)] * 4, (pid, ids)
        assert ids["Groups"] == [], (pid, ids)
    text = server.stderr_text()
    assert f"running as user nobody (uid {nobody.pw_uid}, gid {nobody.pw_gid})" in text
    assert "running as root" not in text
    # The switched server still works: the query log, and a worker that is restarted.
    assert ctl(server, "querylog", "on").returncode == 0
    os.kill(status["workers"][0]["pid"], signal.SIGKILL)
    wait_until(
        lambda: len(send(server.control, {"command": "status"})["status"]["workers"]) == 1
        and "restarting it" in server.stderr_text(),
        "the worker to be restarted",
    )
    name = marker()
    wait_until(lambda: _answers(server.port, name), "the new worker")
    wait_until(lambda: name in server.stderr_text(), "the query log line")
    assert server.stop() == 0


def _answers(port: int, name: str) -> bool:
    try:
        query(port, name)
    except (dns.exception.DNSException, OSError):
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_without_user_warns(nameserver_factory, tmp_path: Path) -> None:
    server = start(nameserver_factory, tmp_path)
    assert "WARNING nameserver: running as root: set user" in server.stderr_text()


# --------------------------------------------------------------------------- watch


def test_watch_reloads_a_changed_zone_file(nameserver_factory, tmp_path: Path) -> None:
    server = start(nameserver_factory, tmp_path, "watch: true\n")
    assert soa_serial(server.port) == 1
    write_zone(server.zone, 2)
    wait_until(lambda: soa_serial(server.port) == 2, "serial 2")
    assert f"zone coop.: {server.zone} changed on disk; reloading it" in server.stderr_text()
    # A broken file is refused and the zone keeps being served; the fix is picked up.
    write_zone(server.zone, 3, "bad.nic A 1.2.3\n")
    wait_until(lambda: "bad A data" in server.stderr_text(), "the refusal")
    assert soa_serial(server.port) == 2
    replacement = tmp_path / "coop.zone.new"
    write_zone(replacement, 4)
    replacement.replace(server.zone)  # a rename counts as a change too
    wait_until(lambda: soa_serial(server.port) == 4, "serial 4")
    assert server.stderr_text().count("changed on disk") == 3


def test_no_watch_by_default(nameserver_factory, tmp_path: Path) -> None:
    server = start(nameserver_factory, tmp_path)
    write_zone(server.zone, 2)
    time.sleep(2.5)
    assert soa_serial(server.port) == 1
