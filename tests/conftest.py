"""Shared fixtures: run ``python -m nameserver serve`` as a real process on a free port."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from refservers import ephemeral_low  # noqa: E402  (one rule for free ports, both places)

DATA = Path(__file__).resolve().parent / "data"
# The smallest zone the servers of these tests serve; tests add names and set {serial}.
MINIMAL_ZONE = """$ORIGIN coop.
$TTL 300
@ SOA ns1.nic hostmaster.nic {serial} 7200 3600 1209600 900
@ NS ns1.nic
@ NS ns2.nic
ns1.nic A 192.0.2.1
ns2.nic A 192.0.2.2
"""
START_TIMEOUT = 10.0  # seconds until the server must answer an SOA query
STOP_TIMEOUT = 5.0  # seconds after SIGTERM before it is killed
START_ATTEMPTS = 5  # fresh ports tried when the one picked was taken meanwhile


def _can_bind_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = _can_bind_ipv6()


def free_port(ipv6: bool = HAVE_IPV6) -> int:
    """A port that is free right now for UDP and TCP on 127.0.0.1 (and ::1).

    Drawn below the kernel's ephemeral range: client ports in TIME-WAIT (thousands
    after a TCP load test) cannot be listened on, even with SO_REUSEADDR.
    """
    places = [(socket.AF_INET, "127.0.0.1")] + ([(socket.AF_INET6, "::1")] if ipv6 else [])
    high = max(ephemeral_low(), 12000)
    for _ in range(200):
        port = random.randrange(10000, high)
        socks: list[socket.socket] = []
        try:
            for family, host in places:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(family, kind)
                    socks.append(s)
                    if kind == socket.SOCK_STREAM:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no port free for both UDP and TCP")


class NameServer:
    """A running ``nameserver serve`` process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, stderr_path: Path):
        self.proc = proc
        self.port = port
        self.stderr_path = stderr_path

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        """SIGTERM, wait (kill after STOP_TIMEOUT); return the exit status. Idempotent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode


def _answers_soa(port: int, origin: str) -> bool:
    query = dns.message.make_query(origin, "SOA")
    try:
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
    except (dns.exception.DNSException, OSError):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


def _launch(args_for_port: Callable[[int], list[str]], workdir: Path, origin: str) -> NameServer:
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        stderr_path = workdir / f"nameserver-{port}-{attempt}.stderr"
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nameserver", "serve", *args_for_port(port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=REPO,
                env=env,
            )
        server = NameServer(proc, port, stderr_path)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers_soa(port, origin):
                return server
            time.sleep(0.05)
        exited = proc.poll() is not None
        status = server.stop()
        text = server.stderr_text()
        if "cannot listen" in text and attempt < START_ATTEMPTS:
            continue  # someone took the port between free_port() and the bind: try another
        what = f"exited with status {status}" if exited else f"timed out after {START_TIMEOUT} s"
        pytest.fail(
            f"nameserver on port {port} never answered SOA {origin} ({what}); its stderr:\n{text}"
        )
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def nameserver_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., NameServer]]:
    """``start(zone=PATH, origin="coop.", config=None, ipv6=HAVE_IPV6) -> NameServer``.

    With ``zone``, serves it with ``--zone``/``--listen`` on 127.0.0.1 (and ::1).
    ``config`` is a function of the port returning YAML text, passed with ``--config``.
    Every server started is stopped (SIGTERM) when the module's tests are done.
    """
    workdir = tmp_path_factory.mktemp("nameserver")
    started: list[NameServer] = []

    def start(
        zone: Path | None = None,
        origin: str = "coop.",
        config: Callable[[int], str] | None = None,
        ipv6: bool = HAVE_IPV6,
    ) -> NameServer:
        def args_for_port(port: int) -> list[str]:
            # Each server gets its own control socket, so tests can run side by side.
            args = ["--control", str(workdir / f"control-{port}.sock")]
            if config is not None:
                path = workdir / f"config-{port}.yaml"
                path.write_text(config(port), encoding="utf-8")
                args += ["--config", str(path)]
            if zone is not None:
                args += ["--zone", f"{origin}={zone}", "--listen", f"127.0.0.1@{port}"]
                if ipv6:
                    args += ["--listen", f"::1@{port}"]
            return args

        server = _launch(args_for_port, workdir, origin)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
