"""A real validating resolver (unbound) with our KSK as its trust anchor validates every
kind of answer our server gives: positive, NXDOMAIN, NODATA, wildcard, DS; none bogus."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from bindsign import FLAVOURS, sign_with_bind
from conftest import free_port

DATA = Path(__file__).parent / "data"

# (name, type, rcode, proof): proof says whether the answer rests on an NSEC3 that
# *covers* a name (NXDOMAIN, wildcards). Under opt-out every NSEC3 has the opt-out flag,
# so such answers are provably insecure (RFC 5155 §9.2), not bogus: unbound gives them
# without AD. Everything else must come back with AD in every flavour.
CASES = [
    ("www.nic.coop", "A", dns.rcode.NOERROR, False),
    ("coop", "SOA", dns.rcode.NOERROR, False),
    ("coop", "DNSKEY", dns.rcode.NOERROR, False),
    ("nope.coop", "A", dns.rcode.NXDOMAIN, True),
    ("x.y.nope.coop", "AAAA", dns.rcode.NXDOMAIN, True),
    ("www.nic.coop", "MX", dns.rcode.NOERROR, False),
    ("ent.nic.coop", "A", dns.rcode.NOERROR, False),
    ("host.wild.nic.coop", "A", dns.rcode.NOERROR, True),
    ("a.b.wild.nic.coop", "TXT", dns.rcode.NOERROR, True),
    ("host.wild.nic.coop", "MX", dns.rcode.NOERROR, True),
    ("signed.coop", "DS", dns.rcode.NOERROR, False),
    ("a.chain.nic.coop", "A", dns.rcode.NOERROR, False),
    ("h.dn.nic.coop", "A", dns.rcode.NOERROR, False),
    ("tonx.nic.coop", "A", dns.rcode.NXDOMAIN, True),
]


def _anchor(keydir: Path) -> str:
    for key in keydir.glob("K*.key"):
        for line in key.read_text().splitlines():
            if not line.startswith(";") and " 257 " in line:
                return line.strip()
    raise AssertionError("no KSK written")


@pytest.fixture(scope="module", params=list(FLAVOURS))
def resolver(request, nameserver_factory, tmp_path_factory) -> Iterator[tuple[str, int]]:
    if shutil.which("unbound") is None:
        pytest.skip("unbound is not installed: run tests/setup.sh")
    tmp = tmp_path_factory.mktemp(f"unbound-{request.param}")
    signed = sign_with_bind(tmp, DATA / "engine.zone", request.param)
    server = nameserver_factory(zone=signed, ipv6=False)
    port = free_port(ipv6=False)
    conf = tmp / "unbound.conf"
    conf.write_text(f"""
server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{tmp}"
    pidfile: "{tmp}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    val-log-level: 2
    do-ip6: no
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "validator iterator"
    trust-anchor: "{_anchor(tmp)}"
    qname-minimisation: no
    cache-max-ttl: 0
remote-control:
    control-enable: no
stub-zone:
    name: "coop."
    stub-addr: 127.0.0.1@{server.port}
""")
    log = open(tmp / "unbound.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdout=log, stderr=log)
    try:
        _wait_ready(port, proc, tmp / "unbound.log")
        yield request.param, port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"unbound exited: {log.read_text()}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect(("127.0.0.1", port))
                q = dns.message.make_query("version.bind", "TXT", "CH")
                s.send(q.to_wire())
                s.settimeout(0.2)
                s.recv(512)
                return
            except OSError:
                time.sleep(0.1)
    pytest.fail(f"unbound never answered: {log.read_text()}")


@pytest.mark.parametrize(("name", "rdtype", "rcode", "covered"), CASES)
def test_unbound_validates(resolver, name: str, rdtype: str, rcode: int, covered: bool) -> None:
    flavour, port = resolver
    q = dns.message.make_query(name, rdtype, want_dnssec=True)
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=10)
    assert r.rcode() != dns.rcode.SERVFAIL, f"{name} {rdtype}: bogus ({flavour})"
    assert r.rcode() == rcode
    secure = not (covered and flavour == "nsec3-optout")
    assert bool(r.flags & dns.flags.AD) == secure, f"{name} {rdtype} AD ({flavour})"


def test_unbound_opt_out_delegation_is_insecure_not_bogus(resolver) -> None:
    flavour, port = resolver
    q = dns.message.make_query("example.coop", "DS", want_dnssec=True)
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=10)
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    # NSEC and NSEC3 without opt-out prove the absence of DS securely; opt-out cannot.
    assert bool(r.flags & dns.flags.AD) == (flavour != "nsec3-optout")
