"""The fast zone reader gives exactly what dnspython gives.

Every zone is loaded twice: through the fast path of :mod:`nameserver.zone.fastread`
and through the reference path (``load_zone(..., reference=True)``: the
dnspython-based reader and ``dns.rdata.from_text`` for every record). The compiled
trees must be equal node by node, RRset by RRset, byte for byte; so must the
warnings, and the problems of a zone that is refused.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import dns.name
import dns.rdata
import pytest
from bindsign import FLAVOURS, sign_with_bind

from nameserver.wire import Compressor, WireName
from nameserver.zone.fastread import read_wire_records, reference_records
from nameserver.zone.load import ZoneError, _compile, load_zone, read_sets
from nameserver.zone.reader import ZoneSyntaxError
from nameserver.zone.tree import Node, RRset, Zone

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
ORIGIN = dns.name.from_text("coop.")
ZONES = [ROOT / "zones" / "coop.zone", DATA / "engine.zone", DATA / "diff-corners.zone",
         DATA / "integ-coop.zone", DATA / "verify-coop.zone"]


# ---------------------------------------------------------------------------
# Comparing compiled zones
# ---------------------------------------------------------------------------


def _parts(rdata: object) -> object:
    if isinstance(rdata, bytes):
        return rdata
    return tuple(p.wire if isinstance(p, WireName) else p for p in rdata)  # type: ignore[attr-defined]


def _rrset(r: RRset | None) -> object:
    if r is None:
        return None
    return (
        r.owner.wire, r.owner.key, r.rdtype, r.ttl, r.fixed,
        tuple(_parts(p) for p in r.rdatas), tuple(t.wire for t in r.targets), _rrset(r.sigs),
    )


def _node(zone: Zone, node: Node, path: str = "") -> dict[str, object]:
    """Everything about a subtree, flattened: {path: facts} (packed delegations
    unpacked, so that both forms are compared)."""
    out: dict[str, object] = {}
    children = zone.children(node)
    facts = (
        node.name.wire,
        node.name.key,
        node.cut,
        _rrset(node.dname),
        node.wildcard is not None and node.wildcard is node.children.get(b"*"),
        node.wildcard is None and b"*" not in node.children,
        sorted(label for label, _ in children),
        {t: _rrset(r) for t, r in node.rrsets.items()},
        list(node.rrsets),
    )
    out[path] = facts
    for label, child in children:
        out.update(_node(zone, child, f"{label!r}.{path}"))
    return out


def _zone(z: Zone) -> dict[str, object]:
    facts = _node(z, z.apex)
    facts["*zone"] = (z.origin.wire, z.serial, z.record_count, _rrset(z.soa),
                      _rrset(z.negative_soa))
    if z.nsec3 is not None:
        facts["*nsec3"] = (z.nsec3.iterations, z.nsec3.salt, z.nsec3.hashes,
                           [_rrset(r) for r in z.nsec3.rrsets])
    else:
        facts["*nsec3"] = None
    if z.nsec is not None:
        facts["*nsec"] = (z.nsec.keys, [_rrset(r) for r in z.nsec.rrsets])
    else:
        facts["*nsec"] = None
    return facts


def assert_same_load(path: Path, **kwargs: object) -> Zone:
    fast = load_zone(path, ORIGIN, **kwargs)  # type: ignore[arg-type]
    slow = load_zone(path, ORIGIN, reference=True, **kwargs)  # type: ignore[arg-type]
    a, b = _zone(fast.zone), _zone(slow.zone)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], k
    assert fast.warnings == slow.warnings
    return fast.zone


def _records(records: object) -> list[tuple]:
    return [
        (name.wire, ttl, rdtype, _parts(parts), target.wire if target else None, f, line)
        for name, ttl, rdtype, parts, target, f, line in records  # type: ignore[attr-defined]
    ]


def assert_same_records(path: Path) -> None:
    """Record by record, and the compiled trees, without the zone checks."""
    assert _records(read_wire_records(path, ORIGIN)) == _records(reference_records(path, ORIGIN))
    fast = _compile(read_sets(path, ORIGIN), str(path))
    slow = _compile(read_sets(path, ORIGIN, reference=True), str(path))
    assert _zone(fast) == _zone(slow)


def problems(path: Path, reference: bool) -> list[str]:
    try:
        load_zone(path, ORIGIN, reference=reference)
    except ZoneError as e:
        return e.problems
    return []


# ---------------------------------------------------------------------------
# Shipped and test zones, unsigned and signed by BIND
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ZONES, ids=lambda p: p.name)
def test_shipped_zones_load_the_same(path: Path) -> None:
    assert_same_records(path)
    assert_same_load(path)


needs_bind = pytest.mark.skipif(
    shutil.which("dnssec-signzone") is None, reason="bind9-utils is not installed"
)


@needs_bind
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
@pytest.mark.parametrize("source", ["engine.zone", "coop.zone"])
def test_bind_signed_zones_load_the_same(tmp_path: Path, flavour: str, source: str) -> None:
    path = DATA / source if source != "coop.zone" else ROOT / "zones" / source
    signed = sign_with_bind(tmp_path, path, flavour)
    assert_same_records(signed)
    zone = assert_same_load(signed)
    assert (zone.nsec3 is not None) == flavour.startswith("nsec3")
    assert (zone.nsec is not None) == (flavour == "nsec")


# ---------------------------------------------------------------------------
# Odd but legal syntax, for every type of the fast path
# ---------------------------------------------------------------------------

KEY = base64.b64encode(bytes(range(64))).decode()
SIG = base64.b64encode(bytes(range(100, 164))).decode()
DIGEST = "0123456789abcdef" * 4

ODD = f"""\
$ORIGIN coop.
$TTL 1h
@   IN  SOA ns1.nic.coop. hostmaster.nic.coop. ( 2024010101 ; serial
            2h 30M 2W1D
            1d )
@           NS  ns1.nic
    IN 7200 NS  NS2.NIC.coop.
            NS  ns1.nic.coop.          ; a duplicate by case (dropped)
            NS  ns2.nic.COOP.          ; and again
ns1.nic 3600 IN A 192.0.2.1
ns2.nic IN 1w A 192.0.2.2
ns2.nic     A   192.0.2.2              ; duplicate
ns2.nic     AAAA 2001:DB8::2
ns2.nic     AAAA 2001:db8:0:0:0:0:0:2  ; the same address
ns2.nic     AAAA ::ffff:192.0.2.2      ; an IPv4 tail
ns2.nic     AAAA 2001:db8:0:0:0:0:0::
Mixed.Case  300 in ns ns1.Mixed.Case
mixed.case  300 IN DS 12345 13 2 {DIGEST}
ns1.mixed.case a 192.0.2.3
ns1.MIXED.case aaaa ::1
esc\\.aped  NS ns1.example.net.
\\065bc     NS ns1.example.net.
b\\195\\188cher NS ns1.example.net.
bücher      NS ns1.bücher.example.
xn--bcher-kva NS ns1.example.net.
{"a" * 63}  NS  {"b" * 63}.example.net.
generic     NS  \\# 17 036e7331076578616d706c65036e657400
generic     DS  \\# 8 30390d0501020304
ds1 86400   NS  ns1.example.net.
ds1         DS  ( 12345 13 2
                  {DIGEST[:32]}
                  {DIGEST[32:]} )
ds1         DS  12345 ECDSAP256SHA256 2 {DIGEST.upper()}
ds1         DS  1 13 1 {DIGEST[:40]}
ds1         DS  2 13 4 {DIGEST}{DIGEST[:32]}
ds1         DS  3 8 3 {DIGEST}
ds1         DS  4 13 7 abcdef
ds1         DS  5 013 02 {DIGEST}
mx          MX  10 mail
mx          MX  020 mail.example.net.
mx          MX  10 MAIL.mx.coop.
mail.mx     A   192.0.2.25
cn          CNAME target.example.
cn2 CLASS1  CNAME cn
cn3 IN 60   CNAME @
txt         TXT "a b" "c\\"d" plain
txt         TXT ( "multi"
                  "line" )
txt         TXT unquoted
key         DNSKEY 257 3 13 ( {KEY[:40]}
                              {KEY[40:]} )
key         DNSKEY 256 3 ECDSAP256SHA256 {KEY}
key         DNSKEY 256 3 13 {KEY}
sig         A   192.0.2.9
sig         RRSIG A 13 2 3600 20300101000000 20200101000000 12345 coop. {SIG}
sig         RRSIG A 13 2 1h 1893456000 1577836800 12345 COOP. ( {SIG[:20]}
                  {SIG[20:]} )
sig         RRSIG A 13 2 3600 20300101000000 20200101000000 12345 coop. {SIG}
sig         RRSIG A ECDSAP256SHA256 2 3600 20300101000000 20200101000000 1 coop. {SIG}
sig         RRSIG TYPE1 13 2 3600 20300101000000 20200101000000 2 sig {SIG}
0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOM NSEC3 1 1 12 aabbccdd (
                  2T7B4G4VSA5SMI47K61MV5BV1A22BOJR NS SOA RRSIG DNSKEY NSEC3PARAM )
2t7b4g4vsa5smi47k61mv5bv1a22bojr NSEC3 1 0 0 - 0p9mhaveqvm6t7vbl5lop2u3t2rp3tom
2t7b4g4vsa5smi47k61mv5bv1a22bojr NSEC3 1 0 0 - 0p9mhaveqvm6t7vbl5lop2u3t2rp3tom A TYPE65534
@           NSEC3PARAM 1 0 12 AABBCCDD
@           NSEC3PARAM 1 0 0 -
"quoted-owner" A 192.0.2.50
tabs\tA\t192.0.2.51
*.wild      A   192.0.2.52
deep.ent.x  A   192.0.2.53
srv         SRV 0 1 587 mail.mx
ptr         PTR ns1.nic
dname       DNAME target.example.
caa         CAA 0 issue "ca.example"
ns2.nic.coop. 1h AAAA 2001:db8::3
"""


def test_odd_but_legal_syntax_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "odd.zone"
    path.write_text(ODD)
    fast = _records(read_wire_records(path, ORIGIN))
    slow = _records(reference_records(path, ORIGIN))
    assert len(fast) > 60
    for a, b in zip(fast, slow, strict=True):
        assert a == b
    assert_same_records(path)


BAD = """\
$ORIGIN coop.
$TTL 3600
@   SOA ns1.nic.coop. hostmaster.nic.coop. 1 2 3 4 5
@   NS  ns1.nic
a1  A   192.0.2.256
a2  A   192.0.2.01
a3  A   192.0.2
a4  AAAA 2001:db8::1::2
a5  AAAA 2001:db8::12345
a6  NS  a..b
a7  NS  ns1 extra
a8  DS  65536 13 2 00
a9  DS  1 13 2 0g
a10 DS  1 13 0 00
a11 DS  1 13 2 abcd
a12 RRSIG A 13 2 3600 20301301000000 20200101000000 1 coop. AAAA
a13 RRSIG A 13 2 3600 20300101000000 20200101000000 1 coop. not*base64
a14 NSEC3 1 1 12 xyz 0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOM A
a15 NSEC3 1 1 12 - 0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOO A
a16 NSEC3 1 1 12 - 0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOM BOGUS
a17 DNSKEY 256 3 13 !!!
a18 MX  70000 mail
a19 3600 CH A 192.0.2.1
a20 BOGUS 1
a21 ANY 1
a22 SOA ns1 host 1 2 3 4
a23 NSEC3PARAM 1 0 70000 -
a24 1x  A 192.0.2.1
{label} A 192.0.2.1
a26 CNAME x.{label}
$BOGUS
a27 A 192.0.2.1 )
"""


def test_bad_records_fail_the_same(tmp_path: Path) -> None:
    path = tmp_path / "bad.zone"
    path.write_text(BAD.replace("{label}", "l" * 64))
    fast = problems(path, reference=False)
    slow = problems(path, reference=True)
    assert fast == slow
    assert len(fast) == 27
    assert all(p.startswith(f"{path}:") for p in fast)


@pytest.mark.parametrize(
    "text",
    [
        "@ 3600 SOA a. b. 1 2 3 4 5\n@ NS ns.example.\nx A 192.0.2.1 (\n",  # never closed
        "@ 3600 SOA a. b. 1 2 3 4 5\n@ NS ns.example.\nx TXT \"open\n",
        "  A 192.0.2.1\n@ 3600 SOA a. b. 1 2 3 4 5\n",  # no previous owner
        "@ SOA a. b. 1 2 3 4 5\n@ NS ns.example.\nx A 192.0.2.1\n",  # no $TTL: SOA minimum
        "x A 192.0.2.1\n",  # no TTL at all
        "$INCLUDE missing.zone\n",
        "$ORIGIN\n$TTL 1 2\n",
        "@ 3600 SOA a. b. 1 2 3 4 5\n@ NS ns.example.\nout.example. A 192.0.2.1\n",
    ],
)
def test_syntax_errors_and_refusals_are_the_same(tmp_path: Path, text: str) -> None:
    path = tmp_path / "z.zone"
    path.write_text(text)
    assert problems(path, reference=False) == problems(path, reference=True)


def test_include_and_origin_are_the_same(tmp_path: Path) -> None:
    (tmp_path / "inner.zone").write_text("www A 192.0.2.7\nsame A 192.0.2.8\n  AAAA ::8\n")
    path = tmp_path / "outer.zone"
    path.write_text(
        "$TTL 300\n@ SOA ns1 host 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n"
        "same A 192.0.2.9\n"
        "$INCLUDE inner.zone sub\n"
        "same A 192.0.2.10\n"  # the outer origin again: same.coop., not same.sub.coop.
        "$ORIGIN other.coop.\nhost A 192.0.2.11\n@ A 192.0.2.12\n"
    )
    assert_same_records(path)
    zone = assert_same_load(path)
    assert zone.find(b"\x03www\x03sub\x04coop\x00") is not None
    same = zone.find(b"\x04same\x04coop\x00")
    assert same is not None and len(same.rrsets[1].rdatas) == 2


def test_reading_is_streamed_in_wire_form(tmp_path: Path) -> None:
    """Names in RDATA are shared: one WireName per spelling however many refer to it."""
    path = tmp_path / "z.zone"
    lines = ["$TTL 300", "@ SOA ns1 host 1 2 3 4 5", "@ NS ns1", "ns1 A 192.0.2.1"]
    lines += [f"d{i} NS ns1.provider.example.\n  NS ns2.provider.example." for i in range(50)]
    path.write_text("\n".join(lines) + "\n")
    zone = _compile(read_sets(path, ORIGIN), str(path))
    ns = [zone.apex.children[f"d{i}".encode()].rrsets[2] for i in range(50)]
    assert all(r.targets[0] is ns[0].targets[0] for r in ns)
    assert all(r.rdatas is ns[0].rdatas and r.fixed is ns[0].fixed for r in ns)
    # Served, each delegation is one packed bytes object, unpacked on demand.
    served = load_zone(path, ORIGIN).zone
    assert set(served.packed) == {f"d{i}".encode() for i in range(50)}
    assert b"d0" not in served.apex.children
    d7 = served.find(b"\x02d7\x04coop\x00")
    assert d7 is not None and d7.cut
    assert _node(served, d7) == _node(zone, zone.apex.children[b"d7"])


def test_compressor_is_unchanged_by_lazy_suffixes() -> None:
    name = WireName(dns.name.from_text("Www.Example.COOP.").to_wire())
    assert name.key == b"\x03www\x07example\x04coop\x00"
    assert name.suffixes == ((0, name.key), (4, name.key[4:]), (12, name.key[12:]))
    assert name.labels == 3
    lower = WireName(b"\x04coop\x00")
    assert lower.key is lower.wire
    out = bytearray(12)
    comp = Compressor()
    comp.write(out, name)
    comp.write(out, WireName(b"\x04mail\x07EXAMPLE\x04coop\x00"))
    comp.write(out, name)
    assert bytes(out[12:]) == name.wire + b"\x04mail\xc0\x10" + b"\xc0\x0c"
    with pytest.raises(ZoneSyntaxError):
        list(read_wire_records("/nonexistent/zone", ORIGIN))
    assert dns.rdata  # (imported for type checkers)


OCCLUSION = """\
$TTL 3600
@ SOA ns1.nic host 1 2 3 4 5
@ NS ns1.nic
ns1.nic A 192.0.2.1
d1 NS ns1.d1
d1 A 192.0.2.9
ns1.d1 A 192.0.2.2
ns1.d1 TXT "glue with text"
d2 NS ns1.d2
d2 NS ns.missing
d2 DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns1.d2 AAAA 2001:db8::2
x.ns1.d2 A 192.0.2.3
sub.d2 NS ns1.d2
notglue.d2 A 192.0.2.4
plain.ent A 192.0.2.5
ns.ent NS ns1.d1
dn DNAME example.
below.dn A 192.0.2.6
ns1.dn A 192.0.2.7
d3 NS ns1.dn
d3 NS ns1.d3
ns1.d3 A 192.0.2.8
"""


def test_occlusion_and_glue_warnings(tmp_path: Path) -> None:
    """Glue is quiet; data at or below a cut or a DNAME, and missing glue, are not."""
    path = tmp_path / "occ.zone"
    path.write_text(OCCLUSION)
    kept = "(occluded: kept, never served)"
    assert load_zone(path, ORIGIN).warnings == [
        f"{path}:6: d1.coop. A is at the delegation d1.coop. {kept}",
        f"{path}:8: ns1.d1.coop. TXT is below the delegation d1.coop. {kept}",
        f"{path}:13: x.ns1.d2.coop. A is below the delegation d2.coop. {kept}",
        f"{path}:14: sub.d2.coop. NS is below the delegation d2.coop. {kept}",
        f"{path}:15: notglue.d2.coop. A is below the delegation d2.coop. {kept}",
        f"{path}:19: below.dn.coop. is below the DNAME at dn.coop. {kept}",
        f"{path}:20: ns1.dn.coop. is below the DNAME at dn.coop. {kept}",
        f"{path}:9: name server ns.missing.coop. has no address records (glue)",
    ]
