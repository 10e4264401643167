"""The engine, fed bytes with no socket: every rule of the authoritative core."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from nameserver.config import Identity
from nameserver.engine.core import Engine
from nameserver.engine.render import CUT
from nameserver.engine.template import make_template
from nameserver.zone.load import load_zone

DATA = Path(__file__).parent / "data"
ZONE = load_zone(DATA / "engine.zone", "coop.").zone


@pytest.fixture
def engine() -> Engine:
    return Engine([ZONE], identity=Identity(version="test-version", server_id="ns-test"))


def query(name: str, rdtype: str | int = "A", *, edns: int | None = 0, do: bool = False,
          payload: int = 1232, rdclass: str = "IN", options=None) -> dns.message.QueryMessage:
    if edns is None:
        q = dns.message.make_query(name, rdtype, rdclass, use_edns=False)
    else:
        q = dns.message.make_query(name, rdtype, rdclass, use_edns=edns, want_dnssec=do,
                                   payload=payload, options=options)
    q.flags &= ~dns.flags.RD
    return q


def ask(engine: Engine, name: str, rdtype: str | int = "A", *, tcp: bool = False,
        **kw) -> dns.message.Message:
    wire = engine.handle(query(name, rdtype, **kw).to_wire(), tcp)
    assert wire is not None
    return dns.message.from_wire(wire)


def rrs(section) -> set[str]:
    return {f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd}"
            for rrset in section for rd in rrset}


def types(section) -> list[tuple[str, str]]:
    return [(str(r.name), dns.rdatatype.to_text(r.rdtype)) for r in section]


# -- authoritative answers ----------------------------------------------------------


def test_authoritative_answer(engine: Engine) -> None:
    r = ask(engine, "www.nic.coop", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert r.flags & dns.flags.AA
    assert rrs(r.answer) == {"www.nic.coop. A 192.0.2.80"}
    assert not r.authority and not r.additional


def test_apex_ns_has_addresses_in_additional(engine: Engine) -> None:
    r = ask(engine, "coop", "NS")
    assert r.flags & dns.flags.AA
    assert len(r.answer[0]) == 3
    assert rrs(r.additional) == {
        "ns1.nic.coop. A 192.0.2.53", "ns1.nic.coop. AAAA 2001:db8::53",
        "ns2.nic.coop. A 198.51.100.53",
    }


def test_mx_and_srv_additional(engine: Engine) -> None:
    assert rrs(ask(engine, "coop", "MX").additional) == {"mail.nic.coop. A 192.0.2.25"}
    assert rrs(ask(engine, "_sip._tcp.nic.coop", "SRV").additional) == {
        "sip.nic.coop. A 192.0.2.60"}


def test_txt_escapes_and_unknown_type(engine: Engine) -> None:
    assert rrs(ask(engine, "www.nic.coop", "TXT").answer) == {
        'www.nic.coop. TXT "hello \\"world\\"" "two"'}
    r = ask(engine, "unknown.nic.coop", 65534)
    assert r.answer[0][0].data == b"\x0a\x00\x00\x01"


def test_question_case_is_echoed_and_matching_ignores_case(engine: Engine) -> None:
    wire = engine.handle(query("WwW.NiC.cOoP", "A").to_wire(), False)
    assert b"\x03WwW\x03NiC\x04cOoP\x00" in wire
    r = dns.message.from_wire(wire)
    assert r.answer[0].name == dns.name.from_text("www.nic.coop")  # names compare caselessly
    assert rrs(r.answer) == {"WwW.NiC.cOoP. A 192.0.2.80"}  # compressed to the question


# -- CNAME --------------------------------------------------------------------------


def test_cname_chain_followed(engine: Engine) -> None:
    r = ask(engine, "a.chain.nic.coop", "A")
    assert types(r.answer) == [("a.chain.nic.coop.", "CNAME"), ("b.chain.nic.coop.", "CNAME"),
                               ("c.chain.nic.coop.", "A")]
    assert r.flags & dns.flags.AA


def test_cname_query_for_cname_type_is_not_chased(engine: Engine) -> None:
    assert types(ask(engine, "alias.nic.coop", "CNAME").answer) == [("alias.nic.coop.", "CNAME")]


def test_cname_out_of_zone_stops(engine: Engine) -> None:
    r = ask(engine, "out.nic.coop", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert rrs(r.answer) == {"out.nic.coop. CNAME www.example.net."}
    assert not r.authority


def test_cname_into_delegation_gives_referral(engine: Engine) -> None:
    r = ask(engine, "todeleg.nic.coop", "A")
    assert types(r.answer) == [("todeleg.nic.coop.", "CNAME")]
    assert types(r.authority) == [("example.coop.", "NS")]
    assert ("ns1.example.coop.", "A") in types(r.additional)
    assert r.flags & dns.flags.AA  # the CNAME itself is authoritative data


def test_cname_to_nonexistent_is_nxdomain(engine: Engine) -> None:
    r = ask(engine, "tonx.nic.coop", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: the rcode of the last name
    assert types(r.answer) == [("tonx.nic.coop.", "CNAME")]
    assert types(r.authority) == [("coop.", "SOA")]


def test_cname_loop_stops(engine: Engine) -> None:
    r = ask(engine, "loop1.nic.coop", "A")
    assert types(r.answer) == [("loop1.nic.coop.", "CNAME"), ("loop2.nic.coop.", "CNAME")]


# -- wildcards (RFC 4592) -------------------------------------------------------------


def test_wildcard_synthesis(engine: Engine) -> None:
    for name in ("host.wild.nic.coop", "a.b.wild.nic.coop"):
        r = ask(engine, name, "A")
        assert r.flags & dns.flags.AA
        assert rrs(r.answer) == {f"{name}. A 192.0.2.7"}


def test_wildcard_nodata(engine: Engine) -> None:
    r = ask(engine, "host.wild.nic.coop", "MX")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert types(r.authority) == [("coop.", "SOA")]


def test_wildcard_does_not_apply_below_existing_name(engine: Engine) -> None:
    assert rrs(ask(engine, "exists.wild.nic.coop", "A").answer) == {
        "exists.wild.nic.coop. A 192.0.2.8"}
    assert ask(engine, "exists.wild.nic.coop", "TXT").answer == []
    assert ask(engine, "x.exists.wild.nic.coop", "A").rcode() == dns.rcode.NXDOMAIN


def test_wildcard_owner_asked_literally(engine: Engine) -> None:
    assert rrs(ask(engine, "*.wild.nic.coop", "A").answer) == {"*.wild.nic.coop. A 192.0.2.7"}


def test_wildcard_cname_and_cname_to_wildcard(engine: Engine) -> None:
    r = ask(engine, "x.cname.nic.coop", "A")
    assert types(r.answer) == [("x.cname.nic.coop.", "CNAME"), ("www.nic.coop.", "A")]
    r = ask(engine, "towild.nic.coop", "A")
    assert rrs(r.answer) == {"towild.nic.coop. CNAME host.wild.nic.coop.",
                             "host.wild.nic.coop. A 192.0.2.7"}


# -- DNAME (RFC 6672) ---------------------------------------------------------------


def test_dname_synthesis(engine: Engine) -> None:
    r = ask(engine, "h.dn.nic.coop", "A")
    assert rrs(r.answer) == {"dn.nic.coop. DNAME target.nic.coop.",
                             "h.dn.nic.coop. CNAME h.target.nic.coop.",
                             "h.target.nic.coop. A 192.0.2.9"}
    r = ask(engine, "x.dn.nic.coop", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert types(r.answer) == [("dn.nic.coop.", "DNAME"), ("x.dn.nic.coop.", "CNAME")]


def test_dname_owner_itself_is_ordinary(engine: Engine) -> None:
    assert types(ask(engine, "dn.nic.coop", "DNAME").answer) == [("dn.nic.coop.", "DNAME")]
    r = ask(engine, "dn.nic.coop", "A")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


def test_dname_out_of_zone_and_yxdomain(engine: Engine) -> None:
    r = ask(engine, "a.dnout.nic.coop", "A")
    assert rrs(r.answer) == {"dnout.nic.coop. DNAME example.net.",
                             "a.dnout.nic.coop. CNAME a.example.net."}
    r = ask(engine, "x" * 63 + "." + "y" * 20 + ".yx.nic.coop", "A")
    assert r.rcode() == dns.rcode.YXDOMAIN  # RFC 6672 §2.2: the result would exceed 255
    assert types(r.answer) == [("yx.nic.coop.", "DNAME")]


# -- empty non-terminals, NXDOMAIN, NODATA (RFC 2308) -----------------------------------


def test_empty_non_terminal_is_nodata(engine: Engine) -> None:
    r = ask(engine, "ent.nic.coop", "A")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert types(r.authority) == [("coop.", "SOA")]


def test_nxdomain_has_soa_with_negative_ttl(engine: Engine) -> None:
    r = ask(engine, "no-such-name.coop", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.flags & dns.flags.AA
    assert types(r.authority) == [("coop.", "SOA")]
    assert r.authority[0].ttl == 900  # min(SOA TTL 3600, MINIMUM 900)


def test_nodata(engine: Engine) -> None:
    r = ask(engine, "www.nic.coop", "MX")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert r.authority[0].ttl == 900


# -- delegations ----------------------------------------------------------------------


def test_referral(engine: Engine) -> None:
    r = ask(engine, "www.example.coop", "A")
    assert r.rcode() == dns.rcode.NOERROR
    assert not r.flags & dns.flags.AA
    assert not r.answer
    assert types(r.authority) == [("example.coop.", "NS")]
    assert rrs(r.additional) == {
        "ns1.example.coop. A 192.0.2.100", "ns1.example.coop. AAAA 2001:db8::100",
        "ns2.example.coop. A 192.0.2.101"}


def test_referral_at_cut_and_for_ns(engine: Engine) -> None:
    for name, rdtype in (("example.coop", "A"), ("example.coop", "NS"), ("x.y.example.coop", "DS")):
        r = ask(engine, name, rdtype)
        assert not r.flags & dns.flags.AA and types(r.authority) == [("example.coop.", "NS")]


def test_occluded_data_is_never_served(engine: Engine) -> None:
    r = ask(engine, "occluded.example.coop", "TXT")
    assert not r.answer and types(r.authority) == [("example.coop.", "NS")]


def test_sibling_glue(engine: Engine) -> None:
    r = ask(engine, "sibling.coop", "A")
    assert rrs(r.additional) == {"ns1.example.coop. A 192.0.2.100",
                                 "ns1.example.coop. AAAA 2001:db8::100"}


def test_ds_answered_by_parent(engine: Engine) -> None:
    r = ask(engine, "signed.coop", "DS")
    assert r.flags & dns.flags.AA
    assert types(r.answer) == [("signed.coop.", "DS")]
    r = ask(engine, "example.coop", "DS")
    assert r.flags & dns.flags.AA and not r.answer
    assert types(r.authority) == [("coop.", "SOA")]


def test_unsigned_zone_referral_has_no_ds_even_with_do(engine: Engine) -> None:
    # As Knot: the DS of an unsigned zone proves nothing; signed zones: test_dnssec_serving.
    assert types(ask(engine, "www.signed.coop").authority) == [("signed.coop.", "NS")]
    assert types(ask(engine, "www.signed.coop", do=True).authority) == [("signed.coop.", "NS")]


def test_idn_and_63_octet_labels(engine: Engine) -> None:
    for name in ("xn--cooprative-b7a.coop", "a." + "abcdefghijklmnopqrstuvwxyz0123456789"
                 "abcdefghijklmnopqrstuvwxyz0.coop"):
        r = ask(engine, name, "A")
        assert r.authority and r.authority[0].rdtype == dns.rdatatype.NS


# -- other classes, meta types ----------------------------------------------------------


def test_out_of_zone_refused(engine: Engine) -> None:
    for name in ("example.net", "."):
        r = ask(engine, name, "A")
        assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.AA and not r.answer


def test_any_is_minimal(engine: Engine) -> None:
    r = ask(engine, "coop", "ANY")
    assert types(r.answer) == [("coop.", "NS")]  # the lowest type present (RFC 8482)
    assert types(ask(engine, "alias.nic.coop", "ANY").answer) == [("alias.nic.coop.", "CNAME")]


def test_transfers_refused(engine: Engine) -> None:
    assert ask(engine, "coop", "AXFR", tcp=True).rcode() == dns.rcode.REFUSED
    assert ask(engine, "coop", "IXFR").rcode() == dns.rcode.REFUSED


def test_chaos_identity(engine: Engine) -> None:
    r = ask(engine, "version.bind", "TXT", rdclass="CH")
    assert not r.flags & dns.flags.AA  # as Knot and NSD
    assert r.answer[0].rdclass == dns.rdataclass.CH
    assert r.answer[0][0].strings == (b"test-version",)
    assert ask(engine, "id.server", "TXT", rdclass="CH").answer[0][0].strings == (b"ns-test",)
    assert ask(engine, "hostname.bind", "TXT", rdclass="CH").rcode() == dns.rcode.REFUSED
    assert ask(engine, "version.bind", "A", rdclass="CH").rcode() == dns.rcode.REFUSED
    assert ask(Engine([ZONE]), "version.bind", "TXT", rdclass="CH").rcode() == dns.rcode.REFUSED


def test_other_classes_refused(engine: Engine) -> None:
    assert ask(engine, "coop", "SOA", rdclass="HS").rcode() == dns.rcode.REFUSED
    assert ask(engine, "coop", "SOA", rdclass="ANY").rcode() == dns.rcode.REFUSED


# -- message handling -----------------------------------------------------------------


def header(qid=0x1234, flags=0, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = b"\x03www\x03nic\x04coop\x00\x00\x01\x00\x01"


def rcode_of(wire: bytes | None) -> int:
    assert wire is not None
    return dns.message.from_wire(wire).rcode()


def test_notimp_for_other_opcodes(engine: Engine) -> None:
    for opcode in (dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.STATUS, 3):
        wire = engine.handle(header(flags=opcode << 11) + QUESTION, False)
        assert wire is not None and wire[3] & 0xF == dns.rcode.NOTIMP
        assert wire[:2] == b"\x12\x34" and wire[2] & 0x80


def test_formerr_for_qdcount_not_one(engine: Engine) -> None:
    assert rcode_of(engine.handle(header(qd=0), False)) == dns.rcode.FORMERR
    assert rcode_of(engine.handle(header(qd=2) + QUESTION + QUESTION, False)) == dns.rcode.FORMERR


def test_responses_and_runts_are_dropped(engine: Engine) -> None:
    assert engine.handle(header(flags=0x8000) + QUESTION, False) is None
    assert engine.handle(b"\x12\x34\x00", False) is None
    assert engine.handle(b"", False) is None


@pytest.mark.parametrize("body", [
    b"",  # header only
    b"\x03www\x03nic",  # name runs off the end
    b"\xc0\x0c\x00\x01\x00\x01",  # compression pointer in the question
    b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # extended label type
    b"\x03www\x00\x00",  # truncated QTYPE/QCLASS
    (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",  # name over 255 octets
    QUESTION + b"garbage",  # trailing bytes
])
def test_broken_questions_get_formerr(engine: Engine, body: bytes) -> None:
    wire = engine.handle(header() + body, False)
    assert rcode_of(wire) == dns.rcode.FORMERR
    assert wire[:2] == b"\x12\x34"


def test_every_truncation_of_a_query_is_handled(engine: Engine) -> None:
    full = query("www.nic.coop", "A", do=True).to_wire()
    for n in range(len(full)):
        wire = engine.handle(full[:n], False)
        assert wire is None or rcode_of(wire) == dns.rcode.FORMERR


# -- EDNS (RFC 6891) -------------------------------------------------------------------


def test_edns_opt_and_do(engine: Engine) -> None:
    r = ask(engine, "www.nic.coop", payload=4096)
    assert r.edns == 0 and r.payload == 1232 and not r.ednsflags & dns.flags.DO
    r = ask(engine, "www.nic.coop", do=True)
    assert r.ednsflags & dns.flags.DO
    r = ask(engine, "www.nic.coop", edns=None)
    assert r.edns == -1


def test_badvers(engine: Engine) -> None:
    r = ask(engine, "www.nic.coop", edns=1)
    assert r.rcode() == dns.rcode.BADVERS and r.edns == 0 and not r.answer


def test_unknown_option_ignored_and_nsid(engine: Engine) -> None:
    opt = dns.edns.GenericOption(65001, b"hello")
    assert rrs(ask(engine, "www.nic.coop", options=[opt]).answer) == {
        "www.nic.coop. A 192.0.2.80"}
    nsid_engine = Engine([ZONE], identity=Identity(nsid="ns1.test"))
    r = ask(nsid_engine, "www.nic.coop", options=[dns.edns.GenericOption(dns.edns.NSID, b"")])
    assert [o.nsid for o in r.options if o.otype == dns.edns.NSID] == [b"ns1.test"]
    assert not ask(nsid_engine, "www.nic.coop").options


def test_two_opt_records_formerr(engine: Engine) -> None:
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    wire = engine.handle(header(ar=2) + QUESTION + opt + opt, False)
    assert rcode_of(wire) == dns.rcode.FORMERR


# -- truncation -------------------------------------------------------------------------


def test_large_answer_truncated_without_edns(engine: Engine) -> None:
    r = ask(engine, "big.nic.coop", "TXT", edns=None)
    assert r.flags & dns.flags.TC and not r.answer
    assert len(ask(engine, "big.nic.coop", "TXT").answer[0]) == 12  # fits 1232
    assert len(ask(engine, "big.nic.coop", "TXT", edns=None, tcp=True).answer[0]) == 12


def test_small_client_payload_respected(engine: Engine) -> None:
    r = ask(engine, "big.nic.coop", "TXT", payload=600)
    assert r.flags & dns.flags.TC


def test_referral_truncated_when_required_glue_does_not_fit(engine: Engine) -> None:
    r = ask(engine, "www.many.coop", edns=None)
    assert r.flags & dns.flags.TC  # in-domain glue is required (RFC 9471)
    wire = engine.handle(query("www.many.coop", edns=None).to_wire(), False)
    assert len(wire) <= 512
    r = ask(engine, "www.many.coop")
    assert not r.flags & dns.flags.TC and len(r.additional) == 26


def test_responses_never_exceed_the_limit(engine: Engine) -> None:
    for name, rdtype in (("big.nic.coop", "TXT"), ("www.many.coop", "A"), ("many.coop", "NS")):
        for payload in (512, 700, 1232, 4096):
            wire = engine.handle(query(name, rdtype, payload=payload).to_wire(), False)
            assert len(wire) <= min(payload, 1232)


# -- the fast path equals the general path ---------------------------------------------


def corpus() -> list[bytes]:
    names = ["coop", "nic.coop", "www.nic.coop", "WWW.Nic.Coop", "alias.nic.coop",
             "a.chain.nic.coop", "todeleg.nic.coop", "tonx.nic.coop", "loop1.nic.coop",
             "host.wild.nic.coop", "x.cname.nic.coop", "h.dn.nic.coop", "x.dn.nic.coop",
             "ent.nic.coop", "no-such.coop", "www.example.coop", "example.coop",
             "signed.coop", "www.signed.coop", "sibling.coop", "big.nic.coop",
             "www.many.coop", "example.net", "version.bind"]
    out = []
    for name in names:
        for rdtype in ("A", "AAAA", "NS", "DS", "TXT", "MX", "ANY", "SOA", "CNAME"):
            for kw in ({"edns": None}, {}, {"do": True}, {"payload": 512}, {"payload": 4096}):
                rdclass = "CH" if name == "version.bind" else "IN"
                out.append(query(name, rdtype, rdclass=rdclass, **kw).to_wire())
    return out


@pytest.mark.parametrize("tcp", [False, True])
def test_fast_path_equals_general_path(tcp: bool) -> None:
    engine = Engine([ZONE], identity=Identity(version="v"))
    queries = corpus()
    for wire in queries:
        assert engine.handle(wire, tcp) == engine.respond(wire, tcp)
    assert len(engine.cache) > 100
    general = engine.respond
    calls = []
    engine.respond = lambda w, t=False: calls.append(w) or general(w, t)  # type: ignore[method-assign]
    for wire in queries:  # again: now answered from the cache
        patched = b"\xab\xcd" + wire[2:]
        assert engine.handle(patched, tcp) == general(patched, tcp)
    calls.clear()
    for wire in queries:  # a third time: repeated bytes are answered before parsing
        patched = b"\x12\x34" + wire[2:]
        assert engine.handle(patched, tcp) == general(patched, tcp)
    assert len(engine.raw_tcp if tcp else engine.raw_udp) > len(queries) // 2
    # Only answers never cached take the general path again: REFUSED, and NXDOMAIN at
    # the end of a CNAME or DNAME chain (tonx, x.dn: 4 of the 24 names).
    assert len(calls) < len(queries) // 5
    assert all(general(w, tcp)[3] & 0x0F in (3, 5) for w in calls)


@pytest.mark.parametrize("limit", [10, 64])
def test_cache_is_bounded(limit: int) -> None:
    """Full caches forget their oldest entries (a sixteenth at a time) and stay within
    the limit; answers stay those of the general path."""
    engine = Engine([ZONE], cache_entries=limit)
    reference = Engine([ZONE])
    for _ in range(3):  # the second and third passes hit the raw cache
        for wire in corpus():
            assert engine.handle(wire, False) == reference.respond(wire, False)
    assert limit - max(1, limit // 16) <= len(engine.cache) <= limit
    assert limit - max(1, limit // 16) <= len(engine.raw_udp) <= limit


def test_random_names_share_one_entry_per_shape() -> None:
    """A flood of random names cannot fill the cache: NXDOMAIN answers of an unsigned
    zone depend only on the length of the name, referrals only on the cut and length."""
    engine = Engine([ZONE])
    for i in range(100):
        engine.handle(query(f"random{i:03d}.coop").to_wire(), False)
        engine.handle(query(f"host{i:03d}.example.coop").to_wire(), False)
    assert len(engine.shapes) == 4  # per shape: its answer at this length, a template mark
    # Each name below the cut served by shape also gets an exact entry, sharing the
    # shape's bytes (all but the first, answered by the general path).
    shared = {id(v) for v in engine.shapes.values() if isinstance(v, tuple)}
    assert len(shared) == 2 and len(engine.cache) == 99
    assert {id(v) for v in engine.cache.values()} < shared


def test_template_refuses_pointers_before_the_anchor(engine: Engine) -> None:
    """A template moves every pointer by the change in length: one aiming into the part
    of the question before the anchor would be wrong, so no template is made."""
    wire = query("host.example.coop").to_wire()
    pointers: list[int] = []
    response = engine._respond(wire, False, pointers)
    assert response is not None and pointers
    assert all(response[i] & 0xC0 == 0xC0 for i in pointers)
    qend = len(wire) - 11  # the question ends before the OPT record
    anchor_at = 12 + len(b"\x04host")  # example.coop
    template = make_template(response, qend, anchor_at, pointers)
    assert template is not None and template.rest(qend - 16) == response[qend:]
    assert make_template(response, qend, anchor_at + 1, pointers) is None


def test_no_template_from_an_answer_cut_to_fit(engine: Engine) -> None:
    """A referral whose glue was cut (here, by the 512 bytes of a query without EDNS)
    reports CUT instead of its pointers, and makes no template: another length could
    fit more."""
    wire = query("www.many.coop", edns=None).to_wire()
    pointers: list[int] = []
    response = engine._respond(wire, False, pointers)
    assert response is not None and response[2] & 0x02  # TC
    assert pointers == [CUT]
    anchor_at = 12 + len(b"\x03www")
    assert make_template(response, len(wire), anchor_at, pointers) is None
    whole: list[int] = []
    response = engine._respond(wire, True, whole)  # over TCP: all of it
    assert whole and CUT not in whole
    assert make_template(response, len(wire), anchor_at, whole) is not None
    cut_early: list[int] = []  # the answer section itself does not fit: TC, no records
    engine._respond(query("big.nic.coop", "TXT", edns=None).to_wire(), False, cut_early)
    assert cut_early == [CUT]


def test_shapes_serve_the_general_answer() -> None:
    """Names of one shape but different spelling get byte-identical answers either way."""
    engine = Engine([ZONE])
    names = [f"{p}.coop" for p in ("aaaa", "ns1x", "zz-9", "a.bb", "ns1.example")]
    names += [f"{p}.example.coop" for p in ("www", "ns1", "ns2", "a.b", "NS1", "mail")]
    names += [f"{p}.many.coop" for p in ("www", "ns01", "ns02", "x")]
    for name in names:
        for kw in ({"edns": None}, {}, {"do": True}, {"payload": 512}):
            for rdtype in ("A", "NS", "DS", "MX"):
                wire = query(name, rdtype, **kw).to_wire()
                assert engine.handle(wire, False) == engine.respond(wire, False), name


def test_formerr_keeps_the_opt_of_the_query(engine: Engine) -> None:
    """RFC 6891 §6.1.1: a request with a well-formed OPT gets one back, even on FORMERR."""
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"  # DO set
    r = dns.message.from_wire(engine.handle(header(qd=0, ar=1) + opt, False))
    assert r.rcode() == dns.rcode.FORMERR and r.edns == 0 and r.ednsflags & dns.flags.DO
    r = dns.message.from_wire(engine.handle(header(qd=2, ar=1) + QUESTION * 2 + opt, False))
    assert r.rcode() == dns.rcode.FORMERR and r.edns == 0
    bad_option = opt[:-2] + b"\x00\x03" + b"\x00\x0a\x00"  # truncated option: no OPT back
    r = dns.message.from_wire(engine.handle(header(qd=0, ar=1) + bad_option, False))
    assert r.rcode() == dns.rcode.FORMERR and r.edns == -1


def test_cd_bit_is_not_copied(engine: Engine) -> None:
    q = query("www.nic.coop")
    q.flags |= dns.flags.CD
    r = dns.message.from_wire(engine.handle(q.to_wire(), False))
    assert not r.flags & dns.flags.CD  # RFC 4035 §3.1.6, as Knot and NSD


def test_dname_answers_cname_query_without_chasing(engine: Engine) -> None:
    r = ask(engine, "x.dn.nic.coop", "CNAME")
    assert r.rcode() == dns.rcode.NOERROR and not r.authority
    assert types(r.answer) == [("dn.nic.coop.", "DNAME"), ("x.dn.nic.coop.", "CNAME")]


def test_counters_stay_bounded_whatever_types_are_asked(engine: Engine) -> None:
    for qtype in range(1, 3000):
        for qclass in ("IN", "CH", "HS"):
            engine.handle(query("www.nic.coop", qtype, rdclass=qclass).to_wire(), False)
    assert len(engine.counts) < 40 * 16
    assert sum(engine.counts.values()) == 3 * 2999


def test_names_longer_than_255_octets_get_formerr_every_time() -> None:
    """A QNAME over 255 octets (RFC 1035 §3.1) is malformed: FORMERR, the second time
    too (the fast path must not keep that answer under an NXDOMAIN shape)."""
    engine = Engine([ZONE])
    for tail in (b"a", b"bb"):
        qname = b"".join(bytes([63]) + bytes([ord("x")]) * 63 for _ in range(4))
        qname += bytes([len(tail)]) + tail + b"\x04coop\x00"  # 4 * 64 + 2 or 3 + 6 > 255
        wire = struct.pack("!HHHHHH", 0x1234, 0, 1, 0, 0, 1) + qname + b"\x00\x01\x00\x01"
        wire += b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"  # OPT, DO
        for _ in range(3):
            response = engine.handle(wire, False)
            assert response is not None
            assert response[3] & 0x0F == dns.rcode.FORMERR
            assert dns.message.from_wire(response).rcode() == dns.rcode.FORMERR


def test_every_opt_form_gets_its_own_limit() -> None:
    """The fast path remembers OPT records by their bytes (a bounded table): each
    payload size, DO bit and option set is still answered as the general path would,
    before and after the table is full, over UDP and TCP."""
    engine = Engine([ZONE], identity=Identity(nsid="ns1"))
    reference = Engine([ZONE], identity=Identity(nsid="ns1"))
    wires = []
    for payload in range(400, 1700, 1):  # more forms than the table keeps
        for do in (False, True):
            wires.append(query("big.nic.coop", "TXT", payload=payload, do=do).to_wire())
    nsid = [dns.edns.GenericOption(dns.edns.NSID, b"")]
    wires.append(query("big.nic.coop", "TXT", payload=4096, options=nsid).to_wire())
    badvers = query("big.nic.coop", "TXT", payload=4096)
    badvers.use_edns(1, payload=4096)
    wires.append(badvers.to_wire())
    for _ in range(2):
        for tcp in (False, True):
            for wire in wires:
                assert engine.handle(wire, tcp) == reference.respond(wire, tcp)
    assert len(engine._opt_forms) < len(wires) // 2


def test_nested_and_root_zones_answer_from_the_closest(tmp_path: Path) -> None:
    """With a child zone inside a delegation of coop., and the root zone, each name is
    answered from the zone with the longest origin that contains it, on both paths."""
    soa = "@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 3600\n@ 3600 IN NS ns1\n"
    (tmp_path / "example.zone").write_text(
        soa + "ns1 A 192.0.2.1\nwww A 192.0.2.2\nsub NS ns.sub\nns.sub A 192.0.2.3\n"
    )
    (tmp_path / "root.zone").write_text(soa + "ns1 A 192.0.2.9\ncoop NS a.coop-servers.example.\n")
    zones = [
        ZONE,
        load_zone(tmp_path / "example.zone", "example.coop.").zone,
        load_zone(tmp_path / "root.zone", ".").zone,
    ]
    engine, reference = Engine(zones), Engine(zones)
    expect = {  # name: (RCODE, AA, the owner of the authority section's first record)
        "www.example.coop": (dns.rcode.NOERROR, True, None),
        "abc.example.coop": (dns.rcode.NXDOMAIN, True, "example.coop."),  # www's length
        "nope.example.coop": (dns.rcode.NXDOMAIN, True, "example.coop."),
        "a.b.sub.example.coop": (dns.rcode.NOERROR, False, "sub.example.coop."),
        "www.signed.coop": (dns.rcode.NOERROR, False, "signed.coop."),
        "nope.coop": (dns.rcode.NXDOMAIN, True, "coop."),
        "nope.net": (dns.rcode.NXDOMAIN, True, "."),
        "x.y.z": (dns.rcode.NXDOMAIN, True, "."),
    }
    for _ in range(3):  # general path, then shapes and templates, then raw bytes
        for name, (rcode, aa, owner) in expect.items():
            for n in (name, name.replace("nope", "nopeee", 1)):
                wire = query(n, "A").to_wire()
                response = engine.handle(wire, False)
                assert response == reference.respond(wire, False)
                r = dns.message.from_wire(response)
                assert r.rcode() == rcode and bool(r.flags & dns.flags.AA) == aa, n
                if owner is not None:
                    assert str(r.authority[0].name) == owner, n


def _count_general(engine: Engine) -> list[bytes]:
    """Record every query that takes the general path from now on."""
    general = engine.respond
    calls: list[bytes] = []
    engine.respond = lambda w, t=False: calls.append(w) or general(w, t)  # type: ignore[method-assign]
    return calls


def test_a_cycle_longer_than_the_cache_still_hits() -> None:
    """Questions asked in the same order, more of them than the cache holds (a query
    file replayed, a refresh cycle): the forgotten run is taken at random, not the
    oldest, so most of the cycle is answered from the cache (first-in-first-out would
    forget each answer just before it is asked again: no hit at all)."""
    random.seed(1844)
    engine = Engine([ZONE], cache_entries=64)
    reference = Engine([ZONE])
    # 80 questions (NODATA answers), each its own entry of the question cache.
    cycle = [query(n, 1000 + t).to_wire() for n in ("coop", "www.nic.coop") for t in range(40)]
    for _ in range(3):
        for wire in cycle:
            assert engine.handle(wire, False) == reference.respond(wire, False)
    calls = _count_general(engine)
    for _ in range(5):
        for wire in cycle:
            assert engine.handle(wire, False) == reference.respond(wire, False)
    assert len(calls) < 0.8 * 5 * len(cycle)


def test_shapes_outlast_a_flood_of_questions() -> None:
    """Shapes and templates have a table of their own: questions with exact answers,
    however many, do not push out what answers every name of a shape."""
    engine = Engine([ZONE], cache_entries=32)
    for name in ("random1.coop", "random22.coop", "h1.example.coop", "h22.example.coop"):
        engine.handle(query(name).to_wire(), False)  # first sight, then a template
    for i in range(200):  # NODATA answers: each question an entry of the question cache
        engine.handle(query("www.nic.coop", 1000 + i).to_wire(), False)
    assert len(engine.cache) <= 32
    calls = _count_general(engine)
    for i in range(1, 40):
        for name in (f"{'r' * i}.coop", f"{'h' * i}.example.coop"):
            assert engine.handle(query(name).to_wire(), False) is not None
    assert calls == []


def test_a_flood_of_opt_forms_does_not_pin_the_table() -> None:
    """Made-up OPT forms (any payload size, spoofable) fill the table of known forms; a
    full table forgets a run, so a common form asked afterwards is remembered again."""
    random.seed(7)
    engine = Engine([ZONE])
    for payload in range(2048):
        engine.handle(query("www.nic.coop", payload=payload).to_wire(), False)
    common = query("www.nic.coop", "AAAA", payload=1232, do=True).to_wire()
    for _ in range(3):
        assert engine.handle(common, False) == engine.respond(common, False)
    assert common[-11:] in engine._opt_forms
