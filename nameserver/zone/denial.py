"""Indexes of a signed zone's denial-of-existence chains (NSEC3 or NSEC).

Both are sorted arrays searched with ``bisect``: NSEC3 by raw hash (RFC 5155),
NSEC by canonical name order (RFC 4034 §6.1). ``match`` finds the record owned by
a name; ``cover`` finds the record whose interval contains a name that has none.
"""

from __future__ import annotations

import base64
import hashlib
from bisect import bisect_right
from hashlib import sha1

from nameserver.wire import label_list
from nameserver.zone.tree import RRset


class Nsec3Chain:
    """The NSEC3 records of one parameter set, sorted by owner hash."""

    __slots__ = ("iterations", "salt", "plain", "hashes", "rrsets", "by_hash", "encloser_memo")

    def __init__(self, iterations: int, salt: bytes, records: list[tuple[bytes, RRset]]):
        self.iterations = iterations
        self.salt = salt
        self.plain = not iterations and not salt  # RFC 9276's advice: one SHA-1, no salt
        records.sort(key=lambda item: item[0])
        self.hashes = [h for h, _ in records]
        self.rrsets = [r for _, r in records]
        self.by_hash = dict(records)
        # Closest encloser -> (closest provable encloser, its NSEC3, the NSEC3 covering
        # its wildcard): filled by the engine as NXDOMAIN answers are made.
        self.encloser_memo: dict[bytes, tuple[bytes, RRset, RRset]] = {}

    def hash(self, key: bytes) -> bytes:
        """RFC 5155 §5: SHA-1 over the canonical (lowercased) wire name, iterated."""
        if self.plain:
            return sha1(key).digest()
        digest = hashlib.sha1(key + self.salt).digest()
        for _ in range(self.iterations):
            digest = hashlib.sha1(digest + self.salt).digest()
        return digest

    def match(self, key: bytes) -> RRset | None:
        return self.by_hash.get(self.hash(key))

    def cover(self, key: bytes) -> RRset:
        """The NSEC3 whose owner hash precedes hash(key) (wrapping at the start)."""
        return self.rrsets[bisect_right(self.hashes, self.hash(key)) - 1]

    def opt_out(self, rrset: RRset) -> bool:
        parts = rrset.rdatas[0]
        assert isinstance(parts, bytes)
        return bool(parts[3] & 1)  # rdlen(2), algorithm(1), flags(1)


def nsec3_owner_hash(first_label: bytes) -> bytes | None:
    """The raw hash from an NSEC3 owner's base32hex label, or None if it is not one."""
    try:
        return base64.b32hexdecode(first_label.upper())
    except (ValueError, TypeError):
        return None


def canonical_key(key: bytes) -> tuple[bytes, ...]:
    """Sort key of RFC 4034 §6.1: labels from the root down, lowercased."""
    return tuple(reversed(label_list(key.lower())))


class NsecChain:
    """The NSEC records of a zone, sorted in canonical order."""

    __slots__ = ("keys", "rrsets", "by_key")

    def __init__(self, records: list[tuple[bytes, RRset]]):
        ordered = sorted(records, key=lambda item: canonical_key(item[0]))
        self.keys = [canonical_key(k) for k, _ in ordered]
        self.rrsets = [r for _, r in ordered]
        self.by_key = dict(records)

    def match(self, key: bytes) -> RRset | None:
        return self.by_key.get(key)

    def cover(self, key: bytes) -> RRset:
        """The NSEC whose owner is the last name before ``key`` in canonical order."""
        return self.rrsets[bisect_right(self.keys, canonical_key(key)) - 1]
