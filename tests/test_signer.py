"""The offline zone signer: RRSIGs, NSEC3/NSEC chains, re-signing, ZONEMD, parallel paths.

Every signature is checked with dnspython's validator, and the signed files are also
given to BIND's ``dnssec-verify`` and NLnet Labs' ``ldns-verify-zone`` when installed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype as T
import dns.zone
import pytest

from nameserver.dnssec import commands, zonedata
from nameserver.dnssec import signer as signer_module
from nameserver.dnssec.keys import SigningKey, generate_key, write_key
from nameserver.dnssec.nsec3 import b32hex, key_of, key_to_wire, nsec3_hash
from nameserver.dnssec.signer import (
    SignStats,
    ZoneData,
    read_zone,
    sign_zone,
    sign_zone_iter,
    write_zone,
)
from nameserver.zone.reader import ZoneSyntaxError, read_zone_file
from nameserver.zone.tree import _rdata_parts

ORIGIN = dns.name.from_text("coop.")
NOW = 1_800_000_000
DAY = 86400
INCEPTION = NOW - 3600
EXPIRATION = NOW + 30 * DAY
TIMEOUT = 120
DS1 = "31589 13 2 4A8E2DD2A6A2A1C01E2C5D6B8F1B7C0E9D3A5F6E7B8C9D0A1B2C3D4E5F607182"
DS2 = "12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"

ZONE = f"""\
$ORIGIN coop.
$TTL 3600
@   IN SOA ns1.nic.coop. hostmaster.nic.coop. ( 2026010101 ; serial
            7200 1800 1209600 900 )
    NS  ns1.nic.coop.
    NS  ns2.nic.coop.
    TXT "coop test zone ; with (parentheses)"
    CDS {DS2}
nic          MX    10 mail.nic
ns1.nic      A     192.0.2.1
             AAAA  2001:db8::1
ns2.nic 7200 A     192.0.2.2
mail.nic     A     192.0.2.25
www.nic      A     192.0.2.80
             A     192.0.2.79
whois.nic    CNAME www.nic
*.wild.nic   A     192.0.2.100
             TXT   "wildcard"
exists.wild.nic A  192.0.2.101
wild-parent.nic A  192.0.2.102
*.wild-parent.nic A 192.0.2.103
dname.nic    DNAME target.nic
host.target.nic A  192.0.2.120
deep.ent.nic A     192.0.2.130
UPPER.nic    A     192.0.2.140
; signed delegation with glue
secure       NS    ns1.secure
             NS    ns2.example.net.
             DS    {DS1}
ns1.secure   A     203.0.113.1
             AAAA  2001:db8:ff00::1
; unsigned delegation with glue and occluded data
insecure     NS    ns1.insecure
             NS    ns1.example.net.
ns1.insecure A     203.0.113.2
txt.insecure TXT   "occluded"
deep.below.insecure A 192.0.2.9
; delegations below empty non-terminals
a.optout-ent NS    ns1.example.net.
b.secure-ent NS    ns1.example.net.
             DS    {DS2}
x.mixed-ent  NS    ns1.example.net.
y.mixed-ent  NS    ns1.example.net.
             DS    {DS1}
parked       NS    ns1.nic.coop.
"""

AUTH = ["coop.", "nic.coop.", "ns1.nic.coop.", "ns2.nic.coop.", "mail.nic.coop.",
        "www.nic.coop.", "whois.nic.coop.", "*.wild.nic.coop.", "exists.wild.nic.coop.",
        "wild-parent.nic.coop.", "*.wild-parent.nic.coop.", "dname.nic.coop.",
        "host.target.nic.coop.", "deep.ent.nic.coop.", "upper.nic.coop."]
ENTS = ["wild.nic.coop.", "target.nic.coop.", "ent.nic.coop."]
SECURE = ["secure.coop.", "b.secure-ent.coop.", "y.mixed-ent.coop."]
INSECURE = ["insecure.coop.", "a.optout-ent.coop.", "x.mixed-ent.coop.", "parked.coop."]
GLUE = ["ns1.secure.coop.", "ns1.insecure.coop.", "txt.insecure.coop.",
        "deep.below.insecure.coop."]


def _names(texts: list[str]) -> set[dns.name.Name]:
    return {dns.name.from_text(t) for t in texts}


@pytest.fixture(scope="module")
def keys() -> list[SigningKey]:
    return [generate_key(ORIGIN, ksk=True), generate_key(ORIGIN)]


@pytest.fixture()
def zonefile(tmp_path: Path) -> Path:
    path = tmp_path / "coop.zone"
    path.write_text(ZONE)
    return path


def _sign(path: Path, keys: list[SigningKey], **kw: object) -> list[signer_module.RRset]:
    kw.setdefault("now", NOW)
    kw.setdefault("inception", INCEPTION)
    kw.setdefault("expiration", EXPIRATION)
    kw.setdefault("workers", 1)
    return sign_zone(read_zone_file(path, ORIGIN), ORIGIN, keys, **kw)  # type: ignore[arg-type]


def _write_and_load(out: list[signer_module.RRset], path: Path) -> dns.zone.Zone:
    write_zone(out, path)
    return dns.zone.from_file(str(path), ORIGIN, relativize=False, check_origin=True)


def _rrsigs(zone: dns.zone.Zone) -> list[tuple[dns.name.Name, int, object, object]]:
    """(owner, covered type, covered rdataset, rrsig rdata) for every RRSIG."""
    out = []
    for name, node in zone.nodes.items():
        for rds in node.rdatasets:
            if rds.rdtype == T.RRSIG:
                covered = node.get_rdataset(dns.rdataclass.IN, rds.covers)
                for sig in rds:
                    out.append((name, int(rds.covers), covered, sig))
    return out


def _check_signatures(zone: dns.zone.Zone, keys: list[SigningKey]) -> None:
    dnskeys = zone.find_rdataset(ORIGIN, T.DNSKEY)
    ksk_tag, zsk_tag = keys[0].key_tag, keys[1].key_tag
    sigs = _rrsigs(zone)
    assert sigs
    for name, covers, covered, sig in sigs:
        assert covered is not None, f"RRSIG without its RRset at {name}"
        dns.dnssec.validate_rrsig((name, covered), sig, {ORIGIN: dnskeys}, now=NOW)
        assert sig.original_ttl == covered.ttl
        assert sig.signer == ORIGIN
        assert sig.labels == len(name) - 1 - (1 if name.is_wild() else 0)
        assert sig.inception == INCEPTION
        want = ksk_tag if covers in (T.DNSKEY, T.CDS, T.CDNSKEY) else zsk_tag
        assert sig.key_tag == want, (name, T.to_text(covers))


def _signed_types(zone: dns.zone.Zone) -> dict[dns.name.Name, set[int]]:
    out: dict[dns.name.Name, set[int]] = {}
    for name, covers, _covered, _sig in _rrsigs(zone):
        out.setdefault(name, set()).add(covers)
    return out


def _nsec3_records(zone: dns.zone.Zone) -> list[tuple[str, object, int]]:
    out = []
    for name, node in zone.nodes.items():
        rds = node.get_rdataset(dns.rdataclass.IN, T.NSEC3)
        if rds is not None:
            assert len(rds) == 1
            out.append((name.labels[0].decode().lower(), rds[0], rds.ttl))
    return sorted(out, key=lambda item: item[0])


def _nsec3_label(name: str) -> str:
    return dns.dnssec.nsec3_hash(name, None, 0, 1).lower()


def test_nsec3_signed_zone(zonefile: Path, keys: list[SigningKey], tmp_path: Path) -> None:
    stats = SignStats()
    zone = _write_and_load(_sign(zonefile, keys, stats=stats), tmp_path / "signed")
    _check_signatures(zone, keys)
    assert stats.delegations == 7 and stats.secure_delegations == 3
    assert stats.kept_signatures == 0

    signed = _signed_types(zone)
    # Glue and occluded data: no signatures, no NSEC3.
    for name in _names(GLUE):
        assert name not in signed, name
    # Delegations: the NS RRset is never signed; DS is.
    for name in _names(INSECURE):
        assert name not in signed
    for name in _names(SECURE):
        assert signed[name] == {T.DS}
    # Authoritative names: every RRset signed.
    for name in _names(AUTH):
        node = zone.nodes[name]
        assert signed[name] == {rds.rdtype for rds in node.rdatasets
                                if rds.rdtype != T.RRSIG}, name
    assert signed[ORIGIN] >= {T.SOA, T.NS, T.TXT, T.CDS, T.DNSKEY, T.NSEC3PARAM}

    param = zone.find_rdataset(ORIGIN, T.NSEC3PARAM)
    assert param[0].to_text() == "1 0 0 -"

    # The chain: exactly the authoritative names, the signed delegations and the empty
    # non-terminals above them; sorted, closed, opt-out, RFC 9077 TTL.
    chain = _nsec3_records(zone)
    expected = {_nsec3_label(n) for n in AUTH + ENTS + SECURE + ["secure-ent.coop.",
                                                                "mixed-ent.coop."]}
    assert {label for label, _rd, _ttl in chain} == expected
    for i, (_label, rd, ttl) in enumerate(chain):
        following = chain[(i + 1) % len(chain)][0]
        assert b32hex(rd.next) == following
        assert rd.flags == 1 and rd.iterations == 0 and rd.salt == b"" and rd.algorithm == 1
        assert ttl == 900
    bitmaps = {label: _types(rd) for label, rd, _ttl in chain}
    assert bitmaps[_nsec3_label("coop.")] == {T.SOA, T.NS, T.TXT, T.CDS, T.DNSKEY,
                                             T.NSEC3PARAM, T.RRSIG}
    assert bitmaps[_nsec3_label("secure.coop.")] == {T.NS, T.DS, T.RRSIG}
    assert bitmaps[_nsec3_label("wild.nic.coop.")] == set()
    assert bitmaps[_nsec3_label("secure-ent.coop.")] == set()
    assert bitmaps[_nsec3_label("whois.nic.coop.")] == {T.CNAME, T.RRSIG}
    assert bitmaps[_nsec3_label("dname.nic.coop.")] == {T.DNAME, T.RRSIG}
    assert bitmaps[_nsec3_label("*.wild.nic.coop.")] == {T.A, T.TXT, T.RRSIG}
    # Owner names are written in lowercase (canonical form).
    assert dns.name.from_text("upper.nic.coop.") in zone.nodes
    assert "UPPER" not in (tmp_path / "signed").read_text()


def _types(rd: object) -> set[int]:
    out = set()
    for window, bitmap in rd.windows:  # type: ignore[attr-defined]
        for i, byte in enumerate(bitmap):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    out.add(window * 256 + i * 8 + bit)
    return out


def test_nsec3_without_opt_out(zonefile: Path, keys: list[SigningKey], tmp_path: Path) -> None:
    zone = _write_and_load(_sign(zonefile, keys, opt_out=False), tmp_path / "signed")
    _check_signatures(zone, keys)
    chain = _nsec3_records(zone)
    expected = {_nsec3_label(n) for n in AUTH + ENTS + SECURE + INSECURE + [
        "secure-ent.coop.", "mixed-ent.coop.", "optout-ent.coop."]}
    assert {label for label, _rd, _ttl in chain} == expected
    assert all(rd.flags == 0 for _label, rd, _ttl in chain)
    bitmaps = {label: _types(rd) for label, rd, _ttl in chain}
    assert bitmaps[_nsec3_label("insecure.coop.")] == {T.NS}


def test_nsec_signed_zone(zonefile: Path, keys: list[SigningKey], tmp_path: Path) -> None:
    zone = _write_and_load(_sign(zonefile, keys, nsec3=False), tmp_path / "signed")
    _check_signatures(zone, keys)
    assert zone.get_rdataset(ORIGIN, T.NSEC3PARAM) is None
    owners = sorted(name for name, node in zone.nodes.items()
                    if node.get_rdataset(dns.rdataclass.IN, T.NSEC) is not None)
    # Every authoritative name and every delegation, no glue and no empty non-terminal.
    assert set(owners) == _names(AUTH + SECURE + INSECURE)
    for i, name in enumerate(owners):
        rd = zone.find_rdataset(name, T.NSEC)[0]
        assert rd.next == owners[(i + 1) % len(owners)]
        types = _types(rd)
        assert {T.NSEC, T.RRSIG} <= types
        if name in _names(INSECURE):
            assert types == {T.NS, T.NSEC, T.RRSIG}
        if name in _names(SECURE):
            assert types == {T.NS, T.DS, T.NSEC, T.RRSIG}
    signed = _signed_types(zone)
    for name in _names(INSECURE):
        assert signed[name] == {T.NSEC}


def test_zonemd(zonefile: Path, keys: list[SigningKey], tmp_path: Path) -> None:
    for nsec3 in (True, False):
        path = tmp_path / f"signed-{nsec3}"
        zone = _write_and_load(_sign(zonefile, keys, zonemd=True, nsec3=nsec3), path)
        zone.verify_digest()  # RFC 8976 SIMPLE / SHA-384, over the final signed zone
        zonemd = zone.find_rdataset(ORIGIN, T.ZONEMD)
        assert zonemd[0].serial == 2026010101 and zonemd[0].scheme == 1
        assert zonemd[0].hash_algorithm == 1 and len(zonemd[0].digest) == 48
        _check_signatures(zone, keys)
        assert T.ZONEMD in _signed_types(zone)[ORIGIN]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.mark.parametrize(
    "options",
    [{}, {"opt_out": False}, {"nsec3": False}, {"nsec3": False, "zonemd": True},
     {"zonemd": True}, {"salt": b"\xab\xcd", "iterations": 2}],
    ids=["nsec3-opt-out", "nsec3", "nsec", "nsec-zonemd", "nsec3-opt-out-zonemd",
         "nsec3-salt-iterations"],
)
def test_external_verifiers(
    zonefile: Path, keys: list[SigningKey], tmp_path: Path, options: dict[str, object]
) -> None:
    if not shutil.which("dnssec-verify") and not shutil.which("ldns-verify-zone"):
        pytest.skip("neither dnssec-verify nor ldns-verify-zone is installed")
    out = _sign(zonefile, keys, now=None, inception=None, expiration=None, **options)
    path = tmp_path / "coop.signed"
    write_zone(out, path)
    if shutil.which("dnssec-verify"):
        result = _run(["dnssec-verify", "-o", "coop.", str(path)])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Zone fully signed" in result.stdout + result.stderr
    # ldns 1.8.x loops forever on ZONEMD + NSEC3 opt-out (NLnetLabs/ldns#287, fixed in
    # 1.9.0): that one combination is left to dnssec-verify and dnspython.
    if shutil.which("ldns-verify-zone") and not (options.get("zonemd") and
                                                 options.get("nsec3", True)):
        result = _run(["ldns-verify-zone", str(path)])
        assert result.returncode == 0, result.stdout + result.stderr


def _rrsig_lines(path: Path) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for line in path.read_text().splitlines()[1:]:  # after "$ORIGIN coop."
        owner, _ttl, _cls, rdtype, rdata = line.split("\t")
        if rdtype == "RRSIG":
            out.setdefault((owner, rdata.split()[0]), set()).add(rdata)
    return out


def test_resign_keeps_fresh_signatures(
    zonefile: Path, keys: list[SigningKey], tmp_path: Path
) -> None:
    first = tmp_path / "first"
    write_zone(_sign(zonefile, keys), first)
    before = _rrsig_lines(first)

    # The signed zone as input, a day later: nothing changes, every signature is kept
    # (each one verified first, since there is no separate previous version).
    stats = SignStats()
    again = tmp_path / "again"
    write_zone(_sign(first, keys, now=NOW + DAY, inception=NOW + DAY - 3600,
                     expiration=NOW + 31 * DAY, stats=stats), again)
    assert again.read_bytes() == first.read_bytes()
    assert stats.new_signatures == 0 and stats.kept_signatures == sum(map(len, before.values()))

    # One RRset edited: only its signature is new; the NSEC3 records are unchanged.
    edited = tmp_path / "edited"
    edited.write_text(first.read_text().replace("\t192.0.2.80\n", "\t192.0.2.81\n"))
    stats = SignStats()
    out = tmp_path / "out"
    write_zone(_sign(edited, keys, now=NOW + DAY, inception=NOW + DAY - 3600,
                     expiration=NOW + 31 * DAY, stats=stats), out)
    after = _rrsig_lines(out)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {("www.nic.coop.", "A")}
    assert stats.new_signatures == 1
    zone = dns.zone.from_file(str(out), ORIGIN, relativize=False)
    dnskeys = zone.find_rdataset(ORIGIN, T.DNSKEY)
    for name, _covers, covered, sig in _rrsigs(zone):
        dns.dnssec.validate_rrsig((name, covered), sig, {ORIGIN: dnskeys}, now=NOW + DAY)

    # Same edit made to the unsigned zone, with the first output as `previous`.
    zonefile.write_text(ZONE.replace("192.0.2.80", "192.0.2.81"))
    stats = SignStats()
    previous = ZoneData.from_records(read_zone_file(first, ORIGIN), ORIGIN)
    out2 = tmp_path / "out2"
    write_zone(_sign(zonefile, keys, now=NOW + DAY, inception=NOW + DAY - 3600,
                     expiration=NOW + 31 * DAY, previous=previous, stats=stats), out2)
    assert stats.new_signatures == 1
    assert _rrsig_lines(out2) == after


def test_resign_replaces_expiring_tampered_and_retired_signatures(
    zonefile: Path, keys: list[SigningKey], tmp_path: Path
) -> None:
    first = tmp_path / "first"
    write_zone(_sign(zonefile, keys), first)
    before = _rrsig_lines(first)
    # Expirations are spread over the last quarter of the window, per RRset.
    expirations = _expirations(first)
    assert min(expirations) >= EXPIRATION - 30 * DAY // 4 and max(expirations) <= EXPIRATION
    assert len(expirations) > 10

    # 20 days later with a 7-day refresh: exactly the signatures expiring within 27 days
    # of the original signing are replaced.
    later = NOW + 20 * DAY
    out = tmp_path / "later"
    write_zone(_sign(first, keys, now=later, inception=later - 3600,
                     expiration=later + 30 * DAY), out)
    after = _rrsig_lines(out)
    for k, old in before.items():
        exp = _expiration(next(iter(old)))
        if exp - later > 7 * DAY:
            assert after[k] == old, k
        else:
            assert after[k] != old and all(_inception(r) == later - 3600 for r in after[k])

    # A corrupted signature in the input is noticed and replaced.
    lines = first.read_text().splitlines(keepends=True)
    victim = next(i for i, line in enumerate(lines) if "\tRRSIG\tMX " in line)
    lines[victim] = lines[victim][:-6] + ("A" if lines[victim][-6] != "A" else "B") + \
        lines[victim][-5:]
    tampered = tmp_path / "tampered"
    tampered.write_text("".join(lines))
    stats = SignStats()
    out = tmp_path / "fixed"
    zone = _write_and_load(_sign(tampered, keys, stats=stats), out)
    assert stats.new_signatures == 1
    _check_signatures(zone, keys)

    # A new ZSK: its signatures replace the old ZSK's; the DNSKEY RRset changed, so it
    # is re-signed too; the KSK's signature over the unchanged CDS RRset stays.
    new_keys = [keys[0], generate_key(ORIGIN)]
    stats = SignStats()
    out = tmp_path / "new-zsk"
    zone = _write_and_load(_sign(first, new_keys, stats=stats), out)
    _check_signatures(zone, new_keys)
    assert stats.kept_signatures == 1
    assert _rrsig_lines(out)[("coop.", "CDS")] == before[("coop.", "CDS")]
    assert _rrsig_lines(out)[("coop.", "DNSKEY")] != before[("coop.", "DNSKEY")]


def _expiration(rdata_text: str) -> int:
    return int(dns.rdata.from_text("IN", "RRSIG", rdata_text).expiration)


def _inception(rdata_text: str) -> int:
    return int(dns.rdata.from_text("IN", "RRSIG", rdata_text).inception)


def _expirations(path: Path) -> set[int]:
    return {_expiration(r) for v in _rrsig_lines(path).values() for r in v}


def test_output_is_canonical_and_deterministic(
    zonefile: Path, keys: list[SigningKey], tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_zone(_sign(zonefile, keys), a)
    write_zone(_sign(zonefile, keys), b)
    assert a.read_bytes() == b.read_bytes()  # RFC 6979 ECDSA: same input, same bytes
    owners = []
    lines = a.read_text().splitlines()
    assert lines[0] == "$ORIGIN coop."
    for line in lines[1:]:
        fields = line.split("\t")
        assert len(fields) == 5 and fields[0].endswith(".") and fields[2] == "IN"
        owners.append(dns.name.from_text(fields[0]))
    assert owners == sorted(owners)  # canonical order (RFC 4034 §6.1)


def test_worker_processes_give_the_same_result(
    zonefile: Path, keys: list[SigningKey], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signer_module, "_PARALLEL_MIN_JOBS", 1)
    monkeypatch.setattr(signer_module, "_BATCH", 7)
    a, b = tmp_path / "a", tmp_path / "b"
    write_zone(_sign(zonefile, keys, workers=1), a)
    write_zone(_sign(zonefile, keys, workers=2), b)
    assert a.read_bytes() == b.read_bytes()

    # Streamed (batches of 7 signatures in flight while the output is written) from
    # read_zone's data, as the sign command does: the same file.
    c = tmp_path / "c"
    stream = sign_zone_iter(read_zone(zonefile, ORIGIN), ORIGIN, keys, workers=2, now=NOW,
                            inception=INCEPTION, expiration=EXPIRATION)
    assert write_zone(stream, c) == len(a.read_text().splitlines()) - 1  # $ORIGIN aside
    assert c.read_bytes() == a.read_bytes()

    # Re-signing the output, its signatures verified in the workers: all kept, but one
    # that was tampered with, which is made again.
    lines = a.read_text().splitlines(keepends=True)
    victim = next(i for i, line in enumerate(lines) if "\tRRSIG\tDS " in line)
    lines[victim] = lines[victim][:-6] + ("A" if lines[victim][-6] != "A" else "B") + \
        lines[victim][-5:]
    tampered = tmp_path / "tampered"
    tampered.write_text("".join(lines))
    for workers in (1, 2):
        stats = SignStats()
        out = tmp_path / f"again{workers}"
        write_zone(_sign(tampered, keys, workers=workers, stats=stats), out)
        assert out.read_bytes() == a.read_bytes()
        assert stats.new_signatures == 1 and stats.kept_signatures > 20


def test_sign_zone_iter_checks_before_it_streams(tmp_path: Path,
                                                 keys: list[SigningKey]) -> None:
    path = tmp_path / "nosoa.zone"
    path.write_text("$ORIGIN coop.\n$TTL 60\n@ NS a.\n")
    with pytest.raises(signer_module.SignError, match="no SOA"):
        sign_zone_iter(read_zone(path, ORIGIN), ORIGIN, keys)  # not iterated


TRICKY = """\
$ORIGIN coop.
$TTL 3600
@ SOA ns1.nic.coop. hostmaster.nic.coop. ( 1 7200 1800
     1209600 900 )
  NS ns1.nic
; a comment with ( a parenthesis
{body}
$ORIGIN sub.coop.
$TTL 60
x A 192.0.2.1
  AAAA 2001:db8::1
y TXT "semi;colon (paren" "second"
$ORIGIN coop.
z NS ns1.example.net.
multi TXT ( "one"
   "two" )
  A 192.0.2.2
"""


def _tricky(n: int) -> str:
    body = []
    for i in range(n):
        body.append(f"d{i} NS ns{i % 7}.example.net.\n   NS ns1.d{i}\nns1.d{i} A 192.0.2.{i % 250}")
        if i % 5 == 0:
            body.append(f'd{i} DS {DS1}\ntxt{i}.nic TXT "a (b" ; c )\n  TXT ( "x" )')
        if i % 11 == 0:
            body.append(f"$TTL {100 + i}")
    return TRICKY.format(body="\n".join(body))


def _zone_state(zone: ZoneData) -> list[tuple[object, ...]]:
    return sorted((rs.key, rs.rdtype, rs.covers, rs.ttl, tuple(rs.rdatas),
                   None if rs.canon is None else tuple(rs.canon)) for rs in zone.rrsets())


def test_reading_matches_the_reader(tmp_path: Path) -> None:
    # read_zone (the fast reader) gives what reader records give, directives,
    # parentheses, quotes, out-of-order RRsets, $INCLUDE and CRLF line ends included.
    path = tmp_path / "tricky.zone"
    path.write_text(_tricky(300))
    expected = ZoneData.from_records(read_zone_file(path, ORIGIN), ORIGIN, canon_all=False)
    zone = read_zone(path, ORIGIN)
    assert _zone_state(zone) == _zone_state(expected)
    assert zone.count == expected.count
    (tmp_path / "inc.zone").write_text("inc A 192.0.2.7\n")
    path.write_text(_tricky(40) + "$INCLUDE inc.zone\n")
    expected = ZoneData.from_records(read_zone_file(path, ORIGIN), ORIGIN, canon_all=False)
    assert _zone_state(read_zone(path, ORIGIN)) == _zone_state(expected)
    path.write_bytes(_tricky(40).replace("\n", "\r\n").encode())
    expected = ZoneData.from_records(read_zone_file(path, ORIGIN), ORIGIN, canon_all=False)
    assert _zone_state(read_zone(path, ORIGIN)) == _zone_state(expected)

    # Errors anywhere are reported with their file:line, as the reader reports them.
    path.write_text(_tricky(300))
    lines = path.read_text().splitlines(keepends=True)
    for at in (len(lines) // 3, 2 * len(lines) // 3):
        lines.insert(at, "broken A 999.1.2.3\n")
    lines.append("www.example. A 192.0.2.1\n")
    path.write_text("".join(lines))
    with pytest.raises(ZoneSyntaxError) as want:
        ZoneData.from_records(read_zone_file(path, ORIGIN), ORIGIN)
    with pytest.raises(ZoneSyntaxError) as got:
        read_zone(path, ORIGIN)
    assert got.value.problems == want.value.problems
    assert len(got.value.problems) == 3
    assert f"{path}:{len(lines)}: www.example. is outside the zone coop." in got.value.problems


def test_write_zone_sorts_reader_records(tmp_path: Path) -> None:
    path = tmp_path / "z"
    path.write_text("$ORIGIN coop.\n$TTL 60\nb A 192.0.2.2\n@ SOA a. b. 1 2 3 4 5\n"
                    "a A 192.0.2.1\nA A 192.0.2.1\n@ NS a.\n")
    out = tmp_path / "out"
    assert write_zone(read_zone_file(path, ORIGIN), out) == 4  # the duplicate A is one RR
    assert out.read_text().splitlines() == [
        "$ORIGIN coop.",
        "coop.\t60\tIN\tNS\ta.",
        "coop.\t60\tIN\tSOA\ta. b. 1 2 3 4 5",
        "a.coop.\t60\tIN\tA\t192.0.2.1",
        "b.coop.\t60\tIN\tA\t192.0.2.2",
    ]


def test_records_outside_the_zone_and_missing_soa(tmp_path: Path,
                                                   keys: list[SigningKey]) -> None:
    path = tmp_path / "bad.zone"
    path.write_text("$ORIGIN coop.\n$TTL 60\n@ SOA a. b. 1 2 3 4 5\n@ NS a.\n"
                    "www.example. A 192.0.2.1\n")
    with pytest.raises(ZoneSyntaxError, match=r"bad.zone:5: www.example. is outside"):
        ZoneData.from_records(read_zone_file(path, ORIGIN), ORIGIN)
    path.write_text("$ORIGIN coop.\n$TTL 60\n@ NS a.\n")
    with pytest.raises(signer_module.SignError, match="no SOA"):
        _sign(path, keys)


def test_single_key_signs_everything(zonefile: Path, tmp_path: Path) -> None:
    csk = generate_key(ORIGIN, "ed25519", ksk=True)
    zone = _write_and_load(_sign(zonefile, [csk]), tmp_path / "signed")
    dnskeys = zone.find_rdataset(ORIGIN, T.DNSKEY)
    assert len(dnskeys) == 1
    for name, _covers, covered, sig in _rrsigs(zone):
        assert sig.key_tag == csk.key_tag
        dns.dnssec.validate_rrsig((name, covered), sig, {ORIGIN: dnskeys}, now=NOW)


def test_dnskeys_in_the_zone(zonefile: Path, keys: list[SigningKey], tmp_path: Path) -> None:
    stranger = generate_key(ORIGIN)
    text = ZONE + (f"@ 7200 DNSKEY {keys[0].dnskey.to_text()}\n"
                   f"@ 7200 DNSKEY {stranger.dnskey.to_text()}\n")
    zonefile.write_text(text)
    zone = _write_and_load(_sign(zonefile, keys), tmp_path / "signed")
    dnskeys = zone.find_rdataset(ORIGIN, T.DNSKEY)
    assert {dns.dnssec.key_id(k) for k in dnskeys} == {k.key_tag for k in keys}
    assert dnskeys.ttl == 7200  # the zone's DNSKEY TTL is kept


def test_standby_keys_and_two_algorithms(zonefile: Path, keys: list[SigningKey],
                                         tmp_path: Path) -> None:
    # A pre-published ZSK is in the DNSKEY RRset but signs nothing.
    standby = generate_key(ORIGIN)
    zone = _write_and_load(_sign(zonefile, keys, standby=[standby]), tmp_path / "a")
    tags = {dns.dnssec.key_id(k) for k in zone.find_rdataset(ORIGIN, T.DNSKEY)}
    assert tags == {keys[0].key_tag, keys[1].key_tag, standby.key_tag}
    assert all(sig.key_tag != standby.key_tag for *_rest, sig in _rrsigs(zone))
    _check_signatures(zone, keys)

    # During an algorithm rollover every algorithm signs every RRset (RFC 4035 §2.2).
    csk = generate_key(ORIGIN, "ed25519", ksk=True)
    zone = _write_and_load(_sign(zonefile, [*keys, csk]), tmp_path / "b")
    dnskeys = zone.find_rdataset(ORIGIN, T.DNSKEY)
    algorithms: dict[tuple[dns.name.Name, int], set[int]] = {}
    for name, covers, covered, sig in _rrsigs(zone):
        dns.dnssec.validate_rrsig((name, covered), sig, {ORIGIN: dnskeys}, now=NOW)
        algorithms.setdefault((name, covers), set()).add(int(sig.algorithm))
    assert set(map(frozenset, algorithms.values())) == {frozenset({13, 15})}
    if shutil.which("dnssec-verify"):
        write_zone(_sign(zonefile, [*keys, csk], now=None, inception=None,
                         expiration=None), tmp_path / "c")
        # -z: the Ed25519 key is a CSK (SEP flag set, signs everything)
        result = _run(["dnssec-verify", "-z", "-o", "coop.", str(tmp_path / "c")])
        assert result.returncode == 0, result.stdout + result.stderr


def _keydir(tmp_path: Path, keys: list[SigningKey]) -> Path:
    keydir = tmp_path / "keys"
    for k in keys:
        write_key(SigningKey(k.origin, k.dnskey, k.private_key, k.algorithm, k.key_tag,
                             k.ksk), keydir)
    return keydir


def test_sign_command(zonefile: Path, keys: list[SigningKey], tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    keydir = _keydir(tmp_path, keys)
    out = tmp_path / "coop.signed"
    assert commands.main(["sign", str(zonefile), "--keys", str(keydir), "-o", str(out),
                          "--zonemd", "--validity", "10", "--jitter", "12"]) == 0
    report = capsys.readouterr().out
    assert report.startswith("signed coop. with ") and str(out) in report
    zone = dns.zone.from_file(str(out), ORIGIN, relativize=False)
    zone.verify_digest()
    assert zone.get_rdataset(ORIGIN, T.NSEC3PARAM) is not None

    # Re-sign with --previous: nothing to do, the output is the same.
    out2 = tmp_path / "coop.signed2"
    assert commands.main(["sign", str(zonefile), "-K", str(keydir), "-o", str(out2),
                          "--previous", str(out), "--nsec3", "--zonemd"]) == 0
    assert " 0 new and " in capsys.readouterr().out
    assert out2.read_bytes() == out.read_bytes()

    # A key whose Activate time is in the future is published, not used.
    later = generate_key(ORIGIN)
    now = int(time.time())
    later.timing = {"Created": now, "Publish": now - 60, "Activate": now + 86400}
    write_key(later, keydir)
    out3 = tmp_path / "coop.signed3"
    assert commands.main(["sign", str(zonefile), "-K", str(keydir), "-o", str(out3)]) == 0
    assert "does not sign" in capsys.readouterr().err
    zone = dns.zone.from_file(str(out3), ORIGIN, relativize=False)
    assert len(zone.find_rdataset(ORIGIN, T.DNSKEY)) == 3
    assert all(sig.key_tag != later.key_tag for *_rest, sig in _rrsigs(zone))

    assert commands.main(["sign", str(zonefile), "--keys", str(tmp_path / "nokeys")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a directory" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert commands.main(["sign", str(zonefile), "--keys", str(empty)]) == 1
    assert "no usable keys for coop." in capsys.readouterr().err
    zonefile.write_text(ZONE + "bad A 1.2.3\n")
    assert commands.main(["sign", str(zonefile), "--keys", str(keydir)]) == 1
    err = capsys.readouterr().err
    assert f"{zonefile}:{ZONE.count(chr(10)) + 1}:" in err


def test_nsec3_hash_matches_dnspython() -> None:
    for text in ("coop.", "*.wild.nic.coop.", "UPPER.Case.coop.", "xn--bcher-kva.coop."):
        name = dns.name.from_text(text)
        ours = b32hex(nsec3_hash(key_to_wire(key_of(name)), b"\xab\xcd", 3))
        assert ours == dns.dnssec.nsec3_hash(name, "abcd", 3, 1).lower()


ProgressCall = Callable[[str, int, int], None]


def test_progress_is_reported(zonefile: Path, keys: list[SigningKey]) -> None:
    calls: list[tuple[str, int, int]] = []
    _sign(zonefile, keys, progress=lambda *a: calls.append(a))
    assert calls and calls[-1][0] == "signing" and calls[-1][1] == calls[-1][2]


ODD_RDATA = f"""\
$ORIGIN coop.
$TTL 300
@ SOA NS1.Nic.coop. host\\.master.nic.coop. 1 2 3 4 5
@ NS ns1.nic
@ MX 10 Mail.Nic
weird\\046dot NS ns\\032x.example.
weird\\046dot DS {DS1}
sha384 DS 1 13 4 {"ab" * 48}
v4tail AAAA ::ffff:192.0.2.1
v6 AAAA 2001:DB8:0:0:1:0:0:1
ptr PTR Target.Example.
srv SRV 0 1 53 Srv.Example.
dn DNAME Other.Example.
txt TXT "a \\"quoted\\" string" plain
key DNSKEY 256 3 13 {"A" * 86}==
sig RRSIG A 13 2 300 20260101000000 20251201000000 12345 Coop. {"B" * 86}==
h NSEC3 1 1 0 - 0123456789abcdefghijklmnopqrstuv A RRSIG
p NSEC3PARAM 1 0 0 ab
n NSEC next.coop. A NS TYPE65534
u TYPE65000 \\# 3 010203
"""


def test_rdata_forms_match_dnspython(tmp_path: Path) -> None:
    # The reader hands over wire forms; the signer's text and canonical forms of them
    # must be exactly dnspython's to_text() and to_digestable().
    path = tmp_path / "odd.zone"
    path.write_text(ODD_RDATA)
    records = list(read_zone_file(path, ORIGIN))
    assert len(records) == ODD_RDATA.count("\n") - 2
    for rec in records:
        got = zonedata._rdata_forms(rec.rdtype, _rdata_parts(rec.rdata))
        assert got == (rec.rdata.to_text(), rec.rdata.to_digestable()), rec
    # read_zone (the fast reader) and reader records give the same zone data.
    expected = ZoneData.from_records(read_zone_file(path, ORIGIN), ORIGIN, canon_all=True)
    assert _zone_state(read_zone(path, ORIGIN, canon_all=True)) == _zone_state(expected)
    path.write_text(ZONE)
    expected = ZoneData.from_records(read_zone_file(path, ORIGIN), ORIGIN, canon_all=False)
    assert _zone_state(read_zone(path, ORIGIN)) == _zone_state(expected)
