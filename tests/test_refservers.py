"""Smoke test for benchmarks/refservers.py: Knot and NSD start, answer SOA over UDP, stop."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import refservers  # noqa: E402

ZONE = """\
$ORIGIN coop.
$TTL 3600
@        IN SOA a.nic.coop. hostmaster.nic.coop. 2024010101 7200 3600 1209600 3600
@        IN NS  a.nic.coop.
a.nic    IN A   192.0.2.1
example  IN NS  ns1.example.coop.
ns1.example IN A 192.0.2.53
"""

STARTERS = {
    "knot": ("knotd", refservers.start_knot),
    "nsd": ("nsd", refservers.start_nsd),
}


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie awaiting reaping by init)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw[raw.rfind(")") + 2 :].split()[0] in ("Z", "X")


@pytest.mark.parametrize("kind", sorted(STARTERS))
def test_refserver_answers_soa_and_stops(kind: str, tmp_path: Path) -> None:
    binary, start = STARTERS[kind]
    if refservers.find_binary(binary) is None:
        pytest.skip(f"{binary} not installed (Debian package {kind}); reference server unavailable")
    zonefile = tmp_path / "coop.zone"
    zonefile.write_text(ZONE)
    port = refservers.free_port()

    with start(zonefile, "coop.", port) as srv:
        assert srv.port == port
        ready = srv.wait_ready(15)
        assert 0 < ready < 15
        workdir = srv.workdir
        assert workdir.is_dir() and srv.config_path is not None
        assert srv.config_path.parent == workdir

        response = refservers.udp_query(
            "127.0.0.1", port, refservers.make_query("coop.", 6, qid=0x1234), timeout=2
        )
        hdr = refservers.parse_header(response)
        assert hdr.id == 0x1234 and hdr.qr and hdr.aa
        assert hdr.rcode_name == "NOERROR" and hdr.ancount == 1

        nx = refservers.parse_header(
            refservers.udp_query(
                "127.0.0.1", port, refservers.make_query("nope.coop.", 1), timeout=2
            )
        )
        assert nx.rcode_name == "NXDOMAIN"

        pids = srv.pids()
        assert pids[0] == srv.pid
        if kind == "nsd":
            assert len(pids) >= 2, "NSD forks its main and worker processes"
        assert refservers.process_tree_cpu_seconds(srv.pid) >= 0
        assert refservers.process_tree_rss_bytes(srv.pid) > 0
        assert refservers.process_tree_pss_bytes(srv.pid) > 0

    assert srv.returncode is not None
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in pids), f"{kind} processes still running: {pids}"
    assert not workdir.exists()
    assert srv.stop() == srv.returncode  # idempotent


def test_failed_start_is_reported(tmp_path: Path) -> None:
    if refservers.find_binary("knotd") is None:
        pytest.skip("knotd not installed (Debian package knot)")
    zonefile = tmp_path / "coop.zone"
    zonefile.write_text("this is not a zone file\n")
    port = refservers.free_port()
    with (
        refservers.start_knot(zonefile, "coop.", port) as srv,
        pytest.raises(refservers.ServerStartError),
    ):
        srv.wait_ready(1.0)


def test_system_cpu_is_the_kernels_part_of_the_total() -> None:
    """The benchmark reports the kernel's share of a server's CPU (system calls, the
    loopback delivery of its answers) beside the total: read from the same counters."""
    import os

    pid = os.getpid()
    before = refservers.process_tree_cpu_seconds(pid, include_reaped=False, system_only=True)
    for _ in range(100_000):
        os.stat("/")  # time spent in the kernel
    total = refservers.process_tree_cpu_seconds(pid, include_reaped=False)
    system = refservers.process_tree_cpu_seconds(pid, include_reaped=False, system_only=True)
    assert before < system < total
