"""Check a signed zone's DNSSEC data before it goes live.

:func:`check_signatures` is the safety net run at start and at every reload: a
non-empty ``problems`` list refuses the zone (the previous one keeps serving).
It works on the zone as the loader gathered it (:class:`nameserver.zone.sets.Gathered`:
the owners in file order, each node's ``rrsets`` mapping a type to a
:class:`~nameserver.zone.sets.SetData` whose RDATA is in wire form; all RRSIGs of
one owner are a single ``SetData`` of type RRSIG). The whole-zone checks read the
RRSIG fields from the wire; only the RRsets validated become dnspython objects.

Two kinds of checks, so that a million-delegation zone stays fast:

* cheap ones over the whole zone: every served RRSIG's validity window (only the
  expiration and inception fields are read) and every authoritative RRset having
  an RRSIG, for each algorithm of the DNSKEY set (RFC 4035 section 2.2);
* cryptographic validation (dnspython's ``validate_rrsig``) of the apex DNSKEY
  RRset (by a SEP key), SOA, NS, NSEC3PARAM and ZONEMD, plus a deterministic
  random sample of the other authoritative RRsets (some DS and NSEC/NSEC3 among
  them when the zone has any).

Glue, the NS RRset at a delegation and occluded data (below a zone cut or a
DNAME, or beside NS at a cut) are not authoritative: they are never signed and
their RRSIGs (if any) are never served, so none of the checks look at them.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import dns.dnssec
import dns.exception
import dns.name
import dns.rdataset
import dns.rdatatype
import dns.rrset

from nameserver.zone.sets import to_rdata

if TYPE_CHECKING:
    from nameserver.wire import WireName
    from nameserver.zone.sets import Gathered

SOA = dns.rdatatype.SOA
NS = dns.rdatatype.NS
DS = dns.rdatatype.DS
DNAME = dns.rdatatype.DNAME
RRSIG = dns.rdatatype.RRSIG
NSEC = dns.rdatatype.NSEC
NSEC3 = dns.rdatatype.NSEC3
DNSKEY = dns.rdatatype.DNSKEY
NSEC3PARAM = dns.rdatatype.NSEC3PARAM
ZONEMD = dns.rdatatype.ZONEMD

# Apex RRsets always validated (when present), the DNSKEY RRset first.
_APEX_TYPES = (DNSKEY, SOA, NS, NSEC3PARAM, ZONEMD)
# Types that are authoritative at a delegation point (RFC 4035 section 2.2).
_SIGNED_AT_CUT = frozenset({DS, NSEC})
# An inception this far ahead of ``now`` is tolerated (clocks of signer and server).
CLOCK_SKEW = 3600.0
# At most this many lines per kind of problem, then one "and N more" line.
MAX_LINES = 20

# RRSIG expiration and inception, after the RDATA length, type covered, algorithm,
# labels and original TTL.
_TIMES = struct.Struct("!II")
_ZONE_FLAG = dns.dnssec.Flag.ZONE
_SEP_FLAG = dns.dnssec.Flag.SEP
_REVOKE_FLAG = dns.dnssec.Flag.REVOKE


@dataclass(frozen=True)
class SignatureReport:
    signed: bool  # the zone has DNSKEY at the apex and RRSIGs
    problems: list[str]  # each "file:line: reason" (refuse the zone if non-empty)
    earliest_expiry: int | None  # the smallest RRSIG expiration (POSIX seconds) in the zone
    checked: int  # how many RRsets were validated


def check_signatures(
    origin: dns.name.Name,
    zone: Gathered,
    *,
    now: float | None = None,
    margin: float = 3 * 86400,
    sample: int = 200,
    seed: int = 0,
) -> SignatureReport:
    """Check the DNSSEC data of the zone ``origin`` gathered in ``zone``.

    ``now`` (POSIX seconds, default the current time) and ``margin``: an RRSIG
    that expires before ``now + margin`` is a problem, so is one whose inception
    is more than :data:`CLOCK_SKEW` after ``now``. ``sample`` authoritative RRsets
    besides the apex ones are validated, chosen with ``random.Random(seed)``.
    ``earliest_expiry`` is the smallest expiration among the RRSIGs that are
    served (those of occluded data are not).
    """
    if now is None:
        now = time.time()
    apex = zone.apex.rrsets
    keys = apex.get(DNSKEY)
    classify = _Zone(zone)
    expiring: list[tuple[Any, bytes]] = []
    missing: list[tuple[Any, WireName, int, str]] = []
    pools: tuple[list[Any], list[Any], list[Any]] = ([], [], [])  # DS, NSEC/NSEC3, others
    required = (
        _algorithms(keys.to_rdatas(), apex.get(RRSIG))  # type: ignore[union-attr]
        if keys is not None else frozenset()
    )
    expire_before = now + margin
    valid_from = now + CLOCK_SKEW
    earliest: int | None = None
    first_sigs = None  # the first served RRSIG set, to point at if there is no DNSKEY
    times = _TIMES.unpack_from

    for node in zone.owners:
        by_type = node.rrsets
        kind = classify.kind(node)
        if kind is _OCCLUDED:
            continue
        sigs = by_type.get(RRSIG)
        covered: dict[int, set[int]] = _NONE
        if sigs is not None:
            covered = {}
            if first_sigs is None:
                first_sigs = sigs
            for rd in sigs.rdatas:  # type: ignore[attr-defined]
                exp, inception = times(rd, 10)
                if earliest is None or exp < earliest:
                    earliest = exp
                if exp < expire_before or inception > valid_from:
                    expiring.append((sigs, rd))
                rdtype = rd[2] << 8 | rd[3]
                algs = covered.get(rdtype)
                if algs is None:
                    covered[rdtype] = {rd[4]}
                else:
                    algs.add(rd[4])
        if keys is None:
            continue
        for rdtype, rrset in by_type.items():
            if rdtype == RRSIG or (kind is _CUT and rdtype not in _SIGNED_AT_CUT):
                continue
            algs = covered.get(rdtype)
            if algs is None:
                missing.append((rrset.where, node, rdtype, "has no RRSIG"))  # type: ignore[attr-defined]
                continue
            if not required <= algs:
                lacking = ", ".join(_alg_text(a) for a in sorted(required - algs))
                reason = f"has no RRSIG with algorithm {lacking} (the DNSKEY RRset has)"
                missing.append((rrset.where, node, rdtype, reason))  # type: ignore[attr-defined]
            if kind is _APEX and rdtype in _APEX_TYPES:
                continue
            pool = 0 if rdtype == DS else 1 if rdtype in (NSEC, NSEC3) else 2
            pools[pool].append(rrset)

    # The delegations kept packed (nameserver.zone.packed) passed the checks above, or
    # the loader would not have kept them so (packed_signatures_hold): their DS are
    # in the sample all the same.
    if zone.packed_expires is not None and (earliest is None or zone.packed_expires < earliest):
        earliest = zone.packed_expires
    packed = zone.packed
    pools[0].extend(label for label in zone.packed_ds if label in packed)

    if keys is None and first_sigs is None:
        return SignatureReport(False, [], None, 0)
    if keys is None:
        assert first_sigs is not None
        problem = (
            f"{first_sigs.where}: the zone has RRSIG records but no DNSKEY RRset at its apex "
            f"{origin}"
        )
        return SignatureReport(False, [problem], earliest, 0)
    if first_sigs is None:
        problem = f"{keys.where}: the zone has a DNSKEY RRset but no RRSIG records (not signed)"
        return SignatureReport(False, [problem], None, 0)

    validator = _Validator(origin, keys)
    failures: list[tuple[Any, str]] = []
    checked = 0
    for rdtype in _APEX_TYPES:
        rrset = apex.get(rdtype)
        if rrset is not None and _signed(apex, rdtype):
            failures.extend(validator.check(rrset, apex[RRSIG], at_apex=True))
            checked += 1
    for rrset in _sample(pools, sample, seed):
        if type(rrset) is bytes:  # the label of a packed delegation
            owner = zone.unpacked(rrset)
            rrset = owner.rrsets[DS]
        else:
            owner = zone.find(rrset.name.key)
        assert owner is not None
        failures.extend(validator.check(rrset, owner.rrsets[RRSIG]))
        checked += 1

    problems = _capped(failures, lambda f: f"{f[0]}: {f[1]}", "RRsets that do not validate")
    problems += _capped(
        expiring,
        lambda x: _timing(*x, now, margin),
        f"RRSIGs expired, expiring within {_span(margin)} or not yet valid",
        lambda x: x[0].where,
    )
    problems += _capped(missing, _missing, "authoritative RRsets without the RRSIGs they need")
    return SignatureReport(True, problems, earliest, checked)


def packed_signatures_hold(
    zone: Gathered, *, now: float | None = None, margin: float = 3 * 86400
) -> bool:
    """Whether :func:`check_signatures` has nothing to say about the delegations
    kept packed, by what is summed up of them (their RRSIGs' validity window and the
    algorithms signing their DS): if not, they must be read unpacked to be named."""
    if now is None:
        now = time.time()
    if zone.packed_expires is not None and (
        zone.packed_expires < now + margin or zone.packed_incepted > now + CLOCK_SKEW  # type: ignore[operator]
    ):
        return False
    apex = zone.apex.rrsets
    keys = apex.get(DNSKEY)
    if keys is None or apex.get(RRSIG) is None:
        # Signatures without keys, or a zone not signed: only unpacked DS may be.
        return zone.packed_expires is None and (keys is None or not zone.packed_ds)
    required = _algorithms(keys.to_rdatas(), apex.get(RRSIG))  # type: ignore[union-attr]
    return all(required <= set(algs) and algs for algs in zone.packed_algorithms)


_T = TypeVar("_T")
_NONE: dict[int, set[int]] = {}  # the types covered at an owner without RRSIGs (never added to)


def _capped(
    items: list[_T],
    line: Callable[[_T], str],
    what: str,
    where: Callable[[_T], Any] = lambda item: item[0],  # type: ignore[index]
) -> list[str]:
    """At most MAX_LINES lines, then one pointing at the first item left out."""
    lines = [line(x) for x in items[:MAX_LINES]]
    if len(items) > MAX_LINES:
        first = where(items[MAX_LINES])
        more = len(items) - MAX_LINES
        lines.append(f"{first}: and {more} more {what} (the first of them here)")
    return lines


def _missing(item: tuple[Any, Any, int, str]) -> str:
    where, node, rdtype, why = item
    name = next(iter(node.rrsets.values())).name.to_name()  # as its first record spells it
    return f"{where}: {name} {dns.rdatatype.to_text(rdtype)} {why}"


# ---------------------------------------------------------------------------
# Where a name stands in the zone
# ---------------------------------------------------------------------------

_APEX = "apex"
_AUTH = "authoritative"
_CUT = "delegation"
_OCCLUDED = "occluded"


class _Zone:
    """Classifies owners: the apex, authoritative, a delegation point, or not served."""

    def __init__(self, zone: Gathered):
        self.zone = zone
        self.apex = zone.apex
        # A DNAME occludes the names below it (RFC 6672 section 2.3), so does a cut; the
        # apex counts only for a DNAME (it is never a cut).
        self.apex_dname = DNAME in zone.apex.rrsets
        self.olen = len(zone.origin_key)

    def kind(self, node: Any) -> str:
        if node is self.apex:
            return _APEX
        if not self.zone.in_zone(node):
            return _OCCLUDED  # not in the zone at all (the loader refuses that anyway)
        if self.apex_dname:
            return _OCCLUDED
        key = node.name.key
        # Most names of a TLD sit right below the apex: nothing to look up.
        if key[0] + 1 + self.olen != len(key):
            for above in self.zone.ancestors(node)[1:]:
                if NS in above.rrsets or DNAME in above.rrsets:
                    return _OCCLUDED
        return _CUT if NS in node.rrsets else _AUTH


# ---------------------------------------------------------------------------
# Validity windows
# ---------------------------------------------------------------------------


def _timing(sigs: Any, wire: bytes, now: float, margin: float) -> str:
    rd: Any = to_rdata(RRSIG, wire)
    name = sigs.name.to_name()
    what = f"RRSIG {dns.rdatatype.to_text(rd.type_covered)} {name} (key tag {rd.key_tag})"
    if rd.inception > now + CLOCK_SKEW:
        return f"{sigs.where}: {what} is not valid before {_utc(rd.inception)} (inception)"
    if rd.expiration < now:
        return f"{sigs.where}: {what} expired at {_utc(rd.expiration)}"
    return (
        f"{sigs.where}: {what} expires at {_utc(rd.expiration)}, "
        f"less than {_span(margin)} from now"
    )


def _utc(posix: int) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(posix))
    except (OverflowError, OSError, ValueError):
        return f"{posix} (POSIX seconds)"


def _span(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"


# ---------------------------------------------------------------------------
# Cryptographic validation
# ---------------------------------------------------------------------------


def _algorithms(dnskeys: Iterable[Any], apex_sigs: Any) -> frozenset[int]:
    """The algorithms that must sign every RRset (RFC 4035 section 2.2).

    Like BIND's dnssec-verify, those the DNSKEY RRset is signed with by its own
    keys: a key published ahead of an algorithm rollover (not signing yet) does
    not count, as a resolver only follows the algorithms of the parent's DS.
    """
    if apex_sigs is None:
        return frozenset()
    keys = {
        (dns.dnssec.key_id(k), k.algorithm)
        for k in dnskeys
        if k.flags & _ZONE_FLAG and not k.flags & _REVOKE_FLAG and k.protocol == 3
    }
    return frozenset(
        rd[4]
        for rd in apex_sigs.rdatas
        if rd[2] << 8 | rd[3] == DNSKEY and (rd[18] << 8 | rd[19], rd[4]) in keys
    )


def _alg_text(algorithm: int) -> str:
    return f"{dns.dnssec.algorithm_to_text(algorithm)} ({algorithm})"


def _signed(by_type: Mapping[int, Any], rdtype: int) -> bool:
    sigs = by_type.get(RRSIG)
    return sigs is not None and any(rd[2] << 8 | rd[3] == rdtype for rd in sigs.rdatas)


class _Validator:
    def __init__(self, origin: dns.name.Name, keys: Any):
        self.origin = origin
        self.keys_where = keys.where
        rdatas = keys.to_rdatas()
        self.all_keys = {origin: dns.rdataset.from_rdata_list(keys.ttl, rdatas)}
        self.known = {(dns.dnssec.key_id(k), k.algorithm) for k in rdatas}
        sep = [k for k in rdatas if k.flags & _SEP_FLAG]
        # The DNSKEY RRset must be signed by a key with the SEP flag (a KSK) if there is one.
        self.sep_keys = {origin: dns.rdataset.from_rdata_list(keys.ttl, sep or rdatas)}
        self.sep_known = {(dns.dnssec.key_id(k), k.algorithm) for k in sep or rdatas}
        self.has_sep = bool(sep)

    def check(self, rrset: Any, sigs: Any, *, at_apex: bool = False) -> list[tuple[Any, str]]:
        """Problems of one RRset as (where, reason): none if one of the RRSIGs in the
        set ``sigs`` that cover it validates."""
        rdtype = rrset.rdtype
        name = rrset.name.to_name()
        target = dns.rrset.from_rdata_list(name, rrset.ttl, rrset.to_rdatas())
        is_dnskey = rdtype == DNSKEY
        keys, usable = (
            (self.sep_keys, self.sep_known) if is_dnskey else (self.all_keys, self.known)
        )
        what = f"{name} {dns.rdatatype.to_text(rdtype)}"
        problems: list[tuple[Any, str]] = []
        reasons: list[str] = []
        for wire in sigs.rdatas:
            if wire[2] << 8 | wire[3] != rdtype:
                continue
            rd: Any = to_rdata(RRSIG, wire)
            tag = rd.key_tag
            if rd.signer != self.origin:
                reasons.append(f"RRSIG by key tag {tag} has signer {rd.signer}, not {self.origin}")
                continue
            if (tag, rd.algorithm) not in self.known:
                unknown = f"signed with key tag {tag} which is not in the DNSKEY set"
                if at_apex:
                    here = "" if is_dnskey else f" ({self.keys_where})"
                    problems.append((rrset.where, f"{what} is {unknown}{here}"))
                else:
                    reasons.append(unknown)
                continue
            if (tag, rd.algorithm) not in usable:
                continue  # a DNSKEY signature by a key without SEP: fine, but it does not count
            try:
                # The validity window is checked for every RRSIG elsewhere: validate the
                # signature itself as of its inception.
                dns.dnssec.validate_rrsig(
                    target, rd, keys, self.origin, rd.inception, dns.dnssec.allow_all_policy
                )
            except (dns.dnssec.ValidationFailure, dns.dnssec.UnsupportedAlgorithm) as e:
                reasons.append(f"key tag {tag}: {e or type(e).__name__}")
                continue
            except dns.exception.DNSException as e:  # malformed key or signature
                reasons.append(f"key tag {tag}: {e or type(e).__name__}")
                continue
            return problems
        if is_dnskey and self.has_sep:
            head = f"{what} is not signed by any of its SEP keys (KSK)"
        else:
            head = f"{what} does not validate with the DNSKEY set"
        if reasons:
            head += f": {'; '.join(reasons)}"
        elif not is_dnskey:
            head += ": none of its RRSIGs is by a key in the DNSKEY set"
        problems.append((rrset.where, head))
        return problems


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------


def _sample(pools: tuple[list[Any], ...], size: int, seed: int) -> list[Any]:
    """``size`` RRsets, shared evenly among the non-empty pools, deterministic in ``seed``."""
    taken = [0] * len(pools)
    left = max(0, size)
    active = [i for i, pool in enumerate(pools) if pool]
    while left and active:
        share = max(1, left // len(active))
        for i in list(active):
            take = min(share, len(pools[i]) - taken[i], left)
            taken[i] += take
            left -= take
            if taken[i] == len(pools[i]):
                active.remove(i)
            if not left:
                break
    rng = random.Random(seed)
    chosen: list[Any] = []
    for pool, k in zip(pools, taken, strict=True):
        chosen.extend(pool if k == len(pool) else rng.sample(pool, k))
    return chosen
