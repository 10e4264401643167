"""Authenticated denial of existence: which NSEC3 (RFC 5155 §7.2) or NSEC (RFC 4035
§3.1.3) records prove a negative answer, a wildcard answer or an insecure referral.

Each function returns the RRsets to add to the authority section (their RRSIGs
travel with them). Names are lowercased wire names.
"""

from __future__ import annotations

from nameserver.zone.denial import Nsec3Chain
from nameserver.zone.tree import RRset, Zone

_WILDCARD = b"\x01*"


def _parent(key: bytes) -> bytes:
    return key[key[0] + 1 :]


def _unique(rrsets: list[RRset]) -> list[RRset]:
    seen: list[RRset] = []
    for r in rrsets:
        if all(r is not s for s in seen):
            seen.append(r)
    return seen


def _provable(chain: Nsec3Chain, start: bytes) -> tuple[bytes, RRset, RRset]:
    """RFC 5155 §7.2.1: the closest provable encloser at or above ``start`` (an existing
    name), its NSEC3, and the NSEC3 covering its wildcard. Depends on ``start`` alone,
    so it is remembered per chain."""
    memo = chain.encloser_memo.get(start)
    if memo is None:
        ce, match = start, chain.match(start)
        while match is None and ce != b"\x00":
            ce = _parent(ce)
            match = chain.match(ce)
        assert match is not None, "the apex owns an NSEC3"
        memo = chain.encloser_memo[start] = (ce, match, chain.cover(_WILDCARD + ce))
    return memo


def _next_closer(name: bytes, ancestor: bytes) -> bytes:
    """The child of ``ancestor`` on the way down to ``name``."""
    while _parent(name) != ancestor:
        name = _parent(name)
    return name


def _encloser_proof(chain: Nsec3Chain, key: bytes, encloser: bytes) -> list[RRset]:
    """Closest provable encloser of ``key`` and the NSEC3 covering the next closer name.
    ``encloser`` is ``key``'s closest existing ancestor: only names of the zone are
    remembered, never names a client made up."""
    ce, match, _ = _provable(chain, encloser)
    cover = chain.cover(_next_closer(key, ce))
    # One NSEC3 may do both: match the encloser and cover the next closer name.
    return [match] if cover is match else [match, cover]


def nxdomain(zone: Zone, qname: bytes, encloser: bytes) -> list[RRset]:
    """The name does not exist, and no wildcard at its closest encloser applies."""
    return _unique(list(nxdomain_key(zone, qname, encloser)))


def nxdomain_key(
    zone: Zone, qname: bytes, encloser: bytes, next_closer: bytes | None = None
) -> tuple[RRset, ...]:
    """The proof of :func:`nxdomain`, before duplicates are removed: a tuple that also
    serves the fast path as the identity of the answer (one hash per query for NSEC3).
    ``next_closer``, if given, is the child of ``encloser`` on the way to ``qname``."""
    chain = zone.nsec3
    if chain is not None:
        # Names between the closest encloser and the query name do not exist, so the
        # closest provable encloser of the query is the encloser's own.
        ce, match, wildcard_cover = _provable(chain, encloser)
        if next_closer is None or ce != encloser:
            next_closer = _next_closer(qname, ce)
        return (match, chain.cover(next_closer), wildcard_cover)
    nsec = zone.nsec
    assert nsec is not None
    return (nsec.cover(qname), nsec.cover(_WILDCARD + encloser))


def nodata(zone: Zone, name: bytes) -> list[RRset]:
    """The name exists (data, empty non-terminal or delegation) but not the type."""
    if zone.nsec3 is not None:
        chain = zone.nsec3
        match = chain.match(name)
        if match is not None:
            return [match]
        # Opted-out name (unsigned delegation or its empty non-terminals), §7.2.4.
        return _encloser_proof(chain, name, _parent(name))  # the name exists: so does its parent
    nsec = zone.nsec
    match = nsec.match(name)
    return [match] if match is not None else [nsec.cover(name)]  # an ENT lies in a gap


def wildcard_nodata(zone: Zone, qname: bytes, encloser: bytes) -> list[RRset]:
    """§7.2.5: no exact match, the wildcard exists, but not with the type."""
    wildcard = _WILDCARD + encloser
    if zone.nsec3 is not None:
        chain = zone.nsec3
        proof = _encloser_proof(chain, qname, encloser)
        match = chain.match(wildcard)
        return _unique(proof + ([match] if match is not None else []))
    nsec = zone.nsec
    match = nsec.match(wildcard)
    return _unique([nsec.cover(qname)] + ([match] if match is not None else []))


def wildcard_answer(zone: Zone, qname: bytes, encloser: bytes) -> list[RRset]:
    """§7.2.6: the answer was synthesised, so prove the exact name does not exist."""
    if zone.nsec3 is not None:
        return [zone.nsec3.cover(_next_closer(qname, encloser))]
    return [zone.nsec.cover(qname)]


def insecure_referral(zone: Zone, cut: bytes) -> list[RRset]:
    """§7.2.7: the delegation has no DS (its NSEC3, or the opt-out span covering it)."""
    return nodata(zone, cut)


def is_signed(zone: Zone) -> bool:
    return zone.nsec3 is not None or zone.nsec is not None
