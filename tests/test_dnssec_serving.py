"""Signed answers, validated with dnspython: RRSIGs, and NSEC3/NSEC denial proofs.

The zones are signed by BIND's dnssec-signzone (a standard signer: the server
serves whatever signatures the zone file holds), in three flavours: NSEC3 with
opt-out (the TLD form), NSEC3 without opt-out, and NSEC.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from bindsign import FLAVOURS, sign_with_bind

from nameserver.engine.core import Engine
from nameserver.zone.load import load_zone

DATA = Path(__file__).parent / "data"
ORIGIN = dns.name.from_text("coop.")
@pytest.fixture(scope="module", params=list(FLAVOURS))
def signed(request, tmp_path_factory) -> tuple[str, Engine, dns.rrset.RRset]:
    tmp = tmp_path_factory.mktemp(request.param)
    path = sign_with_bind(tmp, DATA / "engine.zone", request.param)
    zone = load_zone(path, ORIGIN).zone
    engine = Engine([zone])
    r = ask(engine, "coop", "DNSKEY", do=True)
    dnskey = next(x for x in r.answer if x.rdtype == dns.rdatatype.DNSKEY)
    return request.param, engine, dnskey


def ask(engine: Engine, name: str, rdtype: str, do: bool = True) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, want_dnssec=do, use_edns=0, payload=4096)
    q.flags = 0
    wire = engine.handle(q.to_wire(), True)
    assert wire is not None
    return dns.message.from_wire(wire)


def validate_all(r: dns.message.Message, dnskey: dns.rrset.RRset) -> int:
    """Validate every signed RRset of the answer and authority sections; return the count."""
    keys = {ORIGIN: dnskey}
    count = 0
    for section in (r.answer, r.authority):
        sigs = {(s.name, s.covers): s for s in section if s.rdtype == dns.rdatatype.RRSIG}
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            sig = sigs.get((rrset.name, rrset.rdtype))
            if rrset.rdtype == dns.rdatatype.CNAME and sig is None:
                continue  # a CNAME synthesised from a DNAME is unsigned (RFC 6672 §5.3.1)
            if rrset.rdtype == dns.rdatatype.NS and rrset.name != ORIGIN and section is r.authority:
                assert sig is None  # a delegation's NS belongs to the child: never signed
                continue
            assert sig is not None, f"no RRSIG for {rrset.name} {rrset.rdtype!r}"
            dns.dnssec.validate(rrset, sig, keys)
            count += 1
    return count


def nsec3_hash(name: str | dns.name.Name) -> str:
    return dns.dnssec.nsec3_hash(name, salt=None, iterations=0, algorithm=1)


def nsec3_records(r: dns.message.Message) -> list[tuple[str, str, int]]:
    """(owner hash, next hash, flags) of every NSEC3 in the authority section."""
    return [
        (rrset.name.labels[0].decode().upper(), base64.b32hexencode(rrset[0].next).decode(),
         rrset[0].flags)
        for rrset in r.authority if rrset.rdtype == dns.rdatatype.NSEC3
    ]


def matches(records, name: str) -> bool:
    h = nsec3_hash(name)
    return any(owner == h for owner, _, _ in records)


def covers(records, name: str, opt_out: bool = False) -> bool:
    h = nsec3_hash(name)
    for owner, nxt, flags in records:
        inside = owner < h < nxt if owner < nxt else (h > owner or h < nxt)
        if inside and (not opt_out or flags & 1):
            return True
    return False


def nsec_covers(r: dns.message.Message, name: str) -> bool:
    n = dns.name.from_text(name)
    for rrset in r.authority:
        if rrset.rdtype == dns.rdatatype.NSEC:
            owner, nxt = rrset.name, rrset[0].next
            inside = owner < n < nxt if owner < nxt else (n > owner or n < nxt)
            if inside:
                return True
    return False


def nsec_at(r: dns.message.Message, name: str) -> dns.rdata.Rdata | None:
    n = dns.name.from_text(name)
    for rrset in r.authority:
        if rrset.rdtype == dns.rdatatype.NSEC and rrset.name == n:
            return rrset[0]
    return None


# -- every answer validates --------------------------------------------------------------

QUERIES = [
    ("www.nic.coop", "A"), ("coop", "SOA"), ("coop", "NS"), ("coop", "DNSKEY"),
    ("nope.coop", "A"), ("www.nic.coop", "MX"), ("host.wild.nic.coop", "A"),
    ("host.wild.nic.coop", "MX"), ("ent.nic.coop", "A"), ("signed.coop", "DS"),
    ("example.coop", "DS"), ("www.signed.coop", "A"), ("www.example.coop", "A"),
    ("a.chain.nic.coop", "A"), ("h.dn.nic.coop", "A"), ("x.dn.nic.coop", "A"),
    ("tonx.nic.coop", "A"), ("x.cname.nic.coop", "A"), ("coop", "ANY"),
]


@pytest.mark.parametrize(("name", "rdtype"), QUERIES)
def test_every_rrset_validates(signed, name: str, rdtype: str) -> None:
    _, engine, dnskey = signed
    r = ask(engine, name, rdtype)
    assert r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    validate_all(r, dnskey)


def test_no_dnssec_records_without_do(signed) -> None:
    _, engine, _ = signed
    for name, rdtype in QUERIES:
        r = ask(engine, name, rdtype, do=False)
        for section in (r.answer, r.authority, r.additional):
            for rrset in section:
                assert rrset.rdtype not in (dns.rdatatype.RRSIG, dns.rdatatype.NSEC,
                                            dns.rdatatype.NSEC3, dns.rdatatype.DS) or (
                    rrset.rdtype == dns.rdatatype.DS and rdtype == "DS")


def test_dnssec_types_answered_by_type_without_do(signed) -> None:
    _, engine, _ = signed
    r = ask(engine, "coop", "DNSKEY", do=False)
    assert [x.rdtype for x in r.answer] == [dns.rdatatype.DNSKEY]


def test_wildcard_answer_keeps_wildcard_labels(signed) -> None:
    _, engine, dnskey = signed
    r = ask(engine, "a.b.wild.nic.coop", "A")
    sig = next(x for x in r.answer if x.rdtype == dns.rdatatype.RRSIG)
    assert sig.name == dns.name.from_text("a.b.wild.nic.coop")
    assert sig[0].labels == 3  # wild.nic.coop: the '*' is not counted (RFC 4034 §3.1.3)
    assert validate_all(r, dnskey) >= 1


# -- denial proofs ---------------------------------------------------------------------


def test_nxdomain_proof(signed) -> None:
    flavour, engine, _ = signed
    r = ask(engine, "nope.coop", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    if flavour.startswith("nsec3"):
        recs = nsec3_records(r)
        assert matches(recs, "coop")  # closest encloser
        assert covers(recs, "nope.coop")  # next closer
        assert covers(recs, "*.coop")  # no wildcard
    else:
        assert nsec_covers(r, "nope.coop") and nsec_covers(r, "*.coop")


def test_nodata_proof(signed) -> None:
    flavour, engine, _ = signed
    r = ask(engine, "www.nic.coop", "MX")
    if flavour.startswith("nsec3"):
        recs = nsec3_records(r)
        assert matches(recs, "www.nic.coop")
        rd = next(x for x in r.authority if x.rdtype == dns.rdatatype.NSEC3)[0]
        assert dns.rdatatype.MX not in [t for w in rd.windows for t in _types(w)]
    else:
        rd = nsec_at(r, "www.nic.coop")
        assert rd is not None


def _types(window) -> list[int]:
    number, bitmap = window
    return [number * 256 + i * 8 + b for i, byte in enumerate(bitmap) for b in range(8)
            if byte & (0x80 >> b)]


def test_empty_non_terminal_nodata_proof(signed) -> None:
    flavour, engine, _ = signed
    r = ask(engine, "ent.nic.coop", "A")
    assert r.rcode() == dns.rcode.NOERROR
    if flavour.startswith("nsec3"):
        assert matches(nsec3_records(r), "ent.nic.coop")
    else:
        assert nsec_covers(r, "ent.nic.coop")


def test_wildcard_answer_proof(signed) -> None:
    flavour, engine, _ = signed
    r = ask(engine, "host.wild.nic.coop", "A")
    if flavour.startswith("nsec3"):
        assert covers(nsec3_records(r), "host.wild.nic.coop")  # next closer name
    else:
        assert nsec_covers(r, "host.wild.nic.coop")


def test_wildcard_nodata_proof(signed) -> None:
    flavour, engine, _ = signed
    r = ask(engine, "host.wild.nic.coop", "MX")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    if flavour.startswith("nsec3"):
        recs = nsec3_records(r)
        assert matches(recs, "wild.nic.coop")
        assert covers(recs, "host.wild.nic.coop")
        assert matches(recs, "*.wild.nic.coop")
    else:
        assert nsec_covers(r, "host.wild.nic.coop")
        assert nsec_at(r, "*.wild.nic.coop") is not None


def test_ds_nodata_and_insecure_referral(signed) -> None:
    flavour, engine, _ = signed
    for r in (ask(engine, "example.coop", "DS"), ask(engine, "www.example.coop", "A")):
        if flavour == "nsec3-optout":
            recs = nsec3_records(r)
            assert matches(recs, "coop")  # closest provable encloser
            assert covers(recs, "example.coop", opt_out=True)
        elif flavour == "nsec3":
            assert matches(nsec3_records(r), "example.coop")
        else:
            rd = nsec_at(r, "example.coop")
            assert rd is not None
            assert dns.rdatatype.DS not in [t for w in rd.windows for t in _types(w)]


def test_secure_referral_carries_signed_ds(signed) -> None:
    _, engine, dnskey = signed
    r = ask(engine, "www.signed.coop", "A")
    assert [x.rdtype for x in r.authority if x.rdtype != dns.rdatatype.RRSIG] == [
        dns.rdatatype.NS, dns.rdatatype.DS]
    assert validate_all(r, dnskey) == 1  # the DS; the delegation NS is unsigned


def test_nsec3_owner_names_are_not_names_of_the_zone(signed) -> None:
    flavour, engine, _ = signed
    if not flavour.startswith("nsec3"):
        pytest.skip("NSEC3 only")
    owner = nsec3_hash("www.nic.coop").lower() + ".coop"
    assert ask(engine, owner, "NSEC3").rcode() == dns.rcode.NXDOMAIN


def test_fast_path_equals_general_path_when_signed(signed) -> None:
    """Referrals and NXDOMAIN are served by shape; their proofs must still be exact."""
    _, engine, _ = signed
    names = [f"r{i}x{'y' * (i % 5)}.coop" for i in range(60)]
    names += [f"h{i}.example.coop" for i in range(20)] + [f"h{i}.signed.coop" for i in range(20)]
    names += [f"q{i}.nic.coop" for i in range(20)] + [f"a.b{i}.ent.nic.coop" for i in range(10)]
    # Below an opt-out empty non-terminal the closest provable encloser is the apex,
    # so the next closer name is the non-terminal, not the name's own parent's child.
    names += [f"{'x' * i}.optent.coop" for i in range(1, 12)] + ["a.b.optent.coop"]
    for name in names:
        for do in (True, False):
            q = dns.message.make_query(name, "A", want_dnssec=do, use_edns=0)
            wire = q.to_wire()
            first = engine.handle(wire, False)
            assert first == engine.respond(wire, False), name
            assert engine.handle(wire, False) == first


def test_no_record_twice(signed) -> None:
    """One NSEC3 can match the closest provable encloser and cover the next closer name
    (here the apex's, for names at and below an opt-out empty non-terminal): it is sent
    once. (dnspython merges duplicates when parsing: compare with the header's counts.)"""
    _, engine, _ = signed
    for name in ("optent.coop", "d.optent.coop", "x.optent.coop", "a.b.d.optent.coop"):
        for rdtype in ("A", "DS", "NSEC", "TXT"):
            for tcp in (False, True):
                q = dns.message.make_query(name, rdtype, want_dnssec=True, use_edns=0, payload=4096)
                wire = engine.handle(q.to_wire(), tcp)
                r = dns.message.from_wire(wire)
                counts = struct.unpack("!4H", wire[4:12])
                parsed = [sum(len(x) for x in sec) for sec in (r.answer, r.authority)]
                assert list(counts[1:3]) == parsed, (name, rdtype)


def test_denial_memo_holds_only_names_of_the_zone(signed) -> None:
    """Random names (NXDOMAIN, wildcard NODATA) must not grow the NSEC3 proof memo."""
    flavour, engine, _ = signed
    if not flavour.startswith("nsec3"):
        pytest.skip("NSEC3 only")
    chain = next(iter(engine.zones.values())).nsec3
    before = len(chain.encloser_memo)  # (names of the zone asked by earlier tests)
    for i in range(200):
        ask(engine, f"r{i}.coop", "A")
        ask(engine, f"x.r{i}.wild.nic.coop", "MX")
    assert len(chain.encloser_memo) - before <= 5


@pytest.mark.parametrize("entries", [16, 250_000])
def test_one_template_serves_every_length(signed, entries: int) -> None:
    """Names of one shape (NSEC3 gap or NSEC span, zone cut) but any length get the
    general path's bytes from one template, whose compression pointers are moved; with
    room in the cache the general path runs at most twice per shape (when first seen,
    then to make its template when a second length comes), never per length."""
    _, signed_engine, _ = signed
    engine = Engine(list(signed_engine.zones.values()), cache_entries=entries)
    general = engine._respond
    calls = []
    engine._respond = lambda w, t, p=None: calls.append(w) or general(w, t, p)  # type: ignore[method-assign]
    names = [f"{'x' * n}.coop" for n in range(1, 64, 3)]
    names += [f"{'y' * n}.example.coop" for n in range(1, 64, 3)]
    names += [f"a.{'Z' * n}.signed.coop" for n in range(1, 64, 3)]
    names += [f"{'b' * n}.{'c' * (63 - n)}.example.coop" for n in range(1, 63, 7)]
    for name in names:
        for do in (True, False):
            for tcp in (False, True):
                q = dns.message.make_query(name, "A", want_dnssec=do, use_edns=0)
                wire = q.to_wire()
                served = engine.handle(wire, tcp)
                assert served == general(wire, tcp), name
    templates = [key for key in engine.shapes if len(key) == 3]
    assert templates
    if entries > len(names) * 4:
        assert len(calls) <= 2 * len(templates) < len(names)


def test_answers_too_big_for_the_client_still_truncate(signed) -> None:
    """A template that would not fit the client's size is not used: the general path
    answers (with TC, or with optional records left out) for each length."""
    _, signed_engine, _ = signed
    engine = Engine(list(signed_engine.zones.values()))
    for n in range(1, 64, 5):
        for payload in (512, 600, 1232):
            q = dns.message.make_query(f"{'q' * n}.coop", "A", want_dnssec=True,
                                       use_edns=0, payload=payload)
            wire = q.to_wire()
            assert engine.handle(wire, False) == engine.respond(wire, False)
            assert len(engine.handle(wire, False)) <= payload
