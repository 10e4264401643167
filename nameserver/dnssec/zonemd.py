"""Verify a zone's ZONEMD digest (RFC 8976) before it goes live.

The SIMPLE scheme's digest is computed here directly over the zone as the loader
gathered it (:class:`nameserver.zone.sets.Gathered`, RDATA in wire form), in RFC 4034
canonical order and form, exactly as ``dns.zone.Zone.compute_digest`` does (the
same bytes as dnspython's ``to_digestable``, see :func:`nameserver.zone.sets.canonical`),
without building a ``dns.zone.Zone`` or dnspython records first.

Every record read is covered, glue and occluded data included (RFC 8976 section
3.3.1.1), except the apex ZONEMD RRset and the apex RRSIGs covering it. The
loader keeps all RRSIGs of an owner in one set with one TTL; an RRSIG's TTL is
the TTL of the RRset it covers (RFC 4034 section 3), so that is the one digested.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dns.name
import dns.rdataclass
import dns.rdatatype

from nameserver.zone.denial import canonical_key
from nameserver.zone.sets import canonical

if TYPE_CHECKING:
    from nameserver.zone.sets import Gathered

SOA = dns.rdatatype.SOA
RRSIG = dns.rdatatype.RRSIG
NS = dns.rdatatype.NS
ZONEMD = dns.rdatatype.ZONEMD

SCHEME_SIMPLE = 1
# RFC 8976 section 5.3: hash algorithm number -> hash constructor.
HASHES: dict[int, Callable[[], Any]] = {1: hashlib.sha384, 2: hashlib.sha512}

_IN = dns.rdataclass.IN


def check_zonemd(origin: dns.name.Name, zone: Gathered) -> list[str]:
    """Problems (``file:line: reason``) with the apex ZONEMD RRset; none if it has none.

    The zone passes if one ZONEMD record with a supported scheme and hash algorithm
    (SIMPLE with SHA384 or SHA512), the SOA's serial and a (scheme, hash algorithm)
    pair of its own (RFC 8976 section 4) matches the digest of the zone as read. A
    ZONEMD RRset with only unsupported schemes or algorithms cannot be verified and
    is not a problem.
    """
    apex = zone.apex.rrsets
    zonemd: Any = apex.get(ZONEMD)
    if zonemd is None:
        return []
    soa: Any = apex.get(SOA)
    serial = soa.to_rdatas()[0].serial if soa is not None and soa.rdatas else None
    records: list[Any] = zonemd.to_rdatas()
    pairs = Counter((rd.scheme, rd.hash_algorithm) for rd in records)
    reasons: list[str] = []
    candidates = []
    for rd in records:
        pair = (rd.scheme, rd.hash_algorithm)
        if pairs[pair] > 1:
            reason = (
                f"more than one ZONEMD record with scheme {rd.scheme} and hash algorithm "
                f"{rd.hash_algorithm} (none of them counts)"
            )
        elif rd.scheme != SCHEME_SIMPLE or rd.hash_algorithm not in HASHES:
            continue  # cannot be verified here: neither good nor bad
        elif rd.serial != serial:
            reason = f"ZONEMD serial {rd.serial} does not match the SOA serial {serial}"
        else:
            candidates.append(rd)
            continue
        if reason not in reasons:
            reasons.append(reason)
    if candidates:
        digests = zone_digest(origin, zone, {rd.hash_algorithm for rd in candidates})
        if any(digests[rd.hash_algorithm] == rd.digest for rd in candidates):
            return []
        reasons.insert(0, "ZONEMD digest does not match the zone")
    return [f"{zonemd.where}: {reason}" for reason in reasons]


def zone_digest(
    origin: dns.name.Name,
    zone: Gathered,
    hash_algorithms: set[int] | frozenset[int] = frozenset({1}),
) -> dict[int, bytes]:
    """RFC 8976 SIMPLE digests of the zone, one per hash algorithm (see ``HASHES``)."""
    hashers = [HASHES[alg]() for alg in sorted(hash_algorithms)]
    updates = [h.update for h in hashers]
    pack = struct.pack
    owners = []
    for node in zone.owners:
        if zone.in_zone(node):  # (the loader refuses any other name)
            key = node.name.key  # labels are at most 63 octets: lower() changes no length
            owners.append((canonical_key(key), key, node))
    owners.sort(key=lambda item: item[0])  # RFC 4034 section 6.1 canonical order
    apex = zone.apex
    for _sort_key, owner, node in owners:
        by_type: Any = node.rrsets
        at_apex = node is apex
        for rdtype in sorted(by_type):
            rrset = by_type[rdtype]
            if rdtype == RRSIG:
                records = []
                for rd in rrset.rdatas:
                    covered = rd[2] << 8 | rd[3]
                    if at_apex and covered == ZONEMD:
                        continue
                    target = by_type.get(covered)
                    ttl = target.ttl if target is not None else rrset.ttl
                    records.append((canonical(RRSIG, rd), ttl))
                records.sort()
            elif at_apex and rdtype == ZONEMD:
                continue
            else:
                ttl = rrset.ttl
                records = sorted((canonical(rdtype, rd), ttl) for rd in rrset.rdatas)
            for wire, ttl in records:
                data = owner + pack("!HHIH", rdtype, _IN, ttl, len(wire)) + wire
                for update in updates:
                    update(data)
    return {alg: h.digest() for alg, h in zip(sorted(hash_algorithms), hashers, strict=True)}
