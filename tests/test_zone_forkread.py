"""A zone read in two processes (nameserver.zone.forkread) is the zone read whole.

Wherever the file is cut, the tree gathered, the warnings and the problems of a bad
zone are those of the reference path; what two processes cannot read exactly as one
(a directive or an error before the cut, a failing child) is read whole instead.
"""

from __future__ import annotations

from pathlib import Path

import dns.name
import pytest
from test_zone_load import ZONES, _zone, assert_same_load, problems

from nameserver.zone import forkread, load
from nameserver.zone.fastread import read_wire_records
from nameserver.zone.forkread import ChildFailed, forked_batches, plan
from nameserver.zone.load import _compile, read_sets
from nameserver.zone.runs import build, flat_batches, gather

ORIGIN = dns.name.from_text("coop.")
DS = "12345 13 2 " + "ab" * 32


def _zone_text(n: int = 300) -> str:
    lines = [
        "coop. 3600 IN SOA ns1.nic.coop. hostmaster.nic.coop. 1 7200 1800 1209600 900",
        "coop. 3600 IN NS ns1.nic.coop.",
        "ns1.nic.coop. 3600 IN A 192.0.2.1",
        "again.coop. 3600 IN NS ns1.again.coop.",  # named again after any cut
        "ns1.again.coop. 3600 IN A 192.0.2.2",
    ]
    for i in range(n):
        lines.append(f"d{i}.coop. 3600 IN NS ns1.provider{i % 7}.example.")
        lines.append(f"\t\t3600 IN NS NS2.provider{i % 7}.example.")
        if i % 3 == 0:
            lines.append(f"\t\t3600 DS ( {DS[:20]}\n\t\t\t{DS[20:]} )")
        if i % 11 == 0:
            lines.append(f"\t\t3600 IN NS ns1.provider{i % 7}.EXAMPLE.")  # a duplicate
            lines.append(f"ns1.d{i}.coop. 3600 IN A 198.51.100.{i % 250}")
            lines.append(f"\t\t3600 AAAA 2001:db8::{i:x}")
    lines.append("AGAIN.coop. 7200 IN NS ns1.again.coop.")  # dropped: a duplicate
    lines.append("again.coop. 7200 IN DS " + DS)
    lines.append("x.d5.coop. 3600 IN TXT \"occluded\"")
    return "\n".join(lines) + "\n"


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Every file is big enough to read in two processes."""
    monkeypatch.setattr(load, "FORK_MIN_BYTES", 0)
    monkeypatch.setattr(forkread, "spare_core", lambda: True)
    return monkeypatch


@pytest.mark.parametrize("pack", [False, True], ids=["whole", "packed"])
@pytest.mark.parametrize("first", [0.05, 0.3, 0.5, 0.7, 0.97])
def test_two_processes_gather_what_one_does(tmp_path: Path, forked: pytest.MonkeyPatch,
                                            first: float, pack: bool) -> None:
    path = tmp_path / "z.zone"
    path.write_text(_zone_text())
    forked.setattr(forkread, "FIRST_PART", first)
    spans = plan(str(path))
    assert spans is not None and 0 < spans[1][0] < path.stat().st_size
    origin_key = ORIGIN.canonicalize().to_wire() if pack else None
    gathered = build(forked_batches(str(path), ORIGIN, origin_key), ORIGIN, str(path))
    assert bool(gathered.packed) == pack
    two = _compile(gathered, str(path))
    one = _compile(read_sets(path, ORIGIN, reference=True), str(path))
    assert _zone(two) == _zone(one)
    assert_same_load(path)


@pytest.mark.parametrize("where", ["first", "second", "both"])
def test_problems_are_named_as_reading_whole_names_them(
        tmp_path: Path, forked: pytest.MonkeyPatch, where: str) -> None:
    lines = _zone_text().splitlines()
    if where in ("first", "both"):
        lines[10] = "bad1.coop. 3600 IN A 192.0.2.999"
        lines.insert(20, "bad2.coop. 3600 IN NS (")  # never closed... until the next ')'
    if where in ("second", "both"):
        lines[-30] = "bad3.coop. 3600 IN A not-an-address"
        lines.append("bad4.coop. 3600 IN NS ) ")
    path = tmp_path / "z.zone"
    path.write_text("\n".join(lines) + "\n")
    forked.setattr(forkread, "FIRST_PART", 0.5)
    found = problems(path, reference=False)
    assert found and found == problems(path, reference=True)
    if where == "second":
        with pytest.raises(load.ZoneSyntaxError) as e:
            list(forked_batches(str(path), ORIGIN))
        assert e.value.problems == found
    else:
        with pytest.raises(ChildFailed):
            list(forked_batches(str(path), ORIGIN))


def test_directive_before_the_cut_means_no_cut(tmp_path: Path) -> None:
    path = tmp_path / "z.zone"
    path.write_text("$TTL 3600\n" + _zone_text())
    assert plan(str(path)) is None
    path.write_text(_zone_text().replace("\n", "\r\n"))
    assert plan(str(path)) is None
    path.write_text(_zone_text() + "$ORIGIN example.\n")  # after the cut: fine
    assert plan(str(path)) is not None


def test_a_failing_child_means_reading_whole(tmp_path: Path, forked: pytest.MonkeyPatch
                                             ) -> None:
    path = tmp_path / "z.zone"
    path.write_text(_zone_text())
    real = forkread.read_wire_records

    def first_part_fails(path: str, origin: dns.name.Name, span: object) -> object:
        if span[1] == 0:  # type: ignore[index]
            raise RuntimeError("boom")
        return real(path, origin, span)  # type: ignore[arg-type]

    forked.setattr(forkread, "read_wire_records", first_part_fails)
    with pytest.raises(ChildFailed, match="boom"):
        list(forked_batches(str(path), ORIGIN))
    assert_same_load(path)  # read whole


def test_no_spare_core_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forkread.os, "sched_getaffinity", lambda pid: {0})
    assert not forkread.spare_core()
    monkeypatch.setattr(forkread.os, "sched_getaffinity", lambda pid: set(range(4096)))
    assert forkread.spare_core()


@pytest.mark.parametrize("path", [*ZONES, None], ids=lambda p: p.name if p else "generated")
def test_runs_build_what_records_gather(tmp_path: Path, path: Path | None) -> None:
    if path is None:
        path = tmp_path / "z.zone"
        path.write_text(_zone_text())
    runs = build(flat_batches(read_wire_records(path, ORIGIN), str(path)), ORIGIN, str(path))
    records = gather(read_wire_records(path, ORIGIN), ORIGIN, str(path))
    assert runs.count == records.count
    assert [n.name.wire for n in runs.owners] == [n.name.wire for n in records.owners]
    whole = _zone(_compile(records, str(path)))
    assert _zone(_compile(runs, str(path))) == whole
    origin_key = ORIGIN.canonicalize().to_wire()
    packed = build(flat_batches(read_wire_records(path, ORIGIN), str(path), origin_key),
                   ORIGIN, str(path))
    assert packed.count == records.count
    assert _zone(_compile(packed, str(path))) == whole


def test_leading_origin_of_the_zone_allows_a_cut(tmp_path: Path, forked: pytest.MonkeyPatch
                                                 ) -> None:
    """``nameserver sign`` starts its files with ``$ORIGIN <apex>``: the same state the
    readers start in, so the file is still read in two, with the same result."""
    path = tmp_path / "z.zone"
    path.write_text("$ORIGIN coop.\n" + _zone_text())
    spans = plan(str(path), ORIGIN)
    assert spans is not None
    assert spans[1][1] == path.read_bytes()[: spans[1][0]].count(b"\n")  # line numbers
    two = _compile(build(forked_batches(str(path), ORIGIN), ORIGIN, str(path)), str(path))
    one = _compile(read_sets(path, ORIGIN, reference=True), str(path))
    assert _zone(two) == _zone(one)
    assert_same_load(path)
    for other in ("$ORIGIN example.\n", "$ORIGIN coop.\n$TTL 60\n"):
        path.write_text(other + _zone_text())
        assert plan(str(path), ORIGIN) is None

