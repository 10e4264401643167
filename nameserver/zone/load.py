"""Load a zone file into a checked, immutable :class:`~nameserver.zone.tree.Zone`.

Errors refuse the zone and name ``file:line: reason``; warnings are reported and
the zone is still served (named-checkzone's split between the two is the model).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field

import dns.name
import dns.rdata
import dns.rdatatype

from nameserver.dnssec.verify import check_signatures
from nameserver.dnssec.zonemd import check_zonemd
from nameserver.wire import WireName
from nameserver.zone.denial import Nsec3Chain, NsecChain, nsec3_owner_hash
from nameserver.zone.reader import Record, Where, ZoneSyntaxError, read_zone_file
from nameserver.zone.tree import (
    AAAA,
    CNAME,
    DNAME,
    DS,
    NS,
    NSEC,
    NSEC3,
    NSEC3PARAM,
    RRSIG,
    SOA,
    A,
    Node,
    RRset,
    Zone,
)

DEFAULT_EXPIRY_MARGIN = 3 * 86400.0  # seconds: refuse signatures expiring sooner

# Types that may sit beside a CNAME (RFC 2181 §10.1, RFC 4035 §2.5).
_BESIDE_CNAME = frozenset({CNAME, RRSIG, dns.rdatatype.NSEC})
# Types that belong to the parent at a delegation point.
_AT_CUT = frozenset({NS, DS, RRSIG, dns.rdatatype.NSEC})


class ZoneError(Exception):
    """The zone was refused; ``problems`` lists every ``file:line: reason``."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class LoadResult:
    zone: Zone
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Set:
    """Records of one (owner, type) gathered while reading."""

    name: dns.name.Name
    rdtype: int
    ttl: int
    where: Where
    rdatas: list[dns.rdata.Rdata] = field(default_factory=list)


def load_zone(
    path: str | os.PathLike[str],
    origin: dns.name.Name | str,
    *,
    expiry_margin: float = DEFAULT_EXPIRY_MARGIN,
    now: float | None = None,
) -> LoadResult:
    """Read, check and compile a zone file; raise ZoneError with every problem found.

    A signed zone must also pass the DNSSEC safety net (:mod:`nameserver.dnssec.verify`:
    no RRSIG expired or expiring within ``expiry_margin`` seconds, the keys and a sample
    of RRsets validate), and a ZONEMD, if present, must match the zone.
    """
    started = time.monotonic()
    if isinstance(origin, str):
        origin = dns.name.from_text(origin)
    path = os.fspath(path)
    try:
        sets, count = _gather(read_zone_file(path, origin))
    except ZoneSyntaxError as e:
        raise ZoneError(e.problems) from None
    warnings: list[str] = []
    errors = _check(path, origin, sets, warnings)
    if errors:
        raise ZoneError(errors)
    report = check_signatures(origin, sets, now=now, margin=expiry_margin)
    errors = report.problems + check_zonemd(origin, sets)
    if errors:
        raise ZoneError(errors)
    zone = _compile(origin, sets, path, count)
    zone.earliest_expiry = report.earliest_expiry
    return LoadResult(zone, warnings, time.monotonic() - started)


def _gather(records: object) -> tuple[dict[dns.name.Name, dict[int, _Set]], int]:
    sets: dict[dns.name.Name, dict[int, _Set]] = defaultdict(dict)
    count = 0
    for rec in records:  # type: ignore[attr-defined]
        assert isinstance(rec, Record)
        by_type = sets[rec.name]
        s = by_type.get(rec.rdtype)
        if s is None:
            s = by_type[rec.rdtype] = _Set(rec.name, rec.rdtype, rec.ttl, rec.where)
        elif rec.rdata in s.rdatas:
            continue  # RFC 2181 §5: an RRset has no duplicate records
        # RFC 2181 §5.2: one TTL per RRset; like BIND, the first one stated wins.
        s.rdatas.append(rec.rdata)
        count += 1
    return sets, count


def _check(
    path: str,
    origin: dns.name.Name,
    sets: dict[dns.name.Name, dict[int, _Set]],
    warnings: list[str],
) -> list[str]:
    errors: list[str] = []
    apex = sets.get(origin, {})
    for name, by_type in sets.items():
        first = next(iter(by_type.values()))
        if not name.is_subdomain(origin):
            errors.append(f"{first.where}: {name} is outside the zone {origin}")
            continue
        if SOA in by_type and name != origin:
            where = by_type[SOA].where
            errors.append(f"{where}: SOA record for {name} is not at the apex {origin}")
        if CNAME in by_type:
            cname = by_type[CNAME]
            others = [t for t in by_type if t not in _BESIDE_CNAME]
            if others:
                listed = ", ".join(dns.rdatatype.to_text(t) for t in others)
                errors.append(f"{cname.where}: CNAME at {name} beside other data ({listed})")
            if len(cname.rdatas) > 1:
                errors.append(f"{cname.where}: more than one CNAME record at {name}")
        if DNAME in by_type and len(by_type[DNAME].rdatas) > 1:
            errors.append(f"{by_type[DNAME].where}: more than one DNAME record at {name}")
    if SOA not in apex:
        errors.append(f"{path}: no SOA record at the zone apex {origin}")
    elif len(apex[SOA].rdatas) > 1:
        errors.append(f"{apex[SOA].where}: more than one SOA record at {origin}")
    if NS not in apex:
        errors.append(f"{path}: no NS records at the zone apex {origin}")
    if not errors:
        warnings.extend(_occlusion_and_glue(origin, sets))
    return errors


def _occlusion_and_glue(
    origin: dns.name.Name, sets: dict[dns.name.Name, dict[int, _Set]]
) -> list[str]:
    warnings: list[str] = []
    cuts = {n for n, by in sets.items() if NS in by and n != origin}
    dnames = {n for n, by in sets.items() if DNAME in by}
    ns_targets: dict[dns.name.Name, Where] = {}
    for _name, by_type in sets.items():
        if NS in by_type:
            for rd in by_type[NS].rdatas:
                ns_targets.setdefault(rd.target, by_type[NS].where)  # type: ignore[attr-defined]

    def below(name: dns.name.Name, tops: set[dns.name.Name]) -> dns.name.Name | None:
        parent = name
        while parent != origin and len(parent) > 1:
            parent = parent.parent()
            if parent in tops:
                return parent
        return None

    for name, by_type in sets.items():
        cut = below(name, cuts)
        if cut is not None:
            for t, s in by_type.items():
                if t in (A, AAAA) and name in ns_targets:
                    continue  # glue
                warnings.append(
                    f"{s.where}: {name} {dns.rdatatype.to_text(t)} is below the delegation "
                    f"{cut} (occluded: kept, never served)"
                )
        elif name in cuts:
            for t, s in by_type.items():
                if t not in _AT_CUT:
                    warnings.append(
                        f"{s.where}: {name} {dns.rdatatype.to_text(t)} is at the delegation "
                        f"{name} (occluded: kept, never served)"
                    )
        dname_top = below(name, dnames)
        if dname_top is not None:
            s = next(iter(by_type.values()))
            warnings.append(
                f"{s.where}: {name} is below the DNAME at {dname_top} "
                "(occluded: kept, never served)"
            )
    for target, where in ns_targets.items():
        if target.is_subdomain(origin):
            by_type = sets.get(target, {})
            if A not in by_type and AAAA not in by_type:
                warnings.append(f"{where}: name server {target} has no address records (glue)")
    return warnings


def _compile(
    origin: dns.name.Name, sets: dict[dns.name.Name, dict[int, _Set]], path: str, count: int
) -> Zone:
    apex = Node(WireName.from_name(origin))
    origin_len = len(origin)
    nsec3_records: list[tuple[dns.name.Name, RRset]] = []
    for name, by_type in sets.items():
        owner = WireName.from_name(name)
        rrsets = _rrsets(owner, by_type)
        nsec3 = rrsets.pop(NSEC3, None)
        if nsec3 is not None:
            # NSEC3 owners are hashes, not names of the zone: they live in the chain index.
            nsec3_records.append((name, nsec3))
            rrsets.pop(RRSIG, None)
            if not rrsets:
                continue
        node = apex
        labels = name.labels[: len(name) - origin_len]
        for depth in range(len(labels) - 1, -1, -1):
            label = labels[depth].lower()
            child = node.children.get(label)
            if child is None:
                child = Node(WireName(dns.name.Name(labels[depth:] + origin.labels).to_wire()))
                node.children[label] = child
                if label == b"*":
                    node.wildcard = child
            node = child
        node.rrsets = rrsets
        if node is not apex and NS in rrsets:
            node.cut = True
        node.dname = rrsets.get(DNAME)
    zone = Zone(apex.name, apex, path, count)
    zone.nsec3 = _nsec3_chain(apex, nsec3_records)
    if zone.nsec3 is None:
        zone.nsec = _nsec_chain(apex)
    return zone


def _rrsets(owner: WireName, by_type: dict[int, _Set]) -> dict[int, RRset]:
    """Prepared RRsets of one owner, each with the RRSIGs that cover it attached."""
    rrsets = {t: RRset.from_rdatas(owner, t, s.ttl, s.rdatas) for t, s in by_type.items()}
    if RRSIG in by_type:
        sigs_by_type: dict[int, list[dns.rdata.Rdata]] = defaultdict(list)
        for rd in by_type[RRSIG].rdatas:
            sigs_by_type[rd.type_covered].append(rd)  # type: ignore[attr-defined]
        for covered, rds in sigs_by_type.items():
            target = rrsets.get(covered)
            if target is not None:
                # RFC 4034 §3: an RRSIG's TTL is that of the RRset it covers.
                target.sigs = RRset.from_rdatas(owner, RRSIG, target.ttl, rds)
    return rrsets


def _nsec3_chain(apex: Node, records: list[tuple[dns.name.Name, RRset]]) -> Nsec3Chain | None:
    """The chain of the apex's NSEC3PARAM (or of the first NSEC3 if there is none)."""
    if not records:
        return None
    param = apex.rrsets.get(NSEC3PARAM)
    wire = param.rdatas[0] if param is not None else records[0][1].rdatas[0]
    assert isinstance(wire, bytes)
    # RDATA after the 2-byte length: algorithm, flags, iterations(2), salt length, salt.
    algorithm, iterations = wire[2], int.from_bytes(wire[4:6], "big")
    salt = wire[7 : 7 + wire[6]]
    chain = []
    for name, rrset in records:
        rd = rrset.rdatas[0]
        assert isinstance(rd, bytes)
        digest = nsec3_owner_hash(name.labels[0])
        same_params = rd[2] == algorithm and rd[4 : 7 + rd[6]] == wire[4 : 7 + wire[6]]
        if digest is not None and same_params:
            chain.append((digest, rrset))
    return Nsec3Chain(iterations, salt, chain) if algorithm == 1 and chain else None


def _nsec_chain(apex: Node) -> NsecChain | None:
    records = []
    stack = [apex]
    while stack:
        node = stack.pop()
        nsec = node.rrsets.get(NSEC)
        if nsec is not None:
            records.append((node.name.key, nsec))
        stack.extend(node.children.values())
    return NsecChain(records) if records else None
