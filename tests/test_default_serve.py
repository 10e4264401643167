"""`nameserver serve` with no options: the shipped zone, signed with the shipped test keys,
on 127.0.0.1 and ::1 port 5353, validating with the test KSK (README's first command)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import pytest

from nameserver.dnssec.keys import ds_record, load_keys

REPO = Path(__file__).resolve().parent.parent
PORT = 5353


def _port_free() -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", PORT))
            except OSError:
                return False
    return True


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    if not _port_free():
        pytest.skip(f"port {PORT} is in use here: the default server cannot start")
    control = tmp_path_factory.mktemp("default") / "control.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nameserver", "serve", "--control", str(control)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    q = dns.message.make_query("coop", "SOA")
    while True:
        try:
            dns.query.udp(q, "127.0.0.1", port=PORT, timeout=0.2)
            break
        except (OSError, dns.exception.Timeout):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"default server did not start: {proc.stderr.read().decode()}")
            time.sleep(0.1)
    yield proc
    proc.terminate()
    proc.wait(10)


def test_default_serve_answers_signed_and_validates(default_server) -> None:
    origin = dns.name.from_text("coop.")
    keys = dns.query.udp(dns.message.make_query("coop", "DNSKEY", want_dnssec=True),
                         "127.0.0.1", port=PORT, timeout=2)
    dnskey = keys.find_rrset(keys.answer, origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    # The DNSKEY set is the shipped test keys', and the KSK's DS is the documented one.
    shipped = load_keys(REPO / "keys", origin)
    ksk = next(k for k in shipped if k.ksk)
    assert ksk.dnskey in dnskey
    readme = (REPO / "keys" / "README.md").read_text()
    assert ds_record(ksk).to_text().lower() in readme.lower()
    for name, rdtype in (("coop", "SOA"), ("nic.coop", "MX"), ("no-such-name.coop", "A")):
        for ipv6 in (False, True):
            addr = "::1" if ipv6 else "127.0.0.1"
            r = dns.query.udp(dns.message.make_query(name, rdtype, want_dnssec=True),
                              addr, port=PORT, timeout=2)
            section = r.answer or r.authority
            sigs = [x for x in section if x.rdtype == dns.rdatatype.RRSIG]
            assert sigs, f"{name} {rdtype}: no RRSIG"
            for rrset in section:
                if rrset.rdtype != dns.rdatatype.RRSIG:
                    sig = next(s for s in sigs if s.name == rrset.name and s.covers == rrset.rdtype)
                    dns.dnssec.validate(rrset, sig, {origin: dnskey})
