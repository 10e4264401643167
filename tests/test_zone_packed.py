"""Delegations kept packed (nameserver.zone.packed) load, check and serve as if they
were not.

``load_zone`` packs; its reference path (``reference=True``) never does. For every
zone here the served trees (packed delegations unpacked), the record counts and the
warnings, or the problems of a refused zone, must be equal; and the delegations
expected to be packed must be.
"""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.name
import dns.rcode
import pytest
from bindsign import sign_with_bind
from test_zone_load import ORIGIN, ROOT, assert_same_load, problems

from nameserver.dnssec.verify import packed_signatures_hold
from nameserver.engine.core import Engine
from nameserver.zone import load
from nameserver.zone.load import load_zone, read_sets

DS = "12345 13 2 " + "ab" * 32

ZONE = f"""\
$ORIGIN coop.
$TTL 3600
@ SOA ns1.nic hostmaster.nic 1 7200 1800 1209600 900
@ NS ns1.nic
@ NS ns2.nic
ns1.nic A 192.0.2.1
ns2.nic A 192.0.2.2
plain NS ns1.provider.example.
plain NS ns2.provider.example.
plain DS {DS}
glued NS ns1.glued
glued NS NS2.Glued
ns1.glued A 198.51.100.1
ns1.glued AAAA 2001:db8::1
NS2.GLUED A 198.51.100.2
ns1.early A 198.51.100.3
early NS ns1.early
usesnic NS ns1.nic
usesglued NS ns1.glued
usesglued NS ns1.host
dangling NS ns9.glued
missing NS ns.nowhere
host NS ns1.host
ns1.host A 198.51.100.4
occluded NS ns1.provider.example.
txt.occluded TXT "below a cut"
ns1.occluded A 198.51.100.5
user NS ns1.occluded
late NS ns1.late
unrelated NS ns1.provider.example.
twice NS ns1.provider.example.
notglue NS ns1.provider.example.
ns1.notglue A 198.51.100.6
www A 192.0.2.80
ns1.late A 198.51.100.7
twice DS {DS}
"""
PACKED = {b"plain", b"glued", b"early", b"usesnic", b"usesglued", b"dangling", b"missing",
          b"host", b"user", b"unrelated"}


def test_packed_delegations_load_as_unpacked_ones(tmp_path: Path) -> None:
    path = tmp_path / "z.zone"
    path.write_text(ZONE)
    zone = assert_same_load(path)
    # late and twice were read in two stretches, occluded and notglue have data the
    # checks speak of: kept unpacked.
    assert set(zone.packed) == PACKED
    warnings = load_zone(path, ORIGIN).warnings
    assert f"{path}:21: name server ns9.glued.coop. has no address records (glue)" in warnings
    assert f"{path}:22: name server ns.nowhere.coop. has no address records (glue)" in warnings
    assert any("ns1.notglue.coop. A is below the delegation" in w for w in warnings)
    assert not any("ns1.occluded" in w for w in warnings)  # glue, named by a packed one


def test_packed_delegations_answer_as_unpacked_ones(tmp_path: Path) -> None:
    path = tmp_path / "z.zone"
    path.write_text(ZONE)
    packed = Engine([load_zone(path, ORIGIN).zone])
    whole = Engine([load_zone(path, ORIGIN, reference=True).zone])
    for qname in ("plain.coop.", "www.glued.coop.", "ns1.glued.coop.", "Early.coop.",
                  "x.usesglued.coop.", "host.coop.", "nope.coop.", "ns9.glued.coop."):
        for qtype in ("A", "NS", "DS", "AAAA"):
            wire = dns.message.make_query(qname, qtype, want_dnssec=True).to_wire()
            expected = whole.respond(wire)
            assert packed.respond(wire) == expected, (qname, qtype)
            for _ in range(3):  # the fast path: made, then from its caches
                assert packed.handle(wire) == expected, (qname, qtype)


def test_the_apex_needing_every_name_means_nothing_packed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "z.zone"
    path.write_text(ZONE + "@ DNAME example.\n")  # named after the delegations: read again
    zone = assert_same_load(path)
    assert not zone.packed
    # The shipped zone has a ZONEMD (checked over every name) at its apex, which comes
    # first: nothing is packed, and the file is read once.
    reads: list[bool] = []
    real = load.read_sets

    def counted(*args: object, **kwargs: object) -> object:
        reads.append(bool(kwargs.get("pack")))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(load, "read_sets", counted)
    assert not load_zone(ROOT / "zones" / "coop.signed.zone", ORIGIN).zone.packed
    assert reads == [True]
    load_zone(path, ORIGIN)
    assert reads == [True, True, False]


def test_nsec_signed_delegations_are_not_packed(tmp_path: Path) -> None:
    """NSEC at a cut is for the chain, which the loader builds from the tree."""
    source = tmp_path / "source.zone"
    source.write_text(ZONE)
    zone = assert_same_load(sign_with_bind(tmp_path, source, "nsec"))
    assert not zone.packed and zone.nsec is not None


@pytest.mark.parametrize("flavour", ["nsec3", "nsec3-optout"])
def test_signed_packed_delegations_are_checked(tmp_path: Path, flavour: str) -> None:
    source = tmp_path / "source.zone"
    source.write_text(ZONE)
    signed = sign_with_bind(tmp_path, source, flavour)
    zone = assert_same_load(signed)
    assert zone.packed and zone.earliest_expiry is not None
    gathered = read_sets(signed, ORIGIN, pack=True)
    assert gathered.packed_ds and packed_signatures_hold(gathered)
    # Two weeks on, the signatures of the packed DS expire with the rest: the file is
    # read again unpacked, and every problem named as reading it unpacked names it.
    later = zone.earliest_expiry + 86400
    assert not packed_signatures_hold(gathered, now=later)
    found = problems_at(signed, later)
    assert found and found == problems_at(signed, later, reference=True)
    assert any("RRSIG DS" in p for p in found)


def problems_at(path: Path, now: float, reference: bool = False) -> list[str]:
    try:
        load_zone(path, ORIGIN, now=now, reference=reference)
    except Exception as e:  # ZoneError
        return e.problems  # type: ignore[attr-defined]
    return []


def test_a_bad_record_in_a_packed_delegation_is_named(tmp_path: Path) -> None:
    path = tmp_path / "z.zone"
    path.write_text(ZONE.replace("ns1.glued A 198.51.100.1", "ns1.glued A 198.51.100.300"))
    found = problems(path, reference=False)
    assert len(found) == 1 and found[0].startswith(f"{path}:13: bad A data '198.51.100.300'")
    assert found == problems(path, reference=True)


def test_a_referral_from_a_packed_delegation(tmp_path: Path) -> None:
    path = tmp_path / "z.zone"
    path.write_text(ZONE)
    engine = Engine([load_zone(path, ORIGIN).zone])
    wire = dns.message.make_query("www.glued.coop.", "A").to_wire()
    reply = dns.message.from_wire(engine.handle(wire))  # type: ignore[arg-type]
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    ns = reply.authority[0]
    assert ns.name == dns.name.from_text("glued.coop.")
    assert {r.to_text().lower() for r in ns} == {"ns1.glued.coop.", "ns2.glued.coop."}
    glue = {(str(r.name).lower(), r.rdtype) for r in reply.additional}
    assert glue == {("ns1.glued.coop.", 1), ("ns1.glued.coop.", 28), ("ns2.glued.coop.", 1)}
