"""End-to-end tests: ``python -m nameserver serve`` as a real process, queried with dig,
kdig, dnspython and raw sockets over IPv4 and IPv6, UDP and TCP.

The zone is ``tests/data/integ-coop.zone``; one server serves it for the whole module.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from conftest import DATA, HAVE_IPV6, REPO, NameServer, free_port

ZONE = DATA / "integ-coop.zone"
SERIAL = 2024060101
RECORDS = 104  # as counted by the loader
TIMEOUT = 3.0  # per DNS query
RUN_TIMEOUT = 15.0  # per subprocess
SOA_NEG = "coop. 900 IN SOA ns1.nic.coop. hostmaster.nic.coop. 2024060101 7200 1800 1209600 900"

V4, V6 = "127.0.0.1", "::1"
ADDRS = [V4, pytest.param(V6, marks=pytest.mark.skipif(not HAVE_IPV6, reason="no ::1"))]
NEEDS = {
    t: pytest.mark.skipif(shutil.which(t) is None, reason=f"{t} not installed")
    for t in ("dig", "kdig")
}
TOOLS = [pytest.param(t, marks=NEEDS[t]) for t in ("dig", "kdig")]


@pytest.fixture(scope="module")
def server(nameserver_factory: Callable[..., NameServer]) -> NameServer:
    return nameserver_factory(zone=ZONE)


# --------------------------------------------------------------------------- dnspython


def query(
    server: NameServer,
    name: str,
    rdtype: str = "A",
    *,
    addr: str = V4,
    tcp: bool = False,
    edns: int | None = 0,
    do: bool = False,
    payload: int = 1232,
    rdclass: str = "IN",
) -> dns.message.Message:
    """One query, RD clear (as a resolver asks an authoritative server)."""
    q = dns.message.make_query(
        name,
        rdtype,
        rdclass,
        use_edns=False if edns is None else edns,
        want_dnssec=do,
        payload=payload,
    )
    q.flags &= ~dns.flags.RD
    if tcp:
        return dns.query.tcp(q, addr, port=server.port, timeout=TIMEOUT)
    return dns.query.udp(q, addr, port=server.port, timeout=TIMEOUT)


def rrs(section: list[dns.rrset.RRset]) -> list[str]:
    """A section as sorted ``owner ttl class type rdata`` lines."""
    return sorted(line for rrset in section for line in rrset.to_text().splitlines())


TRANSPORTS = [
    pytest.param((V4, False), id="udp4"),
    pytest.param((V4, True), id="tcp4"),
    pytest.param((V6, False), id="udp6", marks=pytest.mark.skipif(not HAVE_IPV6, reason="")),
    pytest.param((V6, True), id="tcp6", marks=pytest.mark.skipif(not HAVE_IPV6, reason="")),
]


@pytest.fixture(params=TRANSPORTS)
def ask(request: pytest.FixtureRequest, server: NameServer) -> Callable[..., dns.message.Message]:
    """``query`` bound to the server and to one of IPv4/IPv6 x UDP/TCP."""
    addr, tcp = request.param
    return partial(query, server, addr=addr, tcp=tcp)


def is_aa(r: dns.message.Message) -> bool:
    return bool(r.flags & dns.flags.AA)


def is_tc(r: dns.message.Message) -> bool:
    return bool(r.flags & dns.flags.TC)


# --------------------------------------------------------------------------- dig and kdig


@dataclass
class Reply:
    """One message as printed by dig or kdig."""

    status: str
    flags: set[str]
    edns: dict[str, str] | None  # version, flags, udp; None: no OPT pseudosection
    sections: dict[str, list[list[str]]] = field(default_factory=dict)

    def records(self, section: str) -> list[str]:
        """``owner ttl class type rdata`` lines, whitespace normalised, in order."""
        return [" ".join(rr) for rr in self.sections.get(section, [])]


_SECTION = re.compile(r"^;; (QUESTION|ANSWER|AUTHORITY|ADDITIONAL) SECTION:$")
_DIG_EDNS = re.compile(r"^; EDNS: version: (\d+), flags:([^;]*); udp: (\d+)")
_KDIG_EDNS = re.compile(r"^;; Version: (\d+); flags:([^;]*); UDP size: (\d+) B")


def parse_replies(text: str) -> list[Reply]:
    """Every message in dig/kdig output (several with +keepopen or a TCP retry)."""
    replies: list[Reply] = []
    section: str | None = None
    for line in text.splitlines():
        if m := re.search(r"->>HEADER<<- opcode: \w+[,;] status: (\w+)", line):
            replies.append(Reply(m.group(1), set(), None))
            section = None
        elif not replies:
            continue
        elif m := re.match(r"^;; flags: ([a-z ]*);", line, re.IGNORECASE):
            replies[-1].flags = set(m.group(1).split())
        elif m := (_DIG_EDNS.match(line) or _KDIG_EDNS.match(line)):
            version, flags, udp = m.groups()
            replies[-1].edns = {"version": version, "flags": flags.strip(), "udp": udp}
        elif m := _SECTION.match(line):
            section = m.group(1)
            replies[-1].sections[section] = []
        elif not line.strip() or line.startswith(";"):
            if not line.strip():
                section = None
        elif section is not None and section != "QUESTION":
            replies[-1].sections[section].append(line.split())
    return replies


def run_tool(tool: str, server: NameServer, *args: str, addr: str = V4) -> str:
    """Run dig or kdig against the server (+norec, one try, short timeout); its stdout."""
    tries = "+tries=1" if tool == "dig" else "+retry=0"
    cmd = [tool, f"@{addr}", "-p", str(server.port), "+norec", "+time=2", tries, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}: {done.stderr}{done.stdout}"
    return done.stdout


def dig(tool: str, server: NameServer, *args: str, addr: str = V4) -> Reply:
    """The one message printed for a query."""
    replies = parse_replies(run_tool(tool, server, *args, addr=addr))
    assert len(replies) == 1, replies
    return replies[0]


# =========================================================================== the process


def test_startup_log(server: NameServer) -> None:
    # Workers answer as soon as each is up; the supervisor logs "ready" once all are.
    deadline = time.monotonic() + 10
    while "ready" not in server.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = server.stderr_text()
    loaded = f"zone coop. loaded: serial {SERIAL}, {RECORDS} records, "
    assert loaded in text and f"from {ZONE}" in text
    listening = [f"listening on {V4} port {server.port} (UDP and TCP)"]
    if HAVE_IPV6:
        listening.append(f"listening on {V6} port {server.port} (UDP and TCP)")
    for line in listening:
        assert line in text
    order = [text.index(loaded), *(text.index(line) for line in listening), text.index("ready")]
    assert order == sorted(order)
    assert "Traceback" not in text


# =========================================================================== dig and kdig


@pytest.mark.parametrize("addr", ADDRS)
@pytest.mark.parametrize("tool", TOOLS)
def test_tool_authoritative_answer(tool: str, addr: str, server: NameServer) -> None:
    r = dig(tool, server, "www.nic.coop", "A", addr=addr)
    assert r.status == "NOERROR"
    assert {"qr", "aa"} <= r.flags and not {"tc", "ra", "rd"} & r.flags
    assert r.records("ANSWER") == ["www.nic.coop. 3600 IN A 192.0.2.80"]


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_short(tool: str, server: NameServer) -> None:
    out = run_tool(tool, server, "+short", "alias.coop", "A")
    assert out.split() == ["alias2.coop.", "www.nic.coop.", "192.0.2.80"]
    assert run_tool(tool, server, "+short", "anything.nic.coop", "TXT").split() == ['"wildcard"']
    assert run_tool(tool, server, "+short", "nowhere.coop", "A").strip() == ""


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_referral(tool: str, server: NameServer) -> None:
    r = dig(tool, server, "www.example.coop", "A")
    assert r.status == "NOERROR"
    assert "aa" not in r.flags
    assert r.records("ANSWER") == []
    assert r.records("AUTHORITY") == [
        "example.coop. 3600 IN NS ns1.example.coop.",
        "example.coop. 3600 IN NS ns2.example.coop.",
    ]
    assert sorted(r.records("ADDITIONAL")) == [
        "ns1.example.coop. 3600 IN A 198.51.100.1",
        "ns1.example.coop. 3600 IN AAAA 2001:db8:1::1",
        "ns2.example.coop. 3600 IN A 198.51.100.2",
    ]


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_negative_answers(tool: str, server: NameServer) -> None:
    nx = dig(tool, server, "nowhere.coop", "A")
    assert nx.status == "NXDOMAIN" and "aa" in nx.flags
    assert nx.records("ANSWER") == []
    assert [" ".join(rr.split()) for rr in nx.records("AUTHORITY")] == [SOA_NEG]
    nodata = dig(tool, server, "www.nic.coop", "AAAA")
    assert nodata.status == "NOERROR" and "aa" in nodata.flags
    assert nodata.records("ANSWER") == [] and nodata.records("AUTHORITY") == [SOA_NEG]


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_ds_and_dnssec_referral(tool: str, server: NameServer) -> None:
    ds = dig(tool, server, "signed.coop", "DS")
    assert ds.status == "NOERROR" and "aa" in ds.flags
    assert [rr.split()[3] for rr in ds.records("ANSWER")] == ["DS"]
    referral = dig(tool, server, "+dnssec", "www.signed.coop", "A")
    assert "aa" not in referral.flags
    types = [rr.split()[3] for rr in referral.records("AUTHORITY")]
    assert types == ["NS"]  # an unsigned zone's DS proves nothing: not sent (as Knot)
    assert referral.records("ADDITIONAL") == ["ns1.signed.coop. 3600 IN A 198.51.100.53"]


@NEEDS["dig"]
def test_dig_edns(server: NameServer) -> None:
    plain = dig("dig", server, "www.nic.coop", "A")  # dig sends EDNS 0 by default
    assert plain.edns == {"version": "0", "flags": "", "udp": "1232"}
    assert dig("dig", server, "+bufsize=4096", "www.nic.coop").edns == plain.edns
    with_do = dig("dig", server, "+dnssec", "www.nic.coop", "A")
    assert with_do.edns is not None and with_do.edns["flags"] == "do"
    assert dig("dig", server, "+noedns", "www.nic.coop", "A").edns is None
    badvers = dig("dig", server, "+edns=1", "+noednsnegotiation", "www.nic.coop", "A")
    assert badvers.status == "BADVERS"
    assert badvers.edns is not None and badvers.edns["version"] == "0"
    assert badvers.records("ANSWER") == []


@NEEDS["kdig"]
def test_kdig_edns(server: NameServer) -> None:
    assert dig("kdig", server, "www.nic.coop").edns is None  # kdig: no EDNS by default
    edns = dig("kdig", server, "+edns", "www.nic.coop").edns
    assert edns == {"version": "0", "flags": "", "udp": "1232"}
    with_do = dig("kdig", server, "+dnssec", "www.nic.coop").edns
    assert with_do is not None and with_do["flags"] == "do"
    assert dig("kdig", server, "+edns=1", "www.nic.coop").status == "BADVERS"


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_truncation_and_tcp_retry(tool: str, server: NameServer) -> None:
    truncated = dig(tool, server, "+noedns", "+ignore", "bigtxt.coop", "TXT")
    assert {"aa", "tc"} <= truncated.flags
    assert truncated.records("ANSWER") == []
    out = run_tool(tool, server, "+noedns", "bigtxt.coop", "TXT")  # default: retry over TCP
    full = parse_replies(out)[-1]
    if tool == "dig":
        assert "Truncated, retrying in TCP mode" in out
    else:
        assert re.search(r"From .*\(TCP\)", out)
    assert "tc" not in full.flags
    answer = full.records("ANSWER")
    assert len(answer) == 20
    assert all(' IN TXT "big-txt-record-' in rr for rr in answer)


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_big_referral(tool: str, server: NameServer) -> None:
    truncated = dig(tool, server, "+noedns", "+ignore", "www.big.coop", "A")
    assert "tc" in truncated.flags and "aa" not in truncated.flags
    assert len(truncated.records("AUTHORITY")) == 13
    assert len(truncated.records("ADDITIONAL")) < 26
    whole = dig(tool, server, "+edns", "+ignore", "www.big.coop", "A")
    assert "tc" not in whole.flags
    assert len(whole.records("AUTHORITY")) == 13 and len(whole.records("ADDITIONAL")) == 26


@NEEDS["kdig"]
def test_kdig_pipelined_on_one_tcp_connection(server: NameServer) -> None:
    out = run_tool(
        "kdig", server, "+tcp", "+keepopen", "www.nic.coop", "A", "alias.coop", "A",
        "nowhere.coop", "A", "www.example.coop", "A",
    )  # fmt: skip
    replies = parse_replies(out)
    assert [r.status for r in replies] == ["NOERROR", "NOERROR", "NXDOMAIN", "NOERROR"]
    assert replies[0].records("ANSWER") == ["www.nic.coop. 3600 IN A 192.0.2.80"]
    assert len(replies[1].records("ANSWER")) == 3
    assert replies[3].records("ANSWER") == [] and len(replies[3].records("AUTHORITY")) == 2
    assert out.count("(TCP)") == 4


@NEEDS["dig"]
def test_chaos_refused_without_identity(server: NameServer) -> None:
    for name in ("version.bind", "version.server", "id.server", "hostname.bind"):
        assert dig("dig", server, name, "CH", "TXT").status == "REFUSED"
    r = query(server, "version.bind", "TXT", rdclass="CH", tcp=True)
    assert r.rcode() == dns.rcode.REFUSED and not r.answer


@NEEDS["dig"]
def test_chaos_answered_with_identity(
    nameserver_factory: Callable[..., NameServer],
) -> None:
    def config(port: int) -> str:
        return (
            f'listen: ["127.0.0.1@{port}"]\n'
            f"zones: [{{origin: coop., file: {ZONE}}}]\n"
            'identity: {version: "test-1", nsid: "ns-test"}\n'
        )

    srv = nameserver_factory(config=config)
    for name in ("version.bind", "version.server"):
        r = dig("dig", srv, name, "CH", "TXT")
        assert r.status == "NOERROR" and "aa" not in r.flags  # as Knot and NSD
        assert r.records("ANSWER") == [f'{name}. 0 CH TXT "test-1"']
    assert run_tool("dig", srv, "+short", "version.bind", "CH", "TXT").strip() == '"test-1"'
    assert dig("dig", srv, "id.server", "CH", "TXT").status == "REFUSED"  # not configured
    assert '; NSID: 6e 73 2d 74 65 73 74 ("ns-test")' in run_tool(
        "dig", srv, "+nsid", "www.nic.coop"
    )
    r = query(srv, "VERSION.BIND", "TXT", rdclass="CH")
    assert r.rcode() == dns.rcode.NOERROR
    assert rrs(r.answer) == ['VERSION.BIND. 0 CH TXT "test-1"']
    # The zone from the configuration file is served too.
    assert rrs(query(srv, "www.nic.coop").answer) == ["www.nic.coop. 3600 IN A 192.0.2.80"]
    assert srv.stop() == 0  # SIGTERM: a clean exit
    assert "stopping" in srv.stderr_text()


# ====================================================== dnspython, all transports


def test_authoritative_answer(ask: Callable[..., dns.message.Message]) -> None:
    r = ask("www.nic.coop", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert is_aa(r) and not is_tc(r) and not r.flags & (dns.flags.RA | dns.flags.RD)
    assert rrs(r.answer) == ["www.nic.coop. 3600 IN A 192.0.2.80"]
    assert not r.authority and not r.additional


def test_apex_ns_and_mx_with_additional_addresses(ask: Callable[..., dns.message.Message]) -> None:
    ns = ask("coop", "NS")
    assert is_aa(ns)
    assert rrs(ns.answer) == ["coop. 3600 IN NS ns1.nic.coop.", "coop. 3600 IN NS ns2.nic.coop."]
    assert rrs(ns.additional) == [
        "ns1.nic.coop. 3600 IN A 192.0.2.1",
        "ns1.nic.coop. 3600 IN AAAA 2001:db8::1",
        "ns2.nic.coop. 3600 IN A 192.0.2.2",
        "ns2.nic.coop. 3600 IN AAAA 2001:db8::2",
    ]
    mx = ask("nic.coop", "MX")
    assert rrs(mx.answer) == ["nic.coop. 3600 IN MX 10 mail.nic.coop."]
    assert rrs(mx.additional) == ["mail.nic.coop. 3600 IN A 192.0.2.25"]


def test_referral_with_glue(ask: Callable[..., dns.message.Message]) -> None:
    for name, rdtype in (("www.example.coop", "A"), ("example.coop", "NS"), ("example.coop", "A")):
        r = ask(name, rdtype)
        assert r.rcode() == dns.rcode.NOERROR
        assert not is_aa(r), name
        assert not r.answer
        assert rrs(r.authority) == [
            "example.coop. 3600 IN NS ns1.example.coop.",
            "example.coop. 3600 IN NS ns2.example.coop.",
        ]
        assert rrs(r.additional) == [
            "ns1.example.coop. 3600 IN A 198.51.100.1",
            "ns1.example.coop. 3600 IN AAAA 2001:db8:1::1",
            "ns2.example.coop. 3600 IN A 198.51.100.2",
        ]
    # The glue's owner is below the cut: asking for it is a referral too, not an answer.
    glue = ask("ns1.example.coop", "A")
    assert not is_aa(glue) and not glue.answer and len(glue.authority[0]) == 2


def test_referral_out_of_zone_servers_has_no_glue(ask: Callable[..., dns.message.Message]) -> None:
    r = ask("www.outside.coop", "A")
    assert not is_aa(r) and not r.answer
    assert rrs(r.authority) == [
        "outside.coop. 3600 IN NS ns1.dns-host.net.",
        "outside.coop. 3600 IN NS ns2.dns-host.org.",
    ]
    assert not r.additional


def test_referral_lookalike_out_of_zone_server_has_no_glue(
    ask: Callable[..., dns.message.Message],
) -> None:
    r = ask("www.lookalike.coop", "A")
    assert rrs(r.authority) == ["lookalike.coop. 3600 IN NS ns.hosting.info."]
    assert rrs(r.additional) == []  # actual: ["ns.hosting.coop. 3600 IN A 192.0.2.77"]


def test_ds_at_delegation(ask: Callable[..., dns.message.Message]) -> None:
    r = ask("signed.coop", "DS")
    assert r.rcode() == dns.rcode.NOERROR and is_aa(r)
    assert rrs(r.answer) == [
        "signed.coop. 3600 IN DS 12345 13 2 "
        "2bb183af5f22588179a53b0a98631fad1a292118fe1bc5c8a3ae2d6a2c3d4e5f"
    ]
    assert not r.authority
    unsigned = ask("example.coop", "DS")  # the parent side has no DS: NODATA, not a referral
    assert unsigned.rcode() == dns.rcode.NOERROR and is_aa(unsigned)
    assert not unsigned.answer and rrs(unsigned.authority) == [SOA_NEG]


def test_unsigned_zone_referral_has_no_ds(ask: Callable[..., dns.message.Message]) -> None:
    # Signed zones send DS (with RRSIG) under DO: tests/test_dnssec_serving.py.
    with_do = ask("www.signed.coop", "A", do=True)
    assert not is_aa(with_do)
    assert [dns.rdatatype.to_text(s.rdtype) for s in with_do.authority] == ["NS"]
    assert rrs(with_do.additional) == ["ns1.signed.coop. 3600 IN A 198.51.100.53"]
    without = ask("www.signed.coop", "A")
    assert [dns.rdatatype.to_text(s.rdtype) for s in without.authority] == ["NS"]


def test_nxdomain(ask: Callable[..., dns.message.Message]) -> None:
    for name in ("nowhere.coop", "x.www.nic.coop", "deep.below.host.ent.coop"):
        r = ask(name, "A")
        assert r.rcode() == dns.rcode.NXDOMAIN, name
        assert is_aa(r) and not r.answer and not r.additional
        assert rrs(r.authority) == [SOA_NEG]  # TTL min(SOA TTL 3600, MINIMUM 900)


def test_nodata(ask: Callable[..., dns.message.Message]) -> None:
    for name, rdtype in (("www.nic.coop", "AAAA"), ("coop", "MX"), ("old.coop", "A")):
        r = ask(name, rdtype)
        assert r.rcode() == dns.rcode.NOERROR and is_aa(r)
        assert not r.answer and rrs(r.authority) == [SOA_NEG]


def test_wildcard_synthesis(ask: Callable[..., dns.message.Message]) -> None:
    r = ask("anything.nic.coop", "A")
    assert r.rcode() == dns.rcode.NOERROR and is_aa(r)
    assert rrs(r.answer) == ["anything.nic.coop. 3600 IN A 192.0.2.99"]
    deep = ask("a.b.nic.coop", "TXT")  # closest encloser nic.coop: its wildcard applies
    assert rrs(deep.answer) == ['a.b.nic.coop. 3600 IN TXT "wildcard"']
    nodata = ask("anything.nic.coop", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert rrs(nodata.authority) == [SOA_NEG]
    exact = ask("www.nic.coop", "TXT")  # an existing name is never synthesised
    assert not exact.answer and rrs(exact.authority) == [SOA_NEG]


def test_cname_chain(ask: Callable[..., dns.message.Message]) -> None:
    r = ask("alias.coop", "A")
    assert r.rcode() == dns.rcode.NOERROR and is_aa(r)
    assert [s.to_text() for s in r.answer] == [
        "alias.coop. 3600 IN CNAME alias2.coop.",
        "alias2.coop. 3600 IN CNAME www.nic.coop.",
        "www.nic.coop. 3600 IN A 192.0.2.80",
    ]
    cname = ask("alias.coop", "CNAME")  # asking for the CNAME itself: not followed
    assert rrs(cname.answer) == ["alias.coop. 3600 IN CNAME alias2.coop."]
    dangling = ask("dangling.coop", "A")  # RFC 6604: the RCODE is that of the last name
    assert dangling.rcode() == dns.rcode.NXDOMAIN and is_aa(dangling)
    assert rrs(dangling.answer) == ["dangling.coop. 3600 IN CNAME nowhere.coop."]
    assert rrs(dangling.authority) == [SOA_NEG]


def test_dname_synthesis(ask: Callable[..., dns.message.Message]) -> None:
    r = ask("www.old.coop", "A")
    assert r.rcode() == dns.rcode.NOERROR and is_aa(r)
    assert [s.to_text() for s in r.answer] == [
        "old.coop. 3600 IN DNAME nic.coop.",
        "www.old.coop. 3600 IN CNAME www.nic.coop.",
        "www.nic.coop. 3600 IN A 192.0.2.80",
    ]
    via_wildcard = ask("foo.old.coop", "A")
    assert via_wildcard.answer[-1].to_text() == "foo.nic.coop. 3600 IN A 192.0.2.99"
    own = ask("old.coop", "DNAME")
    assert rrs(own.answer) == ["old.coop. 3600 IN DNAME nic.coop."]
    gone = ask("x.www.old.coop", "A")  # synthesised target x.www.nic.coop. does not exist
    assert gone.rcode() == dns.rcode.NXDOMAIN and len(gone.answer) == 2


def test_empty_non_terminal(ask: Callable[..., dns.message.Message]) -> None:
    for rdtype in ("A", "TXT", "ANY"):
        r = ask("ent.coop", rdtype)
        assert r.rcode() == dns.rcode.NOERROR, rdtype  # not NXDOMAIN: the name exists
        assert is_aa(r) and not r.answer and rrs(r.authority) == [SOA_NEG]
    below = ask("host.ent.coop", "A")
    assert rrs(below.answer) == ["host.ent.coop. 3600 IN A 192.0.2.5"]


def test_out_of_zone_refused(ask: Callable[..., dns.message.Message]) -> None:
    for name, rdtype in (("www.example.com", "A"), (".", "SOA"), ("xcoop", "A"), ("org", "NS")):
        r = ask(name, rdtype)
        assert r.rcode() == dns.rcode.REFUSED, name
        assert not is_aa(r) and not r.answer and not r.authority and not r.additional


def test_any_returns_one_rrset(ask: Callable[..., dns.message.Message]) -> None:
    r = ask("multi.coop", "ANY")
    assert r.rcode() == dns.rcode.NOERROR and is_aa(r)
    assert len(r.answer) == 1  # RFC 8482: A, AAAA and TXT exist; one RRset is enough
    assert rrs(r.answer) == ["multi.coop. 3600 IN A 192.0.2.44"]
    cname = ask("alias.coop", "ANY")
    assert rrs(cname.answer) == ["alias.coop. 3600 IN CNAME alias2.coop."]


def test_letter_case_of_question_preserved(ask: Callable[..., dns.message.Message]) -> None:
    for _ in range(2):  # the second time from the answer cache
        r = ask("WwW.NiC.CoOp", "A")
        assert r.question[0].name.to_text() == "WwW.NiC.CoOp."
        assert r.answer[0].name.to_text() == "WwW.NiC.CoOp."
        assert rrs(r.answer) == ["WwW.NiC.CoOp. 3600 IN A 192.0.2.80"]
        wild = ask("SoMe.NiC.coop", "A")
        assert wild.answer[0].name.to_text() == "SoMe.NiC.coop."


def test_rd_copied_ra_never_set(server: NameServer) -> None:
    q = dns.message.make_query("www.nic.coop", "A")  # RD set
    r = dns.query.udp(q, V4, port=server.port, timeout=TIMEOUT)
    assert r.flags & dns.flags.RD and not r.flags & dns.flags.RA and is_aa(r)


# =========================================================================== EDNS


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_edns_opt_payload_and_do(server: NameServer, tcp: bool) -> None:
    for payload in (512, 1232, 4096):
        r = query(server, "www.nic.coop", payload=payload, tcp=tcp)
        assert r.edns == 0 and r.payload == 1232 and not r.ednsflags & dns.flags.DO
    r = query(server, "www.nic.coop", do=True, tcp=tcp)
    assert r.edns == 0 and r.ednsflags & dns.flags.DO
    assert rrs(r.answer) == ["www.nic.coop. 3600 IN A 192.0.2.80"]
    for name, rdtype in (("nowhere.coop", "A"), ("www.example.com", "A"), ("ent.coop", "A")):
        assert query(server, name, rdtype, do=True, tcp=tcp).ednsflags & dns.flags.DO


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_edns_version_1_badvers(server: NameServer, tcp: bool) -> None:
    r = query(server, "www.nic.coop", edns=1, tcp=tcp)
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0 and not r.answer and not r.authority


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_no_opt_without_edns(server: NameServer, tcp: bool) -> None:
    cases = [
        ("www.nic.coop", "A", "IN"),  # answer
        ("nowhere.coop", "A", "IN"),  # NXDOMAIN
        ("www.example.coop", "A", "IN"),  # referral
        ("www.example.com", "A", "IN"),  # REFUSED
        ("version.bind", "TXT", "CH"),  # REFUSED
        ("bigtxt.coop", "TXT", "IN"),  # truncated over UDP
    ]
    for name, rdtype, rdclass in cases:
        r = query(server, name, rdtype, rdclass=rdclass, edns=None, tcp=tcp)
        assert r.edns == -1, name  # dnspython: -1 means the response had no OPT record


def test_malformed_edns_option_is_formerr_even_when_cached(server: NameServer) -> None:
    good = make_wire(9001, "cache-probe.nic.coop", arcount=1) + opt_rr()
    truncated_option = b"\x00\x0a\x00"  # COOKIE, 3 of its 4 header bytes
    bad = make_wire(9002, "cache-probe.nic.coop", arcount=1) + opt_rr(truncated_option)
    first = udp_exchange(server, bad)
    assert first is not None and rcode_of(first) == dns.rcode.FORMERR  # cache empty: FORMERR
    assert rcode_of(udp_exchange(server, good)) == dns.rcode.NOERROR  # now cached
    again = udp_exchange(server, bad)
    assert again is not None and rcode_of(again) == dns.rcode.FORMERR  # actual: NOERROR answer


# =========================================================================== truncation


@pytest.mark.parametrize("addr", ADDRS)
def test_truncation_then_tcp(server: NameServer, addr: str) -> None:
    plain = query(server, "bigtxt.coop", "TXT", addr=addr, edns=None)
    assert is_tc(plain) and is_aa(plain) and not plain.answer and plain.edns == -1
    edns = query(server, "bigtxt.coop", "TXT", addr=addr)  # ~1.5 kB: over 1232 too
    assert is_tc(edns) and not edns.answer and edns.edns == 0
    whole = query(server, "bigtxt.coop", "TXT", addr=addr, tcp=True, edns=None)
    assert not is_tc(whole) and len(whole.answer) == 1 and len(whole.answer[0]) == 20
    assert len(whole.to_wire()) > 1232
    mid_plain = query(server, "midtxt.coop", "TXT", addr=addr, edns=None)
    assert is_tc(mid_plain) and not mid_plain.answer
    mid = query(server, "midtxt.coop", "TXT", addr=addr)  # > 512, fits in 1232 with EDNS
    assert not is_tc(mid) and len(mid.answer[0]) == 10 and 512 < len(mid.to_wire()) <= 1232


@pytest.mark.parametrize("addr", ADDRS)
def test_big_referral_truncated_for_required_glue(server: NameServer, addr: str) -> None:
    plain = query(server, "www.big.coop", "A", addr=addr, edns=None)
    assert is_tc(plain) and not is_aa(plain)
    assert len(plain.authority) == 1 and len(plain.authority[0]) == 13
    glue = sum(len(s) for s in plain.additional)
    assert 0 < glue < 26
    assert len(plain.to_wire()) <= 512
    for tcp, edns in ((False, 0), (True, None)):
        whole = query(server, "www.big.coop", "A", addr=addr, tcp=tcp, edns=edns)
        assert not is_tc(whole)
        assert len(whole.authority[0]) == 13 and sum(len(s) for s in whole.additional) == 26


# =========================================================================== raw sockets


def make_wire(
    qid: int,
    name: str = "www.nic.coop",
    qtype: int = 1,
    *,
    flags: int = 0,
    qdcount: int = 1,
    arcount: int = 0,
    qclass: int = 1,
) -> bytes:
    header = struct.pack("!HHHHHH", qid, flags, qdcount, 0, 0, arcount)
    return header + name_wire(name) + struct.pack("!HH", qtype, qclass)


def name_wire(name: str) -> bytes:
    return dns.name.from_text(name).to_wire()


def opt_rr(rdata: bytes = b"", payload: int = 1232) -> bytes:
    return b"\x00" + struct.pack("!HHIH", 41, payload, 0, len(rdata)) + rdata


def rcode_of(wire: bytes | None) -> int:
    assert wire is not None and len(wire) >= 12
    return wire[3] & 0x0F


def udp_exchange(server: NameServer, wire: bytes, addr: str = V4) -> bytes | None:
    """Send ``wire`` and then a probe query; return the reply to ``wire`` (None if none).

    UDP replies come back in order, so whatever arrives before the probe's answer is
    the reply to ``wire``; the probe's answer also shows the server is still serving.
    """
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    probe_id = 0xABCD if wire[:2] != b"\xab\xcd" else 0xABCE
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.sendto(wire, (addr, server.port))
        s.sendto(make_wire(probe_id, "www.nic.coop"), (addr, server.port))
        replies = []
        while True:
            data = s.recv(65535)
            if data[:2] == probe_id.to_bytes(2, "big") and data[2] & 0x80:
                assert rcode_of(data) == dns.rcode.NOERROR and data[7] == 1, data
                break
            replies.append(data)
    assert len(replies) <= 1, replies
    assert server.proc.poll() is None, server.stderr_text()
    return replies[0] if replies else None


def _pointer_loop() -> bytes:
    return struct.pack("!HHHHHH", 0x1001, 0, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)


def _pointer_loop_2() -> bytes:  # "a" then a pointer back to the start of the name
    return struct.pack("!HHHHHH", 0x1002, 0, 1, 0, 0, 0) + b"\x01a\xc0\x0c\x00\x01\x00\x01"


MALFORMED: list[tuple[str, bytes, int | None]] = [
    ("five-bytes", b"\x12\x34\x00\x00\x00", None),
    ("header-only-qr", struct.pack("!HHHHHH", 0x1003, 0x8000, 0, 0, 0, 0), None),
    ("response-qr1", make_wire(0x1004, flags=0x8000), None),
    ("response-qr1-aa", make_wire(0x1005, flags=0x8400), None),
    (
        "qdcount-2",
        make_wire(0x1006, qdcount=2) + name_wire("coop") + b"\x00\x06\x00\x01",
        dns.rcode.FORMERR,
    ),
    ("qdcount-0", struct.pack("!HHHHHH", 0x1007, 0, 0, 0, 0, 0), dns.rcode.FORMERR),
    ("pointer-loop", _pointer_loop(), dns.rcode.FORMERR),
    ("pointer-loop-2", _pointer_loop_2(), dns.rcode.FORMERR),
    ("two-opt", make_wire(0x1008, arcount=2) + opt_rr() + opt_rr(), dns.rcode.FORMERR),
    ("truncated-question", make_wire(0x1009)[:-2], dns.rcode.FORMERR),
    ("trailing-garbage", make_wire(0x100A) + b"\x00\x00", dns.rcode.FORMERR),
    (
        "label-over-63",
        make_wire(0x100B)[:12] + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
        dns.rcode.FORMERR,
    ),
    (
        "opt-in-answer",
        make_wire(0x100C)[:6] + b"\x00\x01" + make_wire(0x100C)[8:] + opt_rr(),
        dns.rcode.FORMERR,
    ),
]


@pytest.mark.parametrize(("wire", "expected"), [pytest.param(w, e, id=i) for i, w, e in MALFORMED])
def test_malformed_udp(server: NameServer, wire: bytes, expected: int | None) -> None:
    reply = udp_exchange(server, wire)
    if expected is None:
        assert reply is None, reply
    else:
        assert reply is not None
        assert reply[:2] == wire[:2] and reply[2] & 0x80  # same ID, QR set
        assert rcode_of(reply) == expected


def test_random_bytes_udp(server: NameServer) -> None:
    rng = random.Random(20240601)
    for size in (12, 13, 17, 30, 64, 300, 512, 1400):
        for _ in range(4):
            wire = rng.randbytes(size)
            reply = udp_exchange(server, wire)
            if reply is not None:  # nothing, or a FORMERR/NOTIMP/... about the same ID
                assert reply[:2] == wire[:2] and reply[2] & 0x80
                assert not wire[2] & 0x80, "a response was answered"
    assert "Traceback" not in server.stderr_text()


def test_unknown_opcode_notimp(server: NameServer) -> None:
    reply = udp_exchange(server, make_wire(0x2001, flags=4 << 11))  # NOTIFY
    assert reply is not None and rcode_of(reply) == dns.rcode.NOTIMP
    assert (reply[2] >> 3) & 0xF == 4  # opcode echoed


def _tcp_exchange(sock: socket.socket, *wires: bytes) -> list[bytes]:
    sock.sendall(b"".join(len(w).to_bytes(2, "big") + w for w in wires))
    replies = []
    for _ in wires:
        length = int.from_bytes(_recv_exactly(sock, 2), "big")
        replies.append(_recv_exactly(sock, length))
    return replies


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


@pytest.mark.parametrize("addr", ADDRS)
def test_tcp_pipelining_raw(server: NameServer, addr: str) -> None:
    queries = [
        ("www.nic.coop", "A", dns.rcode.NOERROR, 1),
        ("alias.coop", "A", dns.rcode.NOERROR, 3),
        ("nowhere.coop", "A", dns.rcode.NXDOMAIN, 0),
        ("bigtxt.coop", "TXT", dns.rcode.NOERROR, 20),
        ("www.example.com", "A", dns.rcode.REFUSED, 0),
        ("coop", "AXFR", dns.rcode.REFUSED, 0),  # no transfers configured
    ]
    wires = [
        make_wire(0x3000 + i, name, dns.rdatatype.from_text(t))
        for i, (name, t, _, _) in enumerate(queries)
    ]
    with socket.create_connection((addr, server.port), timeout=TIMEOUT) as sock:
        replies = _tcp_exchange(sock, *wires)  # all sent in one segment, before any reply
        # The connection stays usable after the batch, for a malformed query too.
        formerr, after = _tcp_exchange(sock, make_wire(0x3100, qdcount=0)[:12], wires[0])
    for (name, _, rcode, count), wire, reply in zip(queries, wires, replies, strict=True):
        msg = dns.message.from_wire(reply)
        assert msg.id == int.from_bytes(wire[:2], "big"), name  # in order
        assert msg.rcode() == rcode, name
        assert sum(len(s) for s in msg.answer) == count, name
    assert rcode_of(formerr) == dns.rcode.FORMERR
    assert dns.message.from_wire(after).answer


def test_server_still_running(server: NameServer) -> None:
    assert server.proc.poll() is None
    assert rrs(query(server, "www.nic.coop").answer) == ["www.nic.coop. 3600 IN A 192.0.2.80"]
    assert "Traceback" not in server.stderr_text()


# =========================================================================== check and serve


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nameserver", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO,
    )


HEAD = """\
$ORIGIN coop.
$TTL 3600
@        IN SOA ns1.nic.coop. hostmaster.nic.coop. 1 7200 1800 1209600 900
         IN NS  ns1.nic.coop.
ns1.nic  IN A   192.0.2.1
"""
BROKEN = {
    "syntax": (
        HEAD + "www      IN A   999.1.2.3\nbogus    IN NOTATYPE x\nok       IN A 192.0.2.2\n",
        [(6, "bad A data '999.1.2.3'"), (7, "type is unknown")],
    ),
    "cname-beside-a": (
        HEAD + "x        IN A   192.0.2.9\nx        IN CNAME www.nic.coop.\n",
        [(7, "CNAME at x.coop. beside other data (A)")],
    ),
    "missing-soa": (
        "$ORIGIN coop.\n$TTL 3600\n@ IN NS ns1.nic.coop.\nns1.nic IN A 192.0.2.1\n",
        [(None, "no SOA record at the zone apex coop.")],
    ),
}


def test_check_good_zone() -> None:
    for extra in ([], ["--origin", "coop."]):
        done = run_cli("check", str(ZONE), *extra)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{ZONE}: zone coop. OK: serial {SERIAL}, {RECORDS} records, 0 warning(s)" in (
            done.stdout
        )


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_broken_zone(case: str, tmp_path: Path) -> None:
    text, expected = BROKEN[case]
    path = tmp_path / "coop.zone"
    path.write_text(text, encoding="utf-8")
    done = run_cli("check", str(path))
    assert done.returncode == 1, done.stdout
    lines = done.stdout.splitlines()
    assert lines[-1] == f"{path}: zone coop. refused: {len(expected)} error(s)"
    errors = lines[:-1]
    assert len(errors) == len(expected), errors
    for line, (lineno, reason) in zip(errors, expected, strict=True):
        prefix = f"{path}:{lineno}: " if lineno is not None else f"{path}: "
        assert line.startswith(prefix) and reason in line, line


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_serve_broken_zone_exits(case: str, tmp_path: Path) -> None:
    text, expected = BROKEN[case]
    path = tmp_path / "coop.zone"
    path.write_text(text, encoding="utf-8")
    done = run_cli("serve", "--zone", f"coop.={path}", "--listen", f"127.0.0.1@{free_port()}")
    assert done.returncode != 0
    for lineno, reason in expected:
        where = f"{path}:{lineno}" if lineno is not None else str(path)
        assert f"zone coop. refused: {where}: " in done.stderr and reason in done.stderr
    assert "not starting" in done.stderr and "ready" not in done.stderr


def test_serve_missing_zone_file_exits(tmp_path: Path) -> None:
    missing = tmp_path / "nope.zone"
    done = run_cli("serve", "--zone", f"coop.={missing}", "--listen", f"127.0.0.1@{free_port()}")
    assert done.returncode != 0
    assert str(missing) in done.stderr and "ready" not in done.stderr


# =========================================================================== wildcard listeners


@NEEDS["dig"]
def test_wildcard_listener_answers_from_the_address_asked(
    nameserver_factory: Callable[..., NameServer],
) -> None:
    """Listening on 0.0.0.0, a query sent to 127.0.0.2 is answered from 127.0.0.2: dig
    discards an answer from another address ("reply from unexpected source")."""
    def config(port: int) -> str:
        return f'listen: ["0.0.0.0@{port}"]\nzones: [{{origin: coop., file: {ZONE}}}]\n'

    srv = nameserver_factory(config=config)
    for addr in ("127.0.0.2", "127.0.0.1"):
        r = dig("dig", srv, "+dnssec", "coop.", "SOA", addr=addr)
        assert r.status == "NOERROR" and r.records("ANSWER")[0].startswith("coop. 3600 IN SOA")


_NETNS_SETUP = "ip link set lo up && ip -6 addr add fd00:53::2/128 dev lo nodad"


def _can_make_netns() -> bool:
    """Whether a network namespace with a second IPv6 address on lo can be made here."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    done = subprocess.run(
        ["unshare", "--net", "--map-root-user", "sh", "-c", _NETNS_SETUP],
        capture_output=True, timeout=RUN_TIMEOUT,
    )
    return done.returncode == 0


@NEEDS["dig"]
@pytest.mark.skipif(not _can_make_netns(), reason="cannot make a network namespace")
def test_wildcard_ipv6_listener_answers_from_the_address_asked(tmp_path: Path) -> None:
    """The same for IPv6: in a network namespace of our own (so the host's addresses
    are left alone) with a second address on lo, a server on :: and 0.0.0.0 answers
    dig at fd00:53::2 (not ::1, the address routing would pick) and at 127.0.0.9."""
    script = tmp_path / "inside.sh"
    script.write_text(
        "set -e\n"
        f"{_NETNS_SETUP}\n"
        f"{sys.executable} -m nameserver serve --listen ::@5353 --listen 0.0.0.0@5353"
        f" --zone coop.={ZONE} --control {tmp_path}/c.sock 2>{tmp_path}/err &\n"
        "pid=$!\n"
        "trap 'kill $pid; wait $pid' EXIT\n"
        "for i in $(seq 100); do\n"
        "  dig @127.0.0.1 -p 5353 +short +tries=1 +time=1 coop. SOA | grep -q hostmaster && break\n"
        "  sleep 0.1\n"
        "done\n"
        "for addr in fd00:53::2 127.0.0.9; do\n"
        "  dig @$addr -p 5353 +norec +tries=1 +time=2 coop. SOA\n"
        "done\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        ["unshare", "--net", "--map-root-user", "bash", str(script)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    replies = parse_replies(done.stdout)
    assert done.returncode == 0 and len(replies) == 2, done.stdout + done.stderr
    assert all(r.status == "NOERROR" and r.records("ANSWER") for r in replies), done.stdout
