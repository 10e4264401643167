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
signs everything). The signed data is assembled and signed in worker processes
(``fork``), keys handed over as PEM. Signatures from a previous run are kept while the
RRset is unchanged, the key still signs that RRset and they do not expire within
*refresh*; ZONEMD (RFC 8976) is computed last, over the final zone.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import logging
import multiprocessing.pool
import os
import struct
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import dns.name

from nameserver.dnssec.keys import SigningKey, private_key_pem
from nameserver.dnssec.nsec3 import (
    ChainEntry,
    key_of,
    key_parent,
    key_to_text,
    key_to_wire,
    nsec3_chain,
    nsec3param_rdata,
    nsec_chain,
)
from nameserver.dnssec.workers import (
    _labels,
    _run,
    _sign_batch,
    _verify_batch,
    worker_pool,
)
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
    _sigtime,
    _sorted_unique,
    _type_text,
)
from nameserver.dnssec.zoneread import read_zone
from nameserver.dnssec.zonewrite import write_zone

__all__ = [
    "RRset",
    "SignError",
    "SignStats",
    "ZoneData",
    "read_zone",
    "sign_zone",
    "worker_pool",
    "write_zone",
]

log = logging.getLogger(__name__)

_STRIPPED = frozenset({RRSIG, NSEC, NSEC3, NSEC3PARAM})
_KSK_TYPES = frozenset({DNSKEY, CDS, CDNSKEY})
_DEFAULT_VALIDITY = timedelta(days=30)
_DEFAULT_INCEPTION_OFFSET = timedelta(hours=1)
_DEFAULT_DNSKEY_TTL = 3600
_PARALLEL_MIN_JOBS = 4000  # fewer signatures than this are made in-process
_BATCH = 1000  # signatures per worker task


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


def _jitter(key: bytes, rdtype: int, spread: int) -> int:
    if spread <= 0:
        return 0
    digest = hashlib.blake2b(key + rdtype.to_bytes(2, "big"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (spread + 1)


class _KeyInfo:
    __slots__ = ("key", "pem", "wire_len")

    def __init__(self, key: SigningKey, signer_len: int):
        self.key = key
        self.pem = private_key_pem(key)
        self.wire_len = signer_len


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
) -> list[RRset]:
    """Sign a zone; return its RRsets in canonical order (each followed by its RRSIGs).

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
    work proceeds. DNSKEY TTL: *dnskey_ttl*, else that of the zone's DNSKEY RRset,
    else 3600. *standby* keys are published in the DNSKEY RRset but sign nothing
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
    refresh_s = _seconds(refresh)
    n_workers = (os.cpu_count() or 1) if workers is None else workers

    with _gc_paused(), contextlib.ExitStack() as stack:
        zone = _as_zone(records, origin, zonemd)
        prev = _as_zone(previous, origin, False, skip_ns=True)
        assert zone is not None
        signer = _Signer(zone, origin, list(keys), stats, keep_sig_canon=zonemd)
        signer.standby = list(standby)
        signer.prepare(dnskey_ttl, zonemd)
        signer.build_chain(nsec3, opt_out, salt, iterations)
        plan = signer.plan(prev, now_s, refresh_s, expiration_s, spread)
        if pool is None and n_workers > 1 and plan.job_count() >= _PARALLEL_MIN_JOBS:
            pool = stack.enter_context(worker_pool(n_workers))
        signer.execute(plan, pool, inception_s, progress)
        del plan
        if zonemd:
            signer.add_zonemd(inception_s)
        out = signer.ordered()
    stats.seconds = time.monotonic() - started
    log.info("signed %s: %s in %.1f s", origin, stats, stats.seconds)
    return out


class _Plan:
    """Signatures to verify and to make, and those kept as they are."""

    def __init__(self) -> None:
        # (rrset, key index, expiration)
        self.sign: list[tuple[RRset, int, int]] = []
        # (rrset, key index, expiration, old text, old canonical rrsig) -> verify first
        self.verify: list[tuple[RRset, int, int, str, bytes]] = []

    def job_count(self) -> int:
        return len(self.sign) + len(self.verify)


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
        self.info = [_KeyInfo(k, len(self.signer_wire)) for k in keys]
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
        self.old_sigs: dict[tuple[bytes, int], RRset] = {}
        self.auth: list[bytes] = []
        self.cuts: list[bytes] = []
        self.secure: set[bytes] = set()
        self.chain_keys: list[bytes] = []
        self.chain: dict[bytes, RRset] = {}  # NSEC3 owners (kept out of the big dict)
        self.nsec3 = True
        self.chain_ttl = 0
        self.sorted_keys: list[bytes] = []
        self.all_keys: list[bytes] = []

    # -- step 1: strip, DNSKEY, classify -------------------------------------------

    def prepare(self, dnskey_ttl: int | None, zonemd: bool) -> None:
        nodes, apex = self.nodes, self.apex
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
                    log.info("replacing the old ZONEMD of %s", self.origin)
                elif rs.rdtype not in _STRIPPED:
                    kept.append(rs)
            _link(nodes, key, kept)
        self.zone.special.clear()
        self.zone._intern.clear()  # merging is over; the strings stay where they are used
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
                    log.warning("dropping DNSKEY %s: no private key for it was loaded", t)
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
        self.sorted_keys = sorted(nodes)
        cut: bytes | None = None
        auth, cuts, secure = self.auth, self.cuts, self.secure
        occluded = 0
        for key in self.sorted_keys:
            if cut is not None and key.startswith(cut):
                occluded += 1
                continue
            cut = None
            has_ns = has_ds = False
            rs: RRset | None = nodes[key]
            while rs is not None:
                if rs.rdtype == NS:
                    has_ns = True
                elif rs.rdtype == DS:
                    has_ds = True
                rs = rs.next
            if has_ns and key != apex:
                cut = key
                cuts.append(key)
                if has_ds:
                    secure.add(key)
            else:
                auth.append(key)
        self.stats.names = len(self.sorted_keys)
        self.stats.delegations = len(cuts)
        self.stats.secure_delegations = len(secure)
        self.stats.occluded = occluded

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
            chain = nsec3_chain(entries, apex, salt=salt, iterations=iterations,
                                opt_out=opt_out)
            param_text, param_wire = nsec3param_rdata(salt, iterations)
            _push(nodes, RRset(apex, NSEC3PARAM, 0, ttl, (param_text,), (param_wire,)))
            for owner_key, text, wire in chain:
                if owner_key in nodes:
                    raise SignError(
                        f"the NSEC3 owner {key_to_text(owner_key)} is also a name in the zone"
                    )
                self.chain[owner_key] = RRset(owner_key, NSEC3, 0, ttl, (text,), (wire,))
                self.chain_keys.append(owner_key)
            self.chain_keys.sort()
            self.stats.chain = len(chain)
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

    # -- step 3: which signatures to keep, verify or make ------------------------------

    def _signing_keys(self, key: bytes, rdtype: int) -> list[int]:
        if key == self.apex and rdtype in _KSK_TYPES:
            return self.ksk_indexes
        return self.zsk_indexes

    def signed_rrsets(self) -> list[RRset]:
        nodes = self.nodes
        out = []
        for key in self.auth:
            out += [rs for rs in _node(nodes[key]) if rs.rdtype not in (ZONEMD, RRSIG)]
        cuts = sorted(self.secure) if self.nsec3 else self.cuts
        for key in cuts:
            rs: RRset | None = nodes[key]
            while rs is not None:
                if rs.rdtype == DS or rs.rdtype == NSEC:
                    out.append(rs)
                rs = rs.next
        out += [self.chain[key] for key in self.chain_keys]
        return out

    def plan(self, prev: ZoneData | None, now: int, refresh: int, expiration: int,
             spread: int) -> _Plan:
        """Decide, per RRset and signing key, to keep, verify-then-keep or make a
        signature. Old signatures: those of *prev*, else the RRSIGs of the input."""
        if prev is not None:
            self.prev_sigs = {(rs.key, rs.covers): rs for rs in prev.rrsets()
                              if rs.rdtype == RRSIG}
        else:
            self.prev_sigs = self.old_sigs
        self.old_sigs = {}
        self.prev = prev
        self.now, self.refresh, self.expiration, self.spread = now, refresh, expiration, spread
        plan = _Plan()
        for rs in self.signed_rrsets():
            self._plan_rrset(plan, rs)
        # Only the ZONEMD's old signatures may still be needed (it is signed last).
        zonemd = self.prev_sigs.get((self.apex, ZONEMD))
        self.prev_sigs = {} if zonemd is None else {(self.apex, ZONEMD): zonemd}
        return plan

    def _plan_rrset(self, plan: _Plan, rs: RRset) -> None:
        _fill_canon(rs)
        keys, prev = self.keys, self.prev
        exp = self.expiration - _jitter(rs.key, rs.rdtype, self.spread)
        indexes = self._signing_keys(rs.key, rs.rdtype)
        candidates: dict[int, tuple[str, bytes]] = {}
        old = self.prev_sigs.get((rs.key, rs.rdtype)) if self.prev_sigs else None
        if old is not None and (prev is None or _same_rrset(prev, rs)):
            labels = _labels(rs.key)
            signer_wire = self.signer_wire
            cut = 18 + len(signer_wire)
            for text, c in zip(old.rdatas, _fill_canon(old), strict=True):
                _cov, alg, lab, ottl, sig_exp, sig_inc, tag = _RRSIG_HEAD.unpack_from(c)
                if lab != labels or ottl != rs.ttl or c[18:cut] != signer_wire:
                    continue
                if sig_exp - self.now <= self.refresh or sig_inc > self.now:
                    continue
                for i in indexes:
                    if keys[i].algorithm == alg and keys[i].key_tag == tag:
                        candidates.setdefault(i, (text, c))
        for i in indexes:
            found = candidates.get(i)
            if found is None:
                plan.sign.append((rs, i, exp))
            elif prev is None:
                plan.verify.append((rs, i, exp, found[0], found[1]))
            else:
                self._attach(rs, self._kept_text(found[1]), found[1])
                self.stats.kept_signatures += 1

    def _kept_text(self, canon: bytes) -> str:
        """An old RRSIG written the way new ones are (so unchanged zones stay identical)."""
        cov, alg, labels, ttl, exp, inc, tag = _RRSIG_HEAD.unpack_from(canon)
        sig = base64.b64encode(canon[18 + len(self.signer_wire) :]).decode("ascii")
        return (f"{_type_text(cov)} {alg} {labels} {ttl} {_sigtime(exp)} {_sigtime(inc)} "
                f"{tag} {self.origin_text} {sig}")

    def _attach(self, rs: RRset, text: str, canon: bytes) -> None:
        nodes = self.chain if rs.rdtype == NSEC3 else self.nodes
        sig = nodes[rs.key]
        while sig is not None and (sig.rdtype != RRSIG or sig.covers != rs.rdtype):
            sig = sig.next
        keep = self.keep_sig_canon
        if sig is None:
            sig = RRset(rs.key, RRSIG, rs.rdtype, rs.ttl, (text,), (canon,) if keep else None)
            _push(nodes, sig)
            return
        sig.rdatas = (*sig.rdatas, text)
        if keep:
            sig.canon = (*(sig.canon or ()), canon)

    # -- step 4: run the jobs --------------------------------------------------------

    def execute(self, plan: _Plan, pool: multiprocessing.pool.Pool | None, inception: int,
                progress: Progress | None) -> None:
        if plan.verify:
            by_key: dict[int, list[tuple[RRset, int, int, str, bytes]]] = {}
            for item in plan.verify:
                by_key.setdefault(item[1], []).append(item)
            for i, items in sorted(by_key.items()):
                info = self.info[i]
                batches = (
                    (info.pem, info.key.algorithm, info.wire_len,
                     [(rs.key, rs.rdtype, rs.ttl, c, rs.canon) for rs, _i, _e, _t, c
                      in items[j : j + _BATCH]])
                    for j in range(0, len(items), _BATCH)
                )
                results = [ok for batch in _run(pool, _verify_batch, batches) for ok in batch]
                for (rs, idx, exp, _text, c), ok in zip(items, results, strict=True):
                    if ok:
                        self._attach(rs, self._kept_text(c), c)
                        self.stats.kept_signatures += 1
                    else:
                        plan.sign.append((rs, idx, exp))
        total = len(plan.sign)
        by_key2: dict[int, list[tuple[RRset, int, int]]] = {}
        for item in plan.sign:
            by_key2.setdefault(item[1], []).append(item)
        done = 0
        signer_text = self.origin_text
        for i, items in sorted(by_key2.items()):
            info = self.info[i]
            batches = (
                (info.pem, info.key.algorithm, info.key.key_tag, self.signer_wire,
                 signer_text, inception,
                 [(rs.key, rs.rdtype, rs.ttl, exp, rs.canon) for rs, _i, exp
                  in items[j : j + _BATCH]])
                for j in range(0, len(items), _BATCH)
            )
            at = 0
            for batch in _run(pool, _sign_batch, batches):
                for text, canon in batch:
                    self._attach(items[at][0], text, canon)
                    at += 1
                done += len(batch)
                if progress is not None:
                    progress("signing", done, total)
        self.stats.new_signatures += total

    # -- step 5: ZONEMD --------------------------------------------------------------

    def add_zonemd(self, inception: int) -> None:
        """RFC 8976 §3: the digest covers the signed zone except the apex ZONEMD RRset
        and its RRSIGs; then the ZONEMD RRset is signed."""
        nodes, apex = self.nodes, self.apex
        digest = hashlib.sha384()
        for key in self._all_keys():
            owner = key_to_wire(key)
            rrsets = _node(self._head(key))
            for rs in sorted(rrsets, key=lambda r: (r.rdtype, r.covers)):
                if key == apex and ZONEMD in (rs.rdtype, rs.covers):
                    continue
                _normalize(rs)
                fixed = owner + _RR_HEAD.pack(rs.rdtype, _IN, rs.ttl)
                for c in _fill_canon(rs):
                    digest.update(fixed + len(c).to_bytes(2, "big") + c)
        value = digest.digest()
        rs = next(r for r in _node(nodes[apex]) if r.rdtype == ZONEMD)
        rs.rdatas = (f"{self.serial} 1 1 {value.hex().upper()}",)
        rs.canon = (struct.pack("!IBB", self.serial, 1, 1) + value,)
        plan = _Plan()
        self._plan_rrset(plan, rs)  # an unchanged zone keeps its ZONEMD signature too
        self.execute(plan, None, inception, None)

    # -- step 6: output order ----------------------------------------------------------

    def _head(self, key: bytes) -> RRset:
        head = self.nodes.get(key)
        return self.chain[key] if head is None else head

    def _all_keys(self) -> list[bytes]:
        if self.chain_keys:
            if not self.all_keys:  # timsort merges the two sorted runs in linear time
                self.all_keys = sorted(self.sorted_keys + self.chain_keys)
            return self.all_keys
        return self.sorted_keys

    def ordered(self) -> list[RRset]:
        out: list[RRset] = []
        append = out.append
        nodes, chain = self.nodes, self.chain
        get = nodes.get
        for key in self._all_keys():
            head = get(key)
            if head is None:
                head = chain[key]
            if head.next is None:
                append(head)
                continue
            node = _node(head)
            node.sort(key=_output_order)
            for rs in node:
                if rs.rdtype == RRSIG:
                    _normalize(rs)
            _link(nodes if key in nodes else chain, key, node)
            out += node
        return out


def _same_rrset(prev: ZoneData, rs: RRset) -> bool:
    old = prev.get(rs.key, rs.rdtype)
    if old is None or old.ttl != rs.ttl:
        return False
    _normalize(old)
    return tuple(_fill_canon(old)) == tuple(_fill_canon(rs))
