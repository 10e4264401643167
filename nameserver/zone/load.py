"""Load a zone file into a checked, immutable :class:`~nameserver.zone.tree.Zone`.

Errors refuse the zone and name ``file:line: reason``; warnings are reported and
the zone is still served (named-checkzone's split between the two is the model).

Built for a TLD of a million delegations: records are read straight to wire form
(:mod:`nameserver.zone.fastread`) and gathered into the very label tree that will be
served (:mod:`nameserver.zone.sets`); the checks and the DNSSEC safety net read that
wire form, and compiling turns each gathered set into its RRset in place. The
cyclic garbage collector is off meanwhile (nothing made here is garbage), and what
was made is frozen out of its sight once loaded (:func:`gc.freeze`). A big file is
read in two processes (:mod:`nameserver.zone.forkread`).
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field

import dns.name
import dns.rdatatype

from nameserver.dnssec.verify import check_signatures, packed_signatures_hold
from nameserver.dnssec.zonemd import check_zonemd
from nameserver.wire import WireName
from nameserver.zone.denial import Nsec3Chain, NsecChain, nsec3_owner_hash
from nameserver.zone.fastread import b32hex_whole, read_wire_records, reference_records
from nameserver.zone.forkread import ChildFailed, forked_batches
from nameserver.zone.packed import runs_of
from nameserver.zone.reader import ZoneSyntaxError
from nameserver.zone.runs import Builder, build, flat_batches, gather
from nameserver.zone.sets import Gathered, SetData
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
_ADDRESSES = frozenset({A, AAAA})


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



def load_zone(
    path: str | os.PathLike[str],
    origin: dns.name.Name | str,
    *,
    expiry_margin: float = DEFAULT_EXPIRY_MARGIN,
    now: float | None = None,
    reference: bool = False,
) -> LoadResult:
    """Read, check and compile a zone file; raise ZoneError with every problem found.

    A signed zone must also pass the DNSSEC safety net (:mod:`nameserver.dnssec.verify`:
    no RRSIG expired or expiring within ``expiry_margin`` seconds, the keys and a sample
    of RRsets validate), and a ZONEMD, if present, must match the zone.

    ``reference`` reads every record with dnspython (the slow path the fast reader of
    :mod:`nameserver.zone.fastread` is tested against); the result is the same.
    """
    started = time.monotonic()
    if isinstance(origin, str):
        origin = dns.name.from_text(origin)
    path = os.fspath(path)
    # Millions of objects are made and none is garbage: the cyclic collector would
    # walk them all again and again for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        result = _load(path, origin, expiry_margin, now, reference, started)
        # And they live as long as the zone: out of its sight for good. Otherwise its
        # next collections walk them all (the young one first: all were made while it
        # was off), seconds for a big zone before the server can start.
        gc.freeze()
        return result
    finally:
        if enabled:
            gc.enable()


def _load(
    path: str, origin: dns.name.Name, expiry_margin: float, now: float | None,
    reference: bool, started: float,
) -> LoadResult:
    try:
        # The reference path, to test the fast one against, keeps nothing packed.
        zone = read_sets(path, origin, reference=reference, pack=not reference)
        if zone.packed and not _packed_hold(zone, now, expiry_margin):
            # Something to report about a packed delegation, or every name needed: read
            # again without packing, to check each as it stands in the file.
            zone = read_sets(path, origin, reference=reference)
    except ZoneSyntaxError as e:
        raise ZoneError(e.problems) from None
    warnings: list[str] = []
    errors = _check(path, zone, warnings)
    if errors:
        raise ZoneError(errors)
    report = check_signatures(origin, zone, now=now, margin=expiry_margin)
    errors = report.problems + check_zonemd(origin, zone)
    if errors:
        raise ZoneError(errors)
    compiled = _compile(zone, path)
    compiled.earliest_expiry = report.earliest_expiry
    return LoadResult(compiled, warnings, time.monotonic() - started)


# Files at least this big are read by a child process while this one builds the tree
# (nameserver.zone.forkread); smaller ones are not worth a fork.
FORK_MIN_BYTES = 16 << 20


def read_sets(
    path: str | os.PathLike[str],
    origin: dns.name.Name,
    *,
    reference: bool = False,
    pack: bool = False,
) -> Gathered:
    """Read a zone file into the label tree, records gathered per (owner, type);
    raise ZoneSyntaxError listing every bad line. With ``pack``, the delegations the
    checks have nothing to say about are kept packed (:mod:`nameserver.zone.packed`)."""
    path = os.fspath(path)
    origin_key = WireName.from_name(origin).key if pack else None
    if not reference and _worth_a_fork(path):
        try:
            return build(forked_batches(path, origin, origin_key), origin, path)
        except ChildFailed:
            pass  # read it whole, here
    records = (reference_records if reference else read_wire_records)(path, origin)
    if pack:
        return build(flat_batches(records, path, origin_key), origin, path)
    return gather(records, origin, path)


def _packed_hold(zone: Gathered, now: float | None, margin: float) -> bool:
    """Whether the packed delegations can stay packed: nothing in the zone needs
    every name (the builder stops packing once the apex says so; this is for a file
    that names the apex after some delegations), nothing wrong with their DNSSEC."""
    return not zone.whole() and packed_signatures_hold(zone, now=now, margin=margin)


def _worth_a_fork(path: str) -> bool:
    try:
        return os.path.getsize(path) >= FORK_MIN_BYTES and hasattr(os, "fork")
    except OSError:
        return False  # the reader says why


def _text(name: WireName) -> str:
    return str(name.to_name())


def _check(path: str, zone: Gathered, warnings: list[str]) -> list[str]:
    errors: list[str] = []
    origin = zone.origin
    apex_node = zone.apex
    for node in zone.owners:
        by_type = node.rrsets
        first = next(iter(by_type.values()))
        if not zone.in_zone(node):
            errors.append(f"{first.where}: {_text(first.name)} is outside the zone {origin}")
            continue
        if SOA in by_type and node is not apex_node:
            where = by_type[SOA].where  # type: ignore[attr-defined]
            errors.append(
                f"{where}: SOA record for {_text(first.name)} is not at the apex {origin}"
            )
        if CNAME in by_type:
            cname = by_type[CNAME]
            others = [t for t in by_type if t not in _BESIDE_CNAME]
            name = _text(first.name)
            if others:
                listed = ", ".join(dns.rdatatype.to_text(t) for t in others)
                errors.append(f"{cname.where}: CNAME at {name} beside other data ({listed})")  # type: ignore[attr-defined]
            if len(cname.rdatas) > 1:
                errors.append(f"{cname.where}: more than one CNAME record at {name}")  # type: ignore[attr-defined]
        if DNAME in by_type and len(by_type[DNAME].rdatas) > 1:
            errors.append(
                f"{by_type[DNAME].where}: more than one DNAME record at {_text(first.name)}"  # type: ignore[attr-defined]
            )
    apex: dict[int, SetData] = apex_node.rrsets  # type: ignore[assignment]
    if SOA not in apex:
        errors.append(f"{path}: no SOA record at the zone apex {origin}")
    elif len(apex[SOA].rdatas) > 1:
        errors.append(f"{apex[SOA].where}: more than one SOA record at {origin}")
    if NS not in apex:
        errors.append(f"{path}: no NS records at the zone apex {origin}")
    if not errors:
        warnings.extend(_occlusion_and_glue(zone))
    return errors


def _occlusion_and_glue(zone: Gathered) -> list[str]:
    warnings: list[str] = []
    apex = zone.apex
    ns_targets = _ns_targets(zone)
    apex_dname = DNAME in apex.rrsets
    children = apex.children
    olen = len(zone.origin_key)
    # Every owner is in the zone (or _check would have stopped): one label more than
    # the origin is a child of the apex.
    for node in zone.owners:
        by_type: dict[int, SetData] = node.rrsets  # type: ignore[assignment]
        if node is apex:
            continue
        key = node.name.key
        first = key[0] + 1  # where the second label starts
        rest = len(key) - olen
        if first == rest and not apex_dname:
            if len(by_type) > 1 and NS in by_type and not by_type.keys() <= _AT_CUT:
                name = _text(zone.owner_name(node))
                for t, s in by_type.items():
                    if t not in _AT_CUT:
                        warnings.append(
                            f"{s.where}: {name} {dns.rdatatype.to_text(t)} is at the "
                            f"delegation {name} (occluded: kept, never served)"
                        )
        elif (apex_dname or first + key[first] + 1 != rest or NS in by_type
              or not by_type.keys() <= _ADDRESSES or key not in ns_targets
              or not _glue_parent(children.get(key[first + 1 : rest]))):
            _occluded(zone, node, by_type, ns_targets, warnings)
        # else glue of a delegation from the apex, the common case: nothing to say
    for key, s in ns_targets.items():
        addresses = zone.packed_addresses(key)
        if addresses is None:
            found = zone.find(key)
            if found is None and zone.relative_labels(key) is None:
                continue  # out of the zone
            by = found.rrsets if found is not None else {}
            addresses = A in by or AAAA in by
        if not addresses:
            if type(s) is bytes:  # named first by a packed delegation
                s = zone.unpacked(s).rrsets[NS]  # type: ignore[assignment]
            # Named as the first NS record naming it spells it.
            target = next(p[0] for p in s.rdatas if p[0].key == key)  # type: ignore[index,union-attr]
            warnings.append(
                f"{s.where}: name server {_text(target)} has no address records (glue)"
            )
    return warnings


def _ns_targets(zone: Gathered) -> dict[bytes, SetData | bytes]:
    """The NS RRset that first names each name server (by lowercased name), in the
    order of the file; the label for one of a packed delegation."""
    ns_targets: dict[bytes, SetData | bytes] = {}
    walked: set[int] = set()  # id() of the NS RDATA tuples walked (shared by many RRsets)
    # The packed delegations naming name servers elsewhere in the zone came before
    # the owner at their index: merged in (those unpacked since are among the owners).
    packed = zone.packed
    named = [(index, key, label) for key, (index, label) in zone.packed_targets.items()
             if label in packed]
    named.append((len(zone.owners), b"", b""))  # the end
    at = 0
    for index, node in enumerate(zone.owners):
        while named[at][0] <= index:
            _, key, label = named[at]
            ns_targets.setdefault(key, label)
            at += 1
        s = node.rrsets.get(NS)
        if s is not None and id(s.rdatas) not in walked:
            walked.add(id(s.rdatas))
            for p in s.rdatas:
                key = p[0].key  # type: ignore[index,union-attr]
                if key not in ns_targets:
                    ns_targets[key] = s  # type: ignore[assignment]
    for _, key, label in named[at:-1]:
        ns_targets.setdefault(key, label)
    return ns_targets


def _glue_parent(parent: Node | None) -> bool:
    """A child of the apex that is a delegation (not below a DNAME)."""
    return parent is not None and NS in parent.rrsets and DNAME not in parent.rrsets


def _occluded(
    zone: Gathered,
    node: Node,
    by_type: dict[int, SetData],
    ns_targets: dict[bytes, SetData | bytes],
    warnings: list[str],
) -> None:
    """Warnings for a name that is not a child of the apex (or below an apex DNAME)."""
    ancestors = zone.ancestors(node)
    cut = dname = None
    for index, anc in enumerate(ancestors):
        if index and NS in anc.rrsets:
            cut = index
        if DNAME in anc.rrsets:
            dname = index
    if cut is None and dname is None and NS not in by_type:
        return
    glue = node.name.key in ns_targets
    if cut is not None and dname is None and glue and all(t in (A, AAAA) for t in by_type):
        return  # the common case of a TLD: glue, nothing to say
    owner = zone.owner_name(node)
    wire = owner.wire
    # Ancestors are named as the owner spells them (as dnspython's Name.parent() does):
    # offsets[k] is where the suffix of k + 1 labels starts in the owner's wire.
    offsets = []
    i = 0
    while wire[i]:
        offsets.append(i)
        i += wire[i] + 1
    offsets.reverse()
    depth0 = len(offsets) - len(ancestors)  # labels of the apex

    def spelled(index: int) -> str:
        labels = depth0 + index
        return _text(WireName(wire[offsets[labels - 1] :] if labels else b"\0"))

    name = _text(owner)
    if cut is not None:
        for t, s in by_type.items():
            if t in (A, AAAA) and glue:
                continue  # glue
            warnings.append(
                f"{s.where}: {name} {dns.rdatatype.to_text(t)} is below the delegation "
                f"{spelled(cut)} (occluded: kept, never served)"
            )
    elif NS in by_type:
        for t, s in by_type.items():
            if t not in _AT_CUT:
                warnings.append(
                    f"{s.where}: {name} {dns.rdatatype.to_text(t)} is at the delegation "
                    f"{name} (occluded: kept, never served)"
                )
    if dname is not None:
        s = next(iter(by_type.values()))
        warnings.append(
            f"{s.where}: {name} is below the DNAME at {spelled(dname)} "
            "(occluded: kept, never served)"
        )


def _compile(zone: Gathered, path: str) -> Zone:
    """Turn every SetData into a prepared RRset, in place; NSEC3 records go to the
    chain index (their owners are hashes, not names of the zone)."""
    apex = zone.apex
    nsec3_records: list[tuple[WireName, RRset]] = []
    targets: dict[int, tuple[WireName, ...]] = {}  # of shared NS RDATA, by id()
    empty: list[Node] = []
    for node in zone.owners:
        rrsets: dict[int, RRset] = node.rrsets
        name = _finish_node(node, targets)
        nsec3 = rrsets.pop(NSEC3, None)
        if nsec3 is not None:
            nsec3_records.append((name, nsec3))
            rrsets.pop(RRSIG, None)
            if not rrsets:
                empty.append(node)
                continue
        if node is not apex and NS in rrsets:
            node.cut = True
        node.dname = rrsets.get(DNAME)
    for node in empty:
        _prune(zone, node)
    compiled = Zone(apex.name, apex, path, zone.count)
    compiled.packed = zone.packed
    compiled.packed_blob = bytes(zone.blob)
    zone.blob = bytearray()
    compiled.nsec3 = _nsec3_chain(apex, nsec3_records)
    if compiled.nsec3 is None:
        compiled.nsec = _nsec_chain(apex)
    return compiled


def unpack(origin: dns.name.Name, path: str, data: bytes) -> Node:
    """The served subtree of a packed delegation (:mod:`nameserver.zone.packed`), as
    loading it unpacked would have made it."""
    builder = Builder(origin, path)
    builder.add(list(runs_of(data)))
    targets: dict[int, tuple[WireName, ...]] = {}
    for node in builder.zone.owners:
        _finish_node(node, targets)
        node.cut = NS in node.rrsets  # the cut (its glue has addresses alone)
    return next(iter(builder.zone.apex.children.values()))


def _finish_node(node: Node, targets: dict[int, tuple]) -> WireName:
    """Make the sets of a node its RRsets (:func:`_finish`); the owner as its first
    record spells it."""
    first: SetData = next(iter(node.rrsets.values()))  # type: ignore[assignment]
    name = first.name
    _finish(node.name if name.wire == node.name.wire else name, node.rrsets, targets)  # type: ignore[arg-type]
    return name


def _prune(zone: Gathered, node: Node) -> None:
    """Take an owner that had only NSEC3 records out of the tree, and the empty
    non-terminals left with nothing below them."""
    if node.children or node is zone.apex:
        return
    path = zone.ancestors(node) + [node]
    labels = zone.relative_labels(node.name.key) or []
    for depth in range(len(path) - 1, 0, -1):
        here = path[depth]
        if here.children or here.rrsets:
            return
        parent = path[depth - 1]
        label = labels[depth - 1]
        del parent.children[label]
        if label == b"*":
            parent.wildcard = None


def _finish(owner: WireName, sets: dict[int, SetData], targets: dict[int, tuple]) -> None:
    """Make the sets of one owner its prepared RRsets, each with the RRSIGs that cover
    it attached."""
    for t, s in sets.items():
        if t == NS and type(s.rdatas) is tuple:
            names = targets.get(id(s.rdatas))
            if names is None:
                names = targets[id(s.rdatas)] = s.target_names()
            s.finish(owner, names)
        else:
            s.finish(owner)
    rrsets: dict[int, RRset] = sets  # type: ignore[assignment]
    sigs = rrsets.get(RRSIG)
    if sigs is not None:
        by_covered: dict[int, list] = {}
        for rd in sigs.rdatas:
            covered = rd[2] << 8 | rd[3]  # type: ignore[index,operator]
            group = by_covered.get(covered)
            if group is None:
                by_covered[covered] = [rd]
            else:
                group.append(rd)
        whole = sigs.rdatas
        for covered, rds in by_covered.items():
            target = rrsets.get(covered)
            if target is not None:
                # RFC 4034 §3: an RRSIG's TTL is that of the RRset it covers.
                if len(rds) == len(whole) and target.ttl == sigs.ttl:
                    target.sigs = sigs  # all of them, as they are: the same RRset
                else:
                    rdatas = whole if len(rds) == len(whole) else tuple(rds)
                    target.sigs = RRset(owner, RRSIG, target.ttl, rdatas)


def _nsec3_chain(apex: Node, records: list[tuple[WireName, RRset]]) -> Nsec3Chain | None:
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
        label = name.wire[1 : 1 + name.wire[0]]
        digest = b32hex_whole(label)
        if digest is None:
            digest = nsec3_owner_hash(label)
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
