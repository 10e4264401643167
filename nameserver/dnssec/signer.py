"""Offline zone signer: DNSKEY, RRSIG, NSEC3 (or NSEC) and ZONEMD for a whole zone.

The serving engine never signs: it serves the records this module writes. The work is
split into modules with one job each: :mod:`~nameserver.dnssec.zonedata` (the RRsets
and their text and canonical forms), :mod:`~nameserver.dnssec.zoneread` (reading),
:mod:`~nameserver.dnssec.workers` (signatures in worker processes) and
:mod:`~nameserver.dnssec.zonewrite` (writing); this module decides what to sign.

:func:`sign_zone` strips old DNSSEC records, adds the keys' DNSKEYs, finds zone cuts
(NS below the apex: the NS RRset and glue/occluded data below it stay unsigned, DS is
signed), builds the NSEC3 chain (opt-out by default) or an NSEC chain, and signs every
authoritative RRset: the KSKs sign DNSKEY/CDS/CDNSKEY, the ZSKs the rest (one key alone
signs everything). Signatures from a previous run are kept while the RRset is
unchanged, the key still signs that RRset and they do not expire within *refresh*;
ZONEMD (RFC 8976) is computed last, over the final zone.

The output is a stream (:func:`sign_zone_iter`): the names are walked in canonical
order, signing jobs go to the worker processes (``fork``, keys handed over as PEM) in
batches a few ahead of the output, and each batch's RRsets come out with their RRSIGs
as soon as it is back, so that writing (in this process) overlaps with signing and the
signatures are never all in memory.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import heapq
import itertools
import os
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import dns.name

from nameserver.dnssec.keys import SigningKey, private_key_pem
from nameserver.dnssec.nsec3 import (
    ChainEntry,
    Nsec3Chain,
    key_of,
    key_parent,
    key_to_text,
    key_to_wire,
    nsec3param_rdata,
    nsec_chain,
)
from nameserver.dnssec.workers import _labels, rrsig_text, sign_jobs, worker_pool
from nameserver.dnssec.zonedata import (
    _IN,
    _RR_HEAD,
    _RRSIG_HEAD,
    CDNSKEY,
    CDS,
    DNSKEY,
    DS,
    NS,
    NSEC,
    NSEC3,
    NSEC3PARAM,
    RRSIG,
    SOA,
    ZONEMD,
    Progress,
    RRset,
    SignError,
    ZoneData,
    _fill_canon,
    _gc_paused,
    _link,
    _node,
    _normalize,
    _output_order,
    _push,
    _rrset,
    _sorted_unique,
)
from nameserver.dnssec.zoneread import read_zone
from nameserver.dnssec.zonewrite import write_zone

if TYPE_CHECKING:
    import logging
    import multiprocessing.pool

__all__ = [
    "RRset",
    "SignError",
    "SignStats",
    "ZoneData",
    "read_zone",
    "sign_zone",
    "sign_zone_iter",
    "worker_pool",
    "write_zone",
]



def _log() -> logging.Logger:
    """The module's logger (logging is imported when there is something to say)."""
    import logging

    return logging.getLogger(__name__)


_STRIPPED = frozenset({RRSIG, NSEC, NSEC3, NSEC3PARAM})
_KSK_TYPES = frozenset({DNSKEY, CDS, CDNSKEY})
_DEFAULT_VALIDITY = timedelta(days=30)
_DEFAULT_INCEPTION_OFFSET = timedelta(hours=1)
_DEFAULT_DNSKEY_TTL = 3600
_PARALLEL_MIN_JOBS = 4000  # fewer signatures than this are made in-process
_BATCH = 1000  # signatures per worker task (at most; a small zone gets smaller ones)


class SignStats:
    """What :func:`sign_zone` did (also logged)."""

    def __init__(self) -> None:
        self.names = 0
        self.delegations = 0
        self.secure_delegations = 0
        self.occluded = 0
        self.chain = 0
        self.new_signatures = 0
        self.kept_signatures = 0
        self.seconds = 0.0

    def __str__(self) -> str:
        return (
            f"{self.names} names, {self.delegations} delegations "
            f"({self.secure_delegations} with DS), {self.occluded} glue/occluded names, "
            f"{self.chain} chain records, {self.new_signatures} new and "
            f"{self.kept_signatures} kept signatures"
        )


def _epoch(value: datetime | float | int | None, default: float) -> int:
    if value is None:
        return int(default)
    if isinstance(value, datetime):
        return int(value.timestamp())
    return int(value)


def _seconds(value: timedelta | float | int) -> int:
    return int(value.total_seconds()) if isinstance(value, timedelta) else int(value)


def _as_zone(
    records: Iterable[Any] | ZoneData | None, origin: dns.name.Name, canon_all: bool,
    skip_ns: bool = False,
) -> ZoneData | None:
    if records is None or isinstance(records, ZoneData):
        return records
    return ZoneData.from_records(records, origin, canon_all=canon_all,
                                 skip_delegation_ns=skip_ns)


def _soa_fields(rs: RRset) -> tuple[int, int]:
    """(serial, minimum) of the SOA RRset."""
    canon = _fill_canon(rs)[0]
    # mname, rname (uncompressed names), then serial refresh retry expire minimum
    i = 0
    for _ in range(2):
        while canon[i]:
            i += canon[i] + 1
        i += 1
    serial, _r, _t, _e, minimum = struct.unpack_from("!IIIII", canon, i)
    return serial, minimum


def sign_zone(
    records: Iterable[Any] | ZoneData,
    origin: dns.name.Name | str,
    keys: Sequence[SigningKey],
    **options: Any,
) -> list[RRset]:
    """Sign a zone; return its RRsets in canonical order (each followed by its RRSIGs).

    The arguments are those of :func:`sign_zone_iter`; this collects its RRsets.
    """
    return list(sign_zone_iter(records, origin, keys, **options))


def sign_zone_iter(
    records: Iterable[Any] | ZoneData,
    origin: dns.name.Name | str,
    keys: Sequence[SigningKey],
    *,
    nsec3: bool = True,
    opt_out: bool = True,
    salt: bytes = b"",
    iterations: int = 0,
    inception: datetime | int | None = None,
    expiration: datetime | int | None = None,
    jitter: timedelta | int | None = None,
    zonemd: bool = False,
    previous: Iterable[Any] | ZoneData | None = None,
    refresh: timedelta | int = timedelta(days=7),
    workers: int | None = None,
    progress: Progress | None = None,
    now: datetime | int | None = None,
    dnskey_ttl: int | None = None,
    pool: multiprocessing.pool.Pool | None = None,
    stats: SignStats | None = None,
    standby: Sequence[SigningKey] = (),
) -> Iterator[RRset]:
    """Sign a zone; yield its RRsets in canonical order (each followed by its RRSIGs)
    as they are ready, so that writing them overlaps with the signing in workers.

    The zone is checked, classified and given its NSEC3 or NSEC chain before this
    returns (errors are raised here); signatures are made as the RRsets are consumed
    (with ZONEMD, all of them before the first RRset comes).

    *records*: reader records (name, ttl, rdtype, rdata) or a :class:`ZoneData` (which
    is consumed: its RRsets are reused in the result). *keys*: the zone's keys; KSKs
    sign DNSKEY/CDS/CDNSKEY and ZSKs the rest (one kind alone signs everything).

    Validity: *inception* (default now - 1 h) to *expiration* (default now + 30 days),
    seconds since the epoch or datetimes; each RRset's expiration is moved earlier by a
    deterministic per-RRset amount of up to *jitter* (default a quarter of the
    validity) so that re-signing spreads out. *iterations*/*salt* default to RFC 9276's
    0 and empty. *previous*: an earlier signed version of the zone; without it,
    RRSIGs in *records* are the previous signatures (each one verified before it is
    kept). A previous signature is kept if its RRset is unchanged, its key still signs
    that RRset and it expires more than *refresh* after *now*.

    *workers*: processes for signing (default: CPU count; a *pool* from
    :func:`worker_pool` is used if given). *progress(phase, done, total)* is called as
    signed RRsets are done. DNSKEY TTL: *dnskey_ttl*, else that of the zone's DNSKEY
    RRset, else 3600. *standby* keys are published in the DNSKEY RRset but sign nothing
    (pre-publication and post-publication in a rollover).
    """
    started = time.monotonic()
    origin = dns.name.from_text(origin) if isinstance(origin, str) else origin
    stats = stats if stats is not None else SignStats()
    if not keys:
        raise SignError("no keys to sign with")
    for k in (*keys, *standby):
        if k.origin != origin:
            raise SignError(f"key {k.describe()} is for {k.origin}, not {origin}")
    now_s = _epoch(now, time.time())
    inception_s = _epoch(inception, now_s - _DEFAULT_INCEPTION_OFFSET.total_seconds())
    expiration_s = _epoch(expiration, now_s + _DEFAULT_VALIDITY.total_seconds())
    if expiration_s <= inception_s:
        raise SignError("signature expiration must come after the inception")
    if expiration_s <= now_s:
        raise SignError("signature expiration is in the past")
    validity = expiration_s - inception_s
    spread = validity // 4 if jitter is None else _seconds(jitter)
    spread = max(0, min(spread, validity // 2, (expiration_s - now_s) // 2))
    n_workers = (os.cpu_count() or 1) if workers is None else workers

    with _gc_paused():
        zone = _as_zone(records, origin, zonemd)
        prev = _as_zone(previous, origin, False, skip_ns=True)
        assert zone is not None
        signer = _Signer(zone, origin, list(keys), stats, keep_sig_canon=zonemd)
        signer.standby = list(standby)
        signer.prepare(dnskey_ttl, zonemd)
        signer.build_chain(nsec3, opt_out, salt, iterations)
        signer.set_validity(prev, now_s, _seconds(refresh), inception_s, expiration_s, spread)
    return itertools.chain.from_iterable(signer.stream(pool, n_workers, progress, started))


# Where a signing job's RRSIG goes: its place in the batch's output, the RRset it signs
# and, when the RRset has more than one signature, the list gathering them.
_Ref = tuple[int, RRset, list[tuple[str, bytes | None]] | None]
# A batch of signing jobs under way: (its result or AsyncResult, where each of its
# RRSIGs goes, the output it completes in order, how many RRsets it signs).
_Batch = tuple[Any, list[_Ref], list[Any], int]


class _Signer:
    def __init__(self, zone: ZoneData, origin: dns.name.Name, keys: list[SigningKey],
                 stats: SignStats, keep_sig_canon: bool):
        self.zone = zone
        self.nodes = zone.nodes
        self.origin = origin
        self.origin_text = origin.to_text()
        self.apex = key_of(origin)
        self.signer_wire = key_to_wire(self.apex)
        self.keys = keys
        # Keys as jobs get them: the key itself in this process, its PEM in workers.
        self.local_keys = tuple((k.private_key, k.algorithm, k.key_tag) for k in keys)
        self.pem_keys: tuple[tuple[bytes, int, int], ...] | None = None
        # Per algorithm (RFC 4035 §2.2: every algorithm signs every RRset): its KSKs sign
        # DNSKEY/CDS/CDNSKEY and its ZSKs the rest; a key of one kind alone does both.
        self.ksk_indexes: list[int] = []
        self.zsk_indexes: list[int] = []
        for algorithm in sorted({k.algorithm for k in keys}):
            ksk = [i for i, k in enumerate(keys) if k.algorithm == algorithm and k.ksk]
            zsk = [i for i, k in enumerate(keys) if k.algorithm == algorithm and not k.ksk]
            self.ksk_indexes += ksk or zsk
            self.zsk_indexes += zsk or ksk
        self.standby: list[SigningKey] = []
        self.stats = stats
        self.keep_sig_canon = keep_sig_canon
        self.zonemd = False
        self.old_sigs: dict[tuple[bytes, int], RRset] = {}
        self.prev_sigs: dict[tuple[bytes, int], RRset] = {}
        self.prev: ZoneData | None = None
        self.auth: list[bytes] = []
        self.cuts: list[bytes] = []
        self.secure: set[bytes] = set()
        self.auth_rrsets = 0  # RRsets at authoritative names (the ZONEMD aside)
        self.to_sign = 0  # RRsets to sign
        self.done = 0
        self.chain: Nsec3Chain | None = None  # its records are made as they are written
        self.nsec3 = True
        self.chain_ttl = 0
        self.keys_in_order: list[bytes] = []  # every owner (the NSEC3 ones too), in order

    # -- step 1: strip, DNSKEY, classify -------------------------------------------

    def prepare(self, dnskey_ttl: int | None, zonemd: bool) -> None:
        nodes, apex = self.nodes, self.apex
        self.zonemd = zonemd
        apex_node = _node(nodes.get(apex))
        soa = next((rs for rs in apex_node if rs.rdtype == SOA), None)
        if soa is None:
            raise SignError(f"the zone has no SOA record at its apex {self.origin}")
        if len(soa.rdatas) != 1:
            raise SignError(f"the zone has {len(soa.rdatas)} SOA records; it needs exactly one")
        if not any(rs.rdtype == NS for rs in apex_node):
            raise SignError(f"the zone has no NS records at its apex {self.origin}")
        self.serial, minimum = _soa_fields(soa)
        self.soa_ttl = soa.ttl
        self.chain_ttl = min(minimum, soa.ttl)  # RFC 9077

        # Old RRSIGs are kept aside (re-sign mode); NSEC/NSEC3/NSEC3PARAM and the apex
        # ZONEMD are regenerated.
        for key in self.zone.special:
            kept = []
            for rs in _node(nodes[key]):
                if rs.rdtype == RRSIG:
                    self.old_sigs[(key, rs.covers)] = rs
                elif rs.rdtype == ZONEMD and key == apex:
                    _log().info("replacing the old ZONEMD of %s", self.origin)
                elif rs.rdtype not in _STRIPPED:
                    kept.append(rs)
            _link(nodes, key, kept)
        self.zone.special.clear()
        self.zone._intern_sets.clear()
        apex_node = _node(nodes.get(apex))

        # DNSKEY: the zone's own only where they are loaded keys, plus every loaded key.
        old = next((rs for rs in apex_node if rs.rdtype == DNSKEY), None)
        wanted: dict[bytes, str] = {}
        for k in self.keys + self.standby:
            b64 = base64.b64encode(k.dnskey.key).decode("ascii")
            wanted[k.dnskey.to_digestable()] = (
                f"{k.dnskey.flags} {k.dnskey.protocol} {k.algorithm} {b64}"
            )
        ttl = dnskey_ttl
        if old is not None:
            for c, t in zip(_fill_canon(old), old.rdatas, strict=True):
                if c not in wanted:
                    _log().warning("dropping DNSKEY %s: no private key for it was loaded", t)
            ttl = old.ttl if ttl is None else ttl
            apex_node.remove(old)
        ttl = _DEFAULT_DNSKEY_TTL if ttl is None else ttl
        texts, canons = _sorted_unique(list(wanted.values()), list(wanted))
        apex_node.append(RRset(apex, DNSKEY, 0, ttl, texts, canons))
        if zonemd:
            placeholder = f"{self.serial} 1 1 " + "00" * 48
            wire = struct.pack("!IBB", self.serial, 1, 1) + bytes(48)
            apex_node.append(RRset(apex, ZONEMD, 0, self.soa_ttl, (placeholder,), (wire,)))
        _link(nodes, apex, apex_node)

        # Zone cuts: NS below the apex. Below a cut everything is glue or occluded.
        self.keys_in_order = sorted(nodes)
        cut: bytes | None = None
        auth, cuts, secure = self.auth, self.cuts, self.secure
        occluded = auth_rrsets = 0
        for key in self.keys_in_order:
            if cut is not None and key.startswith(cut):
                occluded += 1
                continue
            rs: RRset | None = nodes[key]
            if rs.next is None and rs.rdtype == NS and key != apex:  # type: ignore[union-attr]
                cut = key  # an unsigned delegation, the commonest name of a TLD
                cuts.append(key)
                continue
            cut = None
            has_ns = has_ds = False
            count = 0
            while rs is not None:
                if rs.rdtype == NS:
                    has_ns = True
                elif rs.rdtype == DS:
                    has_ds = True
                count += 1
                rs = rs.next
            if has_ns and key != apex:
                cut = key
                cuts.append(key)
                if has_ds:
                    secure.add(key)
            else:
                auth.append(key)
                auth_rrsets += count
        self.stats.names = len(self.keys_in_order)
        self.stats.delegations = len(cuts)
        self.stats.secure_delegations = len(secure)
        self.stats.occluded = occluded
        self.auth_rrsets = auth_rrsets - (1 if zonemd else 0)

    # -- step 2: NSEC3 or NSEC chain -----------------------------------------------

    def build_chain(self, nsec3: bool, opt_out: bool, salt: bytes, iterations: int) -> None:
        nodes, apex, secure = self.nodes, self.apex, self.secure
        ttl = self.chain_ttl
        self.nsec3 = nsec3
        if nsec3:
            entries: list[ChainEntry] = []
            members = set()
            for key in self.auth:
                types = [rs.rdtype for rs in _node(nodes[key])]
                types.append(RRSIG)
                if key == apex:
                    types.append(NSEC3PARAM)
                entries.append((key, types))
                members.add(key)
            for key in self.cuts:
                if key in secure:
                    entries.append((key, (NS, DS, RRSIG)))
                elif not opt_out:
                    entries.append((key, (NS,)))
                else:
                    continue  # opt-out: an unsigned delegation gets no NSEC3
                members.add(key)
            # Empty non-terminals above the names in the chain (RFC 5155 §7.1); with
            # opt-out, those above unsigned delegations only are left out with them.
            for key, _types in list(entries):
                parent = key_parent(key)
                while len(parent) > len(apex) and parent not in members and parent not in nodes:
                    members.add(parent)
                    entries.append((parent, ()))
                    parent = key_parent(parent)
            chain = Nsec3Chain(entries, apex, salt=salt, iterations=iterations,
                               opt_out=opt_out)
            del entries, members
            param_text, param_wire = nsec3param_rdata(salt, iterations)
            _push(nodes, RRset(apex, NSEC3PARAM, 0, ttl, (param_text,), (param_wire,)))
            for owner_key in chain.owners:
                if owner_key in nodes:
                    raise SignError(
                        f"the NSEC3 owner {key_to_text(owner_key)} is also a name in the zone"
                    )
            self.chain = chain
            # The NSEC3 owners among the names, in order (timsort merges the two runs).
            self.keys_in_order += chain.owners
            self.keys_in_order.sort()
            self.stats.chain = len(chain)
            self.to_sign = self.auth_rrsets + 1 + len(secure) + len(chain)  # 1: NSEC3PARAM
        else:
            cut_set = set(self.cuts)
            entries = []
            for key in heapq.merge(self.auth, self.cuts):
                if key in cut_set:
                    types: Sequence[int] = (NS, DS, RRSIG, NSEC) if key in secure else (
                        NS, RRSIG, NSEC)
                else:
                    types = [rs.rdtype for rs in _node(nodes[key])] + [RRSIG, NSEC]
                entries.append((key, types))
            for key, text, wire in nsec_chain(entries):
                _push(nodes, RRset(key, NSEC, 0, ttl, (text,), (wire,)))
            self.stats.chain = len(entries)
            self.to_sign = self.auth_rrsets + len(secure) + len(entries)
        # The stream classifies the names again as it goes: these served the chain.
        self.auth, self.cuts, self.secure = [], [], set()

    # -- step 3: which signatures to keep, verify or make ------------------------------

    def set_validity(self, prev: ZoneData | None, now: int, refresh: int, inception: int,
                     expiration: int, spread: int) -> None:
        """The signatures' validity, and the old ones that may be kept: those of *prev*,
        else the RRSIGs of the input (verified before they are kept)."""
        if prev is not None:
            self.prev_sigs = {(rs.key, rs.covers): rs for rs in prev.rrsets()
                              if rs.rdtype == RRSIG}
        else:
            self.prev_sigs = self.old_sigs
        self.old_sigs = {}
        self.prev = prev
        self.now, self.refresh, self.spread = now, refresh, spread
        self.inception, self.expiration = inception, expiration

    def _sign(self, rs: RRset, output: list[Any], jobs: list[tuple[Any, ...]],
              refs: list[_Ref]) -> None:
        """Put *rs* in the output, followed by the place of its RRSIG RRset, and add the
        jobs that sign it (one per signing key), or keep old signatures."""
        output.append(rs)
        pos = len(output)
        output.append(None)  # the RRSIG RRset, once made
        canons = rs.canon
        if canons is None:
            canons = _fill_canon(rs)
        key, rdtype = rs.key, rs.rdtype
        if key == self.apex and rdtype in _KSK_TYPES:
            indexes = self.ksk_indexes
        else:
            indexes = self.zsk_indexes
        old = self.prev_sigs.get((key, rdtype)) if self.prev_sigs else None
        if old is None and len(indexes) == 1:  # one new signature: the usual case
            jobs.append((indexes[0], key, rdtype, rs.ttl, canons, None))
            refs.append((pos, rs, None))
            return
        keys, prev = self.keys, self.prev
        candidates: dict[int, bytes] = {}
        if old is not None and (prev is None or _same_rrset(prev, rs)):
            labels = _labels(key)
            signer_wire = self.signer_wire
            cut = 18 + len(signer_wire)
            for c in _fill_canon(old):
                _cov, alg, lab, ottl, sig_exp, sig_inc, tag = _RRSIG_HEAD.unpack_from(c)
                if lab != labels or ottl != rs.ttl or c[18:cut] != signer_wire:
                    continue
                if sig_exp - self.now <= self.refresh or sig_inc > self.now:
                    continue
                for i in indexes:
                    if keys[i].algorithm == alg and keys[i].key_tag == tag:
                        candidates.setdefault(i, c)
        found_sigs: list[tuple[str, bytes | None]] = []  # RRSIGs of rs, as they come
        waiting = False
        for i in indexes:
            found = candidates.get(i)
            if found is not None and prev is not None:
                text = rrsig_text(found, len(self.signer_wire), self.origin_text)
                found_sigs.append((text, found if self.keep_sig_canon else None))
                self.stats.kept_signatures += 1
                continue
            # Without a previous zone, an old signature found in the input is verified
            # (in the worker) before it is kept.
            jobs.append((i, key, rdtype, rs.ttl, canons, found))
            refs.append((pos, rs, found_sigs))
            waiting = True
        if not waiting:
            output[pos] = self._rrsig(rs, found_sigs)

    # -- step 4: sign in order, as the output is consumed ---------------------------

    def stream(self, pool: multiprocessing.pool.Pool | None, workers: int,
               progress: Progress | None, started: float) -> Iterator[list[RRset]]:
        """The signed zone's RRsets in canonical order, in lists (a generator)."""
        with _gc_paused(), contextlib.ExitStack() as stack:
            if pool is None and workers > 1 and self.to_sign >= _PARALLEL_MIN_JOBS:
                pool = stack.enter_context(worker_pool(workers))
            batches = self._signed(pool, workers, progress)
            if self.zonemd:
                out = list(itertools.chain.from_iterable(batches))
                self._add_zonemd(out)
                yield out
            else:
                yield from batches
        stats = self.stats
        stats.seconds = time.monotonic() - started
        _log().info("signed %s: %s in %.1f s", self.origin, stats, stats.seconds)

    def _signed(self, pool: multiprocessing.pool.Pool | None, workers: int,
                progress: Progress | None) -> Iterator[list[RRset]]:
        """Walk the names in canonical order, hand out signing jobs in batches (a few
        batches ahead of the output) and yield, batch by batch, the owners' RRsets with
        their RRSIGs as the batches come back."""
        nodes, chain, apex, chain_ttl = self.nodes, self.chain, self.apex, self.chain_ttl
        at = 0  # the next NSEC3 record (they come in order)
        get = nodes.get
        sign = self._sign
        skip_zonemd = self.zonemd
        window: collections.deque[_Batch] = collections.deque()
        limit = 2 * workers + 1 if pool is not None else 0
        # Enough batches to keep every worker busy, however small the zone.
        size = min(_BATCH, max(64, self.to_sign // (4 * workers))) if pool else _BATCH
        jobs: list[tuple[Any, ...]] = []
        refs: list[_Ref] = []
        output: list[Any] = []
        append = output.append
        signed_here = 0
        cut: bytes | None = None
        for key in self.keys_in_order:
            head = get(key)
            if head is None:  # an NSEC3 record
                _owner, text, wire = chain.record(at)  # type: ignore[union-attr]
                at += 1
                sign(_rrset(key, NSEC3, 0, chain_ttl, text, wire), output, jobs, refs)
                signed_here += 1
            elif cut is not None and key.startswith(cut):
                # Glue or occluded data below a zone cut: as it is.
                if head.next is None:
                    append(head)
                else:
                    output += _sorted_node(head)
                continue
            elif head.next is None and head.rdtype == NS and key != apex:
                cut = key  # an unsigned delegation (NS alone): nothing to sign
                append(head)
                continue
            else:
                cut = None
                node = [head] if head.next is None else _sorted_node(head)
                if key == apex:
                    for rs in node:
                        if skip_zonemd and rs.rdtype == ZONEMD:
                            append(rs)  # signed last, over the whole zone
                        else:
                            sign(rs, output, jobs, refs)
                            signed_here += 1
                elif NS in [rs.rdtype for rs in node]:
                    cut = key  # a delegation: only its DS (and NSEC) are signed
                    for rs in node:
                        if rs.rdtype == DS or rs.rdtype == NSEC:
                            sign(rs, output, jobs, refs)
                            signed_here += 1
                        else:
                            append(rs)
                else:
                    for rs in node:
                        sign(rs, output, jobs, refs)
                    signed_here += len(node)
            if len(jobs) >= size:
                window.append(self._submit(pool, jobs, refs, output, signed_here))
                jobs, refs, output, signed_here = [], [], [], 0
                append = output.append
                while len(window) > limit:
                    yield self._finish(window.popleft(), progress)
        window.append(self._submit(pool, jobs, refs, output, signed_here))
        while window:
            yield self._finish(window.popleft(), progress)

    def _submit(self, pool: multiprocessing.pool.Pool | None, jobs: list[tuple[Any, ...]],
                refs: list[_Ref], output: list[Any], signed: int) -> _Batch:
        if not jobs:
            return ([], None, 0), refs, output, signed
        rest = (self.signer_wire, self.origin_text, self.inception, self.expiration,
                self.spread, self.keep_sig_canon, jobs)
        if pool is None:
            return sign_jobs((self.local_keys, *rest)), refs, output, signed
        if self.pem_keys is None:
            self.pem_keys = tuple((private_key_pem(k), k.algorithm, k.key_tag)
                                  for k in self.keys)
        return pool.apply_async(sign_jobs, ((self.pem_keys, *rest),)), refs, output, signed

    def _finish(self, batch: _Batch, progress: Progress | None) -> list[RRset]:
        """The batch's output in order, its RRSIGs in place."""
        pending, refs, output, signed = batch
        texts, canons, kept = pending if type(pending) is tuple else pending.get()
        stats = self.stats
        stats.kept_signatures += kept
        stats.new_signatures += len(texts) - kept
        gathered = []
        if canons is None:
            canons = [None] * len(texts)
        for (pos, rs, found), text, canon in zip(refs, texts, canons, strict=True):
            if found is None:
                output[pos] = _rrset(rs.key, RRSIG, rs.rdtype, rs.ttl, text, canon)
            else:
                found.append((text, canon))
                gathered.append((pos, rs, found))
        for pos, rs, found in gathered:
            output[pos] = self._rrsig(rs, found)
        if signed:
            self.done += signed
            if progress is not None:
                progress("signing", self.done, self.to_sign)
        return output

    def _rrsig(self, rs: RRset, found: list[tuple[str, bytes | None]]) -> RRset:
        """The RRSIG RRset of *rs* (RDATA in canonical order where known, else by text)."""
        texts = [text for text, _c in found]
        canons = [c for _t, c in found] if self.keep_sig_canon else None
        if len(texts) > 1:
            texts, canons = _sorted_unique(texts, canons)  # type: ignore[assignment]
        return RRset(rs.key, RRSIG, rs.rdtype, rs.ttl, texts, canons)

    # -- step 5: ZONEMD --------------------------------------------------------------

    def _add_zonemd(self, out: list[RRset]) -> None:
        """RFC 8976 §3: the digest covers the signed zone except the apex ZONEMD RRset
        and its RRSIGs; then the ZONEMD RRset is signed."""
        apex = self.apex
        digest = hashlib.sha384()
        at = 0
        while at < len(out):
            key = out[at].key
            end = at + 1
            while end < len(out) and out[end].key == key:
                end += 1
            owner = key_to_wire(key)
            for rs in sorted(out[at:end], key=lambda r: (r.rdtype, r.covers)):
                if key == apex and ZONEMD in (rs.rdtype, rs.covers):
                    continue
                fixed = owner + _RR_HEAD.pack(rs.rdtype, _IN, rs.ttl)
                for c in _fill_canon(rs):
                    digest.update(fixed + len(c).to_bytes(2, "big") + c)
            at = end
        value = digest.digest()
        where = next(i for i, r in enumerate(out) if r.key == apex and r.rdtype == ZONEMD)
        rs = out[where]
        rs.rdatas = (f"{self.serial} 1 1 {value.hex().upper()}",)
        rs.canon = (struct.pack("!IBB", self.serial, 1, 1) + value,)
        jobs: list[tuple[Any, ...]] = []
        refs: list[_Ref] = []
        placed: list[Any] = []
        self._sign(rs, placed, jobs, refs)  # an unchanged zone keeps its ZONEMD signature too
        out.insert(where + 1, self._finish(self._submit(None, jobs, refs, placed, 0), None)[1])


def _sorted_node(head: RRset) -> list[RRset]:
    """An owner's RRsets in output order (by type: no RRSIGs among them yet)."""
    following = head.next
    if following is not None and following.next is None:  # two: glue's A and AAAA, ...
        return [head, following] if head.rdtype < following.rdtype else [following, head]
    node = _node(head)
    node.sort(key=_output_order)
    return node


def _same_rrset(prev: ZoneData, rs: RRset) -> bool:
    old = prev.get(rs.key, rs.rdtype)
    if old is None or old.ttl != rs.ttl:
        return False
    _normalize(old)
    return tuple(_fill_canon(old)) == tuple(_fill_canon(rs))
