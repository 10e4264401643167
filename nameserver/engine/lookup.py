"""The authoritative lookup of RFC 1034 §4.3.2, with RFC 4592 wildcards, RFC 6672
DNAME, RFC 2308 negative answers and RFC 8482 minimal ANY.

``lookup`` walks the name tree of one zone and says *what* to answer, as lists of
prepared RRsets; :mod:`nameserver.engine.render` turns that into bytes.
"""

from __future__ import annotations

from nameserver.wire import WireName
from nameserver.zone.tree import AAAA, CNAME, DS, MX, NS, RRSIG, SRV, A, Node, RRset, Zone

ANY = 255
NOERROR, NXDOMAIN, YXDOMAIN = 0, 3, 6
MAX_CHAIN = 16  # CNAME/DNAME links followed inside one answer
_ADDITIONAL_FOR = frozenset({NS, MX, SRV})


class Answer:
    """What to put in each section. ``required`` counts the leading additional RRsets
    that must fit or set TC (in-domain glue of a referral, RFC 9471)."""

    __slots__ = ("rcode", "aa", "answer", "authority", "additional", "required")

    def __init__(self) -> None:
        self.rcode = NOERROR
        self.aa = True
        self.answer: list[RRset] = []
        self.authority: list[RRset] = []
        self.additional: list[RRset] = []
        self.required = 0


def lookup(zone: Zone, qname: WireName, qtype: int, do: bool = False) -> Answer:
    """Answer ``qname``/``qtype`` (class IN) from ``zone``, which contains ``qname``.

    ``do`` is the DNSSEC OK bit: it decides whether a referral carries the DS RRset.
    """
    ans = Answer()
    seen: set[bytes] = set()
    name: WireName | None = qname
    while name is not None:
        seen.add(name.key)
        name = _step(zone, name, qtype, do, ans)
        if name is not None and (
            name.key in seen or len(seen) >= MAX_CHAIN or not zone.contains(name.key)
        ):
            break  # loop, overlong chain, or target outside the zone: the resolver goes on
    return ans


def _step(zone: Zone, name: WireName, qtype: int, do: bool, ans: Answer) -> WireName | None:
    """Process one name of a chain; return the next name to follow, if any."""
    labels = zone.relative_labels(name.key)
    node = zone.apex
    last = len(labels) - 1
    if node.dname is not None and labels:
        return _dname(zone, node, name, ans)
    for depth, label in enumerate(labels):
        child = node.children.get(label)
        if child is None:
            return _no_such_name(zone, node, name, qtype, ans)
        node = child
        if node.cut and not (depth == last and qtype == DS):
            _referral(zone, node, do, ans)
            return None
        if node.dname is not None and depth < last:
            return _dname(zone, node, name, ans)
    return _at_node(zone, node, name, qtype, ans, synthesized=False)


def _at_node(
    zone: Zone, node: Node, name: WireName, qtype: int, ans: Answer, synthesized: bool
) -> WireName | None:
    """Answer from the data at ``node`` (the name itself, or the wildcard that matched)."""

    def owned(rrset: RRset) -> RRset:
        return rrset.with_owner(name) if synthesized else rrset

    rrsets = node.rrsets
    if node.cut:  # only reached for DS, which the parent holds (RFC 4034 §5)
        ds = rrsets.get(DS)
        if ds is not None:
            ans.answer.append(ds)
        else:
            _negative(zone, ans, NOERROR)
        return None
    cname = rrsets.get(CNAME)
    if cname is not None and qtype != CNAME:
        ans.answer.append(owned(cname))
        # ANY is answered minimally (RFC 8482): the CNAME alone, its target not chased.
        return cname.targets[0] if qtype != ANY else None
    if qtype == ANY:
        # RFC 8482 §4.1: answer one RRset, the one of lowest type (as Knot does).
        types = [t for t in rrsets if t != RRSIG]  # signatures travel with their RRset
        if types:
            rrset = rrsets[min(types)]
            ans.answer.append(owned(rrset))
            _additional(zone, rrset, ans)
            return None
    else:
        rrset = rrsets.get(qtype)
        if rrset is not None:
            ans.answer.append(owned(rrset))
            _additional(zone, rrset, ans)
            return None
    _negative(zone, ans, NOERROR)
    return None


def _no_such_name(zone: Zone, encloser: Node, name: WireName, qtype: int, ans: Answer) -> None:
    """``encloser`` is the closest encloser: synthesise from its wildcard or deny."""
    wildcard = encloser.wildcard
    if wildcard is not None:
        return _at_node(zone, wildcard, name, qtype, ans, synthesized=True)
    _negative(zone, ans, NXDOMAIN)
    return None


def _negative(zone: Zone, ans: Answer, rcode: int) -> None:
    ans.rcode = rcode
    ans.authority.append(zone.negative_soa)


def _referral(zone: Zone, cut: Node, do: bool, ans: Answer) -> None:
    """Delegation: NS (and DS if DO, RFC 4035 §3.1.4) in authority, glue in additional."""
    if not ans.answer:
        ans.aa = False
    ns = cut.rrsets[NS]
    ans.authority.append(ns)
    ds = cut.rrsets.get(DS) if do else None
    if ds is not None:
        ans.authority.append(ds)
    required: list[RRset] = []
    optional: list[RRset] = []
    for target in ns.targets:
        in_domain = target.key.endswith(cut.name.key)
        for rrset in _addresses(zone, target):
            (required if in_domain else optional).append(rrset)
    ans.additional = required + optional + ans.additional
    ans.required = len(required)


def _additional(zone: Zone, rrset: RRset, ans: Answer) -> None:
    """RFC 1034 §3.7 additional processing: addresses of NS, MX and SRV targets."""
    if rrset.rdtype in _ADDITIONAL_FOR:
        for target in rrset.targets:
            ans.additional.extend(_addresses(zone, target))


def _addresses(zone: Zone, target: WireName) -> list[RRset]:
    """A and AAAA RRsets of ``target`` if the zone holds it (glue included)."""
    node = zone.find(target.key)
    if node is None:
        return []
    return [r for t in (A, AAAA) if (r := node.rrsets.get(t)) is not None]


def _dname(zone: Zone, node: Node, name: WireName, ans: Answer) -> WireName | None:
    """RFC 6672 §2.2: answer the DNAME and a CNAME synthesised from it."""
    dname = node.dname
    assert dname is not None
    ans.answer.append(dname)
    prefix = name.key[: len(name.key) - len(node.name.key)]
    target = prefix + dname.targets[0].wire
    if len(target) > 255:
        ans.rcode = YXDOMAIN
        return None
    target_name = WireName(target)
    ans.answer.append(RRset(name, CNAME, dname.ttl, ((target_name,),), (target_name,)))
    return target_name
