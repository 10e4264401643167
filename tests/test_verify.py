"""The DNSSEC safety net: signatures (check_signatures) and ZONEMD (check_zonemd).

Zones are signed here with BIND's dnssec-keygen and dnssec-signzone from
tests/data/verify-coop.zone and read with the loader's own reading code.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.zone
import pytest

from nameserver.dnssec.verify import MAX_LINES, _sample, check_signatures
from nameserver.dnssec.zonemd import check_zonemd, zone_digest
from nameserver.zone.load import read_sets
from nameserver.zone.sets import Gathered

DATA = Path(__file__).resolve().parent / "data"
SOURCE = DATA / "verify-coop.zone"
ORIGIN = dns.name.from_text("coop.")
NSEC3 = ["-3", "-", "-H", "0", "-A"]
DAY = 86400

pytestmark = pytest.mark.skipif(
    shutil.which("dnssec-signzone") is None or shutil.which("dnssec-keygen") is None,
    reason="BIND's dnssec-keygen and dnssec-signzone are needed (apt-get install bind9-utils)",
)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def make_keys(directory: Path, *algorithms: str, extra: tuple[str, ...] = ()) -> Path:
    """A KSK and a ZSK per algorithm for coop. in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for algorithm in algorithms or ("ECDSAP256SHA256",):
        for flags in (["-f", "KSK"], []):
            _run(["dnssec-keygen", "-q", "-a", algorithm, *flags, *extra, "-K", ".", "coop"],
                 directory)
    return directory


def sign(keys: Path, out: Path, *options: str, source: Path = SOURCE) -> Path:
    """Sign ``source`` with every key in ``keys`` (smart signing) into ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    unsigned = out.with_suffix(".unsigned")
    shutil.copyfile(source, unsigned)
    _run(["dnssec-signzone", "-K", str(keys), "-o", "coop.", "-S", *options,
          "-f", str(out), str(unsigned)], out.parent)
    return out


def read(path: Path) -> Gathered:
    return read_sets(path, ORIGIN)


def check(path: Path, **kwargs: object):
    return check_signatures(ORIGIN, read(path), **kwargs)  # type: ignore[arg-type]


def key_records(keys: Path) -> list[dns.rdata.Rdata]:
    """The DNSKEY records of the .key files in ``keys``."""
    records = []
    for path in sorted(keys.glob("K*.key")):
        for line in path.read_text().splitlines():
            if line and not line.startswith(";"):
                fields = line.split()
                at = fields.index("DNSKEY")
                records.append(dns.rdata.from_text("IN", "DNSKEY", " ".join(fields[at + 1:])))
    return records


def key_tags(keys: Path) -> set[int]:
    return {dns.dnssec.key_id(k) for k in key_records(keys)}  # type: ignore[arg-type]


def rewrite(path: Path, edit) -> Path:
    """Read ``path`` with dnspython, apply ``edit(zone)``, write it back; return it."""
    zone = dns.zone.from_file(str(path), ORIGIN, relativize=False)
    edit(zone)
    zone.to_file(str(path), relativize=False)
    return path


def lines_of(problems: list[str], path: Path) -> list[str]:
    """The zone-file lines the problems point at (each must be ``path:line: ...``)."""
    text = path.read_text().splitlines()
    pointed = []
    for problem in problems:
        m = re.match(rf"^{re.escape(str(path))}:(\d+): \S", problem)
        assert m, f"not file:line: reason: {problem!r}"
        pointed.append(text[int(m.group(1)) - 1])
    return pointed


def rrsig_facts(path: Path) -> tuple[int, int]:
    """(smallest RRSIG expiration, number of RRsets signed) read by dnspython."""
    zone = dns.zone.from_file(str(path), ORIGIN, relativize=False)
    expirations = []
    covered = set()
    for name, _ttl, rd in zone.iterate_rdatas():
        if rd.rdtype != dns.rdatatype.RRSIG:
            continue
        expirations.append(rd.expiration)  # type: ignore[attr-defined]
        covered.add((name, rd.type_covered))  # type: ignore[attr-defined]
    return min(expirations), len(covered)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_keys(tmp_path_factory.mktemp("keys-a"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_keys(tmp_path_factory.mktemp("keys-b"))


# ---------------------------------------------------------------------------
# check_signatures
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("denial", [NSEC3, []], ids=["nsec3", "nsec"])
def test_good_signed_zone_passes(keys: Path, tmp_path: Path, denial: list[str]) -> None:
    # DNSKEY signatures live longer than the others (-X): the earliest is the others'.
    path = sign(keys, tmp_path / "coop.signed", *denial, "-e", "now+20d", "-X", "now+40d")
    earliest, signed_rrsets = rrsig_facts(path)
    report = check(path, sample=10_000)
    assert report.signed
    assert report.problems == []
    assert report.earliest_expiry == earliest
    assert time.time() + 19 * DAY < earliest < time.time() + 21 * DAY
    assert report.checked == signed_rrsets  # every authoritative RRset, apex ones included
    # the default sample also covers this small zone; sample=0 checks the apex only
    assert check(path).checked == signed_rrsets
    apex = 4 if denial else 3  # DNSKEY, SOA, NS (+ NSEC3PARAM)
    assert check(path, sample=0).checked == apex


def test_unsigned_zone_is_not_signed() -> None:
    report = check(SOURCE)
    assert report == type(report)(False, [], None, 0)


def test_expired_signatures(keys: Path, tmp_path: Path) -> None:
    path = sign(keys, tmp_path / "coop.signed", "-P", "-s", "now-30d", "-e", "now-1d")
    report = check(path)
    assert report.signed
    assert report.problems
    assert report.earliest_expiry is not None and report.earliest_expiry < time.time()
    assert len(report.problems) <= MAX_LINES + 1
    pointed = lines_of(report.problems, path)
    assert all("RRSIG" in line for line in pointed[:MAX_LINES])
    assert all(re.search(r" expired at 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC", p)
               for p in report.problems[:MAX_LINES])
    assert "RRSIG SOA coop." in report.problems[0]
    assert "and " in report.problems[-1] and "more RRSIGs" in report.problems[-1]


def test_signatures_expiring_within_the_margin(keys: Path, tmp_path: Path) -> None:
    path = sign(keys, tmp_path / "coop.signed", "-e", "now+1h")
    report = check(path, margin=3 * DAY)
    assert report.problems
    lines_of(report.problems, path)
    assert "less than 3 days from now" in report.problems[0]
    assert check(path, margin=0).problems == []
    assert check(path, margin=0, now=time.time() + 2 * 3600).problems != []


def test_signature_inception_in_the_future(keys: Path, tmp_path: Path) -> None:
    path = sign(keys, tmp_path / "coop.signed", "-P", "-s", "now+1d", "-e", "now+30d")
    report = check(path)
    assert report.problems
    assert "is not valid before" in report.problems[0]
    # within the clock-skew allowance: fine
    assert check(path, now=time.time() + DAY - 600).problems == []


def test_signed_with_a_key_not_in_the_dnskey_set(
    keys: Path, other_keys: Path, tmp_path: Path
) -> None:
    path = sign(keys, tmp_path / "coop.signed", *NSEC3)

    def swap_keys(zone: dns.zone.Zone) -> None:
        zone.replace_rdataset(ORIGIN, dns.rdataset.from_rdata_list(3600, key_records(other_keys)))

    rewrite(path, swap_keys)
    report = check(path)
    assert report.signed
    problems = "\n".join(report.problems)
    for tag in key_tags(keys):
        assert f"signed with key tag {tag} which is not in the DNSKEY set" in problems
    assert "coop. DNSKEY is not signed by any of its SEP keys (KSK)" in problems
    assert "coop. SOA does not validate" in problems
    pointed = lines_of(report.problems, path)
    assert any(" DNSKEY " in line for line in pointed)


def test_tampered_record_in_the_sample(keys: Path, tmp_path: Path) -> None:
    path = sign(keys, tmp_path / "coop.signed", *NSEC3)
    text = path.read_text()
    assert text.count("192.0.2.80") == 1
    path.write_text(text.replace("192.0.2.80", "192.0.2.81"))
    report = check(path, sample=10_000)
    assert len(report.problems) == 1, report.problems
    assert "www.nic.coop. A does not validate with the DNSKEY set" in report.problems[0]
    assert "verify failure" in report.problems[0]  # dnspython's reason
    assert lines_of(report.problems, path) == [
        line for line in path.read_text().splitlines() if "192.0.2.81" in line
    ]
    # outside the sample it goes unnoticed: only the apex is validated then
    assert check(path, sample=0).problems == []


def test_record_without_rrsig(keys: Path, tmp_path: Path) -> None:
    path = sign(keys, tmp_path / "coop.signed", *NSEC3)
    with open(path, "a") as f:
        f.write("added.nic.coop. 3600 IN A 192.0.2.77\n")
    report = check(path)
    assert report.problems == [
        f"{path}:{len(path.read_text().splitlines())}: added.nic.coop. A has no RRSIG"
    ]


def test_missing_rrsig_found_across_the_whole_zone(keys: Path, tmp_path: Path) -> None:
    path = sign(keys, tmp_path / "coop.signed")  # NSEC

    def drop_sigs(zone: dns.zone.Zone) -> None:
        zone.delete_rdataset("signed.coop.", "RRSIG", "DS")
        zone.delete_rdataset("www.nic.coop.", "RRSIG", "NSEC")

    rewrite(path, drop_sigs)
    report = check(path, sample=0)
    assert sorted(p.split(": ", 1)[1] for p in report.problems) == [
        "signed.coop. DS has no RRSIG",
        "www.nic.coop. NSEC has no RRSIG",
    ]
    assert sorted(line.split()[3] for line in lines_of(report.problems, path)) == ["DS", "NSEC"]


def test_every_dnskey_algorithm_must_sign_every_rrset(keys: Path, tmp_path: Path) -> None:
    both = make_keys(tmp_path / "keys", "ECDSAP256SHA256", "ECDSAP384SHA384")
    path = sign(both, tmp_path / "coop.signed", *NSEC3)
    assert check(path, sample=10_000).problems == []

    def drop_p384(zone: dns.zone.Zone) -> None:
        node = zone.get_node("www.nic.coop.")
        rrsigs = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.A)
        kept = [rd for rd in rrsigs if rd.algorithm != 14]  # type: ignore[attr-defined]
        node.replace_rdataset(dns.rdataset.from_rdata_list(rrsigs.ttl, kept))

    rewrite(path, drop_p384)
    assert check(path).problems == [
        f"{path}:{lines_of_text(path, 'www.nic.coop.', ' A ')}: www.nic.coop. A has no RRSIG "
        "with algorithm ECDSAP384SHA384 (14) (the DNSKEY RRset has)"
    ]


def lines_of_text(path: Path, *parts: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if all(part in line for part in parts):
            return number
    raise AssertionError(f"no line with {parts} in {path}")


def test_key_published_ahead_of_an_algorithm_rollover(keys: Path, tmp_path: Path) -> None:
    # A P-384 key pair published but not yet active (like BIND's dnssec-verify: fine).
    mixed = tmp_path / "keys"
    shutil.copytree(keys, mixed)
    make_keys(mixed, "ECDSAP384SHA384", extra=("-P", "now", "-A", "now+365d"))
    path = sign(mixed, tmp_path / "coop.signed", *NSEC3)
    assert len(key_records(mixed)) == 4
    assert check(path, sample=10_000).problems == []


def test_dnskey_without_signatures(keys: Path, tmp_path: Path) -> None:
    path = tmp_path / "coop.zone"
    text = SOURCE.read_text()
    path.write_text(text + "".join(f"coop. 3600 IN DNSKEY {k}\n" for k in key_records(keys)))
    report = check(path)
    assert not report.signed
    assert len(report.problems) == 1
    assert "has a DNSKEY RRset but no RRSIG records" in report.problems[0]
    assert "DNSKEY" in lines_of(report.problems, path)[0]


def test_signatures_without_dnskey(keys: Path, tmp_path: Path) -> None:
    path = rewrite(sign(keys, tmp_path / "coop.signed", *NSEC3),
                   lambda zone: zone.delete_rdataset(ORIGIN, "DNSKEY"))
    report = check(path)
    assert not report.signed
    assert len(report.problems) == 1
    assert "RRSIG records but no DNSKEY RRset" in report.problems[0]
    assert report.earliest_expiry == rrsig_facts(path)[0]


def test_many_problems_are_capped(keys: Path, tmp_path: Path) -> None:
    source = tmp_path / "big.zone"
    hosts = "".join(f"h{i}.nic IN A 192.0.2.{i}\n" for i in range(1, 60))
    source.write_text(SOURCE.read_text() + "$ORIGIN coop.\n" + hosts)
    path = sign(keys, tmp_path / "coop.signed", "-P", "-s", "now-30d", "-e", "now-1d",
                source=source)
    report = check(path)
    assert len(report.problems) == MAX_LINES + 1
    last = report.problems[-1]
    count = int(re.search(r": and (\d+) more RRSIGs", last).group(1))  # type: ignore[union-attr]
    assert count + MAX_LINES == rrsig_count(path)
    assert "RRSIG" in lines_of([last], path)[0]


def rrsig_count(path: Path) -> int:
    zone = dns.zone.from_file(str(path), ORIGIN, relativize=False)
    return sum(rd.rdtype == dns.rdatatype.RRSIG for _name, _ttl, rd in zone.iterate_rdatas())


def test_sample_is_deterministic_and_covers_every_kind() -> None:
    pools = ([f"ds{i}" for i in range(50)], [f"nsec3-{i}" for i in range(300)],
             [f"other{i}" for i in range(5)])
    chosen = _sample(pools, 30, seed=7)
    assert chosen == _sample(pools, 30, seed=7)
    assert chosen != _sample(pools, 30, seed=8)
    assert len(chosen) == len(set(chosen)) == 30
    kinds = [sum(x.startswith(p) for x in chosen) for p in ("ds", "nsec3", "other")]
    assert kinds == [13, 12, 5]  # the small pool whole, the rest shared
    assert len(_sample(pools, 10_000, seed=0)) == 355
    assert _sample(pools, 0, seed=0) == []


# ---------------------------------------------------------------------------
# check_zonemd
# ---------------------------------------------------------------------------


def with_zonemd(path: Path, out: Path, hash_algorithm: int = 1, serial_delta: int = 0) -> Path:
    """``path`` plus an apex ZONEMD computed by dnspython, written to ``out``."""
    zone = dns.zone.from_file(str(path), ORIGIN, relativize=False)
    zonemd = zone.compute_digest(dns.zone.DigestHashAlgorithm(hash_algorithm))
    text = zonemd.to_text()
    if serial_delta:
        text = f"{zonemd.serial + serial_delta} " + text.split(" ", 1)[1]
    out.write_text(path.read_text() + f"coop. 3600 IN ZONEMD {text}\n")
    return out


@pytest.mark.parametrize("hash_algorithm", [1, 2], ids=["sha384", "sha512"])
def test_zonemd_good(tmp_path: Path, hash_algorithm: int) -> None:
    path = with_zonemd(SOURCE, tmp_path / "coop.zone", hash_algorithm)
    assert check_zonemd(ORIGIN, read(path)) == []


def test_zonemd_tampered(tmp_path: Path) -> None:
    path = with_zonemd(SOURCE, tmp_path / "coop.zone")
    text = path.read_text()
    path.write_text(text.replace("192.0.2.80", "192.0.2.81"))
    problems = check_zonemd(ORIGIN, read(path))
    assert problems == [f"{path}:{len(text.splitlines())}: ZONEMD digest does not match the zone"]


def test_zonemd_absent_or_unsupported(tmp_path: Path) -> None:
    assert check_zonemd(ORIGIN, read(SOURCE)) == []
    path = tmp_path / "coop.zone"
    path.write_text(SOURCE.read_text() + f"coop. 3600 IN ZONEMD 2024060101 1 240 {'ab' * 48}\n")
    assert check_zonemd(ORIGIN, read(path)) == []  # a private hash: cannot tell


def test_zonemd_serial_mismatch(tmp_path: Path) -> None:
    path = with_zonemd(SOURCE, tmp_path / "coop.zone", serial_delta=1)
    problems = check_zonemd(ORIGIN, read(path))
    assert len(problems) == 1
    assert "ZONEMD serial 2024060102 does not match the SOA serial 2024060101" in problems[0]
    assert "ZONEMD" in lines_of(problems, path)[0]


def test_zonemd_duplicate_scheme_and_hash(tmp_path: Path) -> None:
    path = with_zonemd(SOURCE, tmp_path / "coop.zone")
    path.write_text(path.read_text() + f"coop. 3600 IN ZONEMD 2024060101 1 1 {'ab' * 48}\n")
    problems = check_zonemd(ORIGIN, read(path))
    assert len(problems) == 1
    assert "more than one ZONEMD record with scheme 1 and hash algorithm 1" in problems[0]


def test_zonemd_one_good_record_is_enough(tmp_path: Path) -> None:
    path = with_zonemd(SOURCE, tmp_path / "coop.zone", 1)
    path.write_text(path.read_text() + f"coop. 3600 IN ZONEMD 2024060101 1 2 {'ab' * 64}\n")
    assert check_zonemd(ORIGIN, read(path)) == []


def test_zonemd_of_a_signed_zone(keys: Path, tmp_path: Path) -> None:
    # RRSIGs at one owner with different TTLs (NSEC3PARAM's is 0): each counts with
    # the TTL of the RRset it covers, as dnspython's own digest has it.
    signed = sign(keys, tmp_path / "coop.signed", *NSEC3)
    digest = dns.zone.from_file(str(signed), ORIGIN, relativize=False)._compute_digest(
        dns.zone.DigestHashAlgorithm.SHA384
    )
    assert zone_digest(ORIGIN, read(signed), {1}) == {1: digest}
    path = with_zonemd(signed, tmp_path / "coop.zonemd")
    assert check_zonemd(ORIGIN, read(path)) == []
