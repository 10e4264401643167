"""Denial-of-existence chains (NSEC3 per RFC 5155, NSEC per RFC 4034) and name keys.

The signer handles millions of names, so names are not dnspython objects here but
*keys*: byte strings whose plain byte order is the canonical DNS name order of
RFC 4034 §6.1. A key is the name's labels from the root down, lowercased, each
followed by a NUL; the bytes 0x00 and 0x01 inside a label are escaped as 0x01 0x01 and
0x01 0x02 so that the terminator sorts before every label byte. The root is ``b""``,
``coop.`` is ``b"coop\\0"`` and ``nic.coop.`` is ``b"coop\\0nic\\0"``; a name's
subtree is the contiguous run of keys that start with its key.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence

import dns.name
import dns.rdatatype

from nameserver.wire import label_list

__all__ = [
    "NSEC3_HASH_SHA1",
    "Nsec3Chain",
    "OPT_OUT",
    "ChainEntry",
    "b32hex",
    "key_label_count",
    "key_labels",
    "key_of",
    "key_of_wire",
    "key_parent",
    "key_to_name",
    "key_to_text",
    "key_to_wire",
    "key_is_wild",
    "nsec3_hash",
    "nsec3_chain",
    "nsec3param_rdata",
    "nsec_chain",
    "type_bitmap",
    "types_text",
]

NSEC3_HASH_SHA1 = 1
OPT_OUT = 0x01

# (owner key, types at the name) of a name that gets a chain record.
ChainEntry = tuple[bytes, Sequence[int]]


# ---------------------------------------------------------------------------
# Name keys
# ---------------------------------------------------------------------------


def _escape(label: bytes) -> bytes:
    if b"\x00" in label or b"\x01" in label:
        label = label.replace(b"\x01", b"\x01\x02").replace(b"\x00", b"\x01\x01")
    return label


def _unescape(part: bytes) -> bytes:
    if b"\x01" not in part:
        return part
    out = bytearray()
    i = 0
    while i < len(part):
        if part[i] == 1:
            out.append(part[i + 1] - 1)
            i += 2
        else:
            out.append(part[i])
            i += 1
    return bytes(out)


def key_of(name: dns.name.Name) -> bytes:
    """The canonical-order key of an absolute name."""
    labels = name.labels
    if labels and labels[-1] == b"":
        labels = labels[:-1]
    return b"".join(_escape(label.lower()) + b"\x00" for label in reversed(labels))


def key_of_wire(wire: bytes) -> bytes:
    """The canonical-order key of an absolute name in uncompressed wire form."""
    labels = label_list(wire)
    if not labels:
        return b""
    labels.reverse()
    key = b"\x00".join(labels) + b"\x00"
    if key.count(b"\x00") != len(labels) or b"\x01" in key:  # NUL or 0x01 in a label
        key = b"".join(_escape(label) + b"\x00" for label in labels)
    return key.lower()


def key_labels(key: bytes) -> list[bytes]:
    """The name's labels, leftmost first (lowercased, root excluded)."""
    if not key:
        return []
    return [_unescape(part) for part in reversed(key[:-1].split(b"\x00"))]


_LENGTH = [bytes((n,)) for n in range(256)]


def key_to_wire(key: bytes) -> bytes:
    """Canonical (lowercased, uncompressed) wire form of the key's name."""
    if not key:
        return b"\x00"
    labels = key[:-1].split(b"\x00")
    if b"\x01" in key:
        labels = [_unescape(label) for label in labels]
    labels.reverse()
    length = _LENGTH
    return b"".join([length[len(label)] + label for label in labels]) + b"\x00"


def key_to_name(key: bytes) -> dns.name.Name:
    return dns.name.Name([*key_labels(key), b""])


# Keys whose labels dnspython would print without any escape (RFC 1035 §5.1).
_PLAIN_KEY = re.compile(rb"(?:[!#%&'*+,\-/0-9:<=>?A-Z\[\]^_`a-z{|}~]+\x00)*")


def key_to_text(key: bytes) -> str:
    """The name in presentation format, absolute and lowercase (as dnspython prints it)."""
    if not key:
        return "."
    if _PLAIN_KEY.fullmatch(key):
        return ".".join(reversed(key[:-1].decode("ascii").split("\x00"))) + "."
    return key_to_name(key).to_text()


def key_parent(key: bytes) -> bytes:
    """Key of the parent name (the root's parent is the root)."""
    if not key:
        return key
    cut = key.rfind(b"\x00", 0, len(key) - 1)
    return key[: cut + 1]


def key_is_wild(key: bytes) -> bool:
    return key == b"*\x00" or key.endswith(b"\x00*\x00")


def key_label_count(key: bytes) -> int:
    """Labels of the name, root excluded (RRSIG ``labels`` before the wildcard rule)."""
    return key.count(b"\x00")


# ---------------------------------------------------------------------------
# Encodings
# ---------------------------------------------------------------------------


def nsec3_hash(wire: bytes, salt: bytes = b"", iterations: int = 0) -> bytes:
    """RFC 5155 §5: IH(salt, x, 0) = H(x || salt), IH(salt, x, k) = H(IH(k-1) || salt)."""
    digest = hashlib.sha1(wire + salt).digest()
    for _ in range(iterations):
        digest = hashlib.sha1(digest + salt).digest()
    return digest


_B32HEX_PAIRS = [a + b for a in "0123456789abcdefghijklmnopqrstuv"
                 for b in "0123456789abcdefghijklmnopqrstuv"]
_SHA1_SHIFTS = tuple(range(150, -1, -10))


def b32hex(data: bytes) -> str:
    """Base32 with the extended hex alphabet (RFC 4648 §7), lowercase, no padding."""
    if len(data) == 20:  # a SHA-1 digest: 160 bits, 32 characters, 10 bits at a time
        n = int.from_bytes(data, "big")
        return "".join([_B32HEX_PAIRS[(n >> shift) & 1023] for shift in _SHA1_SHIFTS])
    return base64.b32hexencode(data).decode("ascii").rstrip("=").lower()


_BITMAPS: dict[tuple[int, ...], bytes] = {}
_TYPE_TEXT: dict[tuple[int, ...], str] = {}


def type_bitmap(types: Iterable[int]) -> bytes:
    """The Type Bit Maps field of NSEC/NSEC3 (RFC 4034 §4.1.2) for these types."""
    if type(types) is tuple:  # the same tuple again and again (a TLD's delegations)
        cached = _BITMAPS.get(types)
        if cached is not None:
            return cached
    key = tuple(sorted(set(types)))
    cached = _BITMAPS.get(key)
    if cached is not None:
        return cached
    windows: dict[int, bytearray] = {}
    for t in key:
        window = windows.setdefault(t >> 8, bytearray(32))
        window[(t & 0xFF) >> 3] |= 0x80 >> (t & 7)
    out = bytearray()
    for number in sorted(windows):
        bits = bytes(windows[number]).rstrip(b"\x00")
        out += bytes((number, len(bits))) + bits
    result = bytes(out)
    if len(_BITMAPS) < 4096:
        _BITMAPS[key] = result
        if type(types) is tuple:
            _BITMAPS[types] = result
    return result


def types_text(types: Iterable[int]) -> str:
    """Mnemonics of the types in numeric order, separated by spaces."""
    if type(types) is tuple:
        cached = _TYPE_TEXT.get(types)
        if cached is not None:
            return cached
    key = tuple(sorted(set(types)))
    cached = _TYPE_TEXT.get(key)
    if cached is None:
        cached = " ".join(dns.rdatatype.to_text(t) for t in key)
        if len(_TYPE_TEXT) < 4096:
            _TYPE_TEXT[key] = cached
            if type(types) is tuple:
                _TYPE_TEXT[types] = cached
    return cached


def nsec3param_rdata(salt: bytes, iterations: int) -> tuple[str, bytes]:
    """(text, wire) of the apex NSEC3PARAM: SHA-1, flags 0 (RFC 5155 §4.1.2)."""
    salt_text = salt.hex().upper() if salt else "-"
    text = f"{NSEC3_HASH_SHA1} 0 {iterations} {salt_text}"
    wire = bytes((NSEC3_HASH_SHA1, 0)) + iterations.to_bytes(2, "big")
    wire += bytes((len(salt),)) + salt
    return text, wire


# ---------------------------------------------------------------------------
# Chains
# ---------------------------------------------------------------------------


class Nsec3Chain:
    """NSEC3 records for the given original names (RFC 5155 §7.1), kept compact: one
    record is built when it is asked for (a TLD's chain has hundreds of thousands).

    *entries* are (key, types): every name that gets an NSEC3 (the caller has applied
    opt-out and added empty non-terminals with no types). Types are those of the
    bitmap (RRSIG included by the caller when the name has signatures; NSEC3 itself
    never appears). ``owners`` are the owner keys in hash order, which is also their
    canonical order; ``record(i)`` is (owner key, rdata text, rdata wire) of the i-th,
    the last one pointing back to the first.
    """

    def __init__(self, entries: Iterable[ChainEntry], origin_key: bytes, *,
                 salt: bytes = b"", iterations: int = 0, opt_out: bool = True):
        if len(salt) > 255:
            raise ValueError("NSEC3 salt longer than 255 octets")
        if not 0 <= iterations <= 65535:
            raise ValueError("NSEC3 iterations must be 0..65535")
        hashed = [(nsec3_hash(key_to_wire(key), salt, iterations), types, key)
                  for key, types in entries]
        hashed.sort(key=lambda item: item[0])
        for (a, _t, key_a), (b, _u, key_b) in zip(hashed, hashed[1:], strict=False):
            if a == b:
                first, second = key_to_name(key_a), key_to_name(key_b)
                raise ValueError(
                    f"NSEC3 hash collision between {first} and {second}: change the salt")
        self.digests = [item[0] for item in hashed]
        self.types = [item[1] for item in hashed]
        del hashed
        self.owners = [origin_key + b32hex(d).encode("ascii") + b"\x00" for d in self.digests]
        self._cut = len(origin_key)
        flags = OPT_OUT if opt_out else 0
        head = bytes((NSEC3_HASH_SHA1, flags)) + iterations.to_bytes(2, "big")
        self._head = head + bytes((len(salt),)) + salt + b"\x14"
        salt_text = salt.hex().upper() if salt else "-"
        self._text_head = f"{NSEC3_HASH_SHA1} {flags} {iterations} {salt_text} "

    def __len__(self) -> int:
        return len(self.digests)

    def record(self, i: int) -> tuple[bytes, str, bytes]:
        following = (i + 1) % len(self.digests)
        types = self.types[i]
        tt = types_text(types)
        text = self._text_head + self.owners[following][self._cut : -1].decode("ascii")
        if tt:
            text += " " + tt
        wire = self._head + self.digests[following] + type_bitmap(types)
        return self.owners[i], text, wire


def nsec3_chain(
    entries: Iterable[ChainEntry],
    origin_key: bytes,
    *,
    salt: bytes = b"",
    iterations: int = 0,
    opt_out: bool = True,
) -> list[tuple[bytes, str, bytes]]:
    """Every record of :class:`Nsec3Chain` (owner key, rdata text, rdata wire), sorted
    by hash."""
    chain = Nsec3Chain(entries, origin_key, salt=salt, iterations=iterations, opt_out=opt_out)
    return [chain.record(i) for i in range(len(chain))]


def nsec_chain(entries: Sequence[ChainEntry]) -> list[tuple[bytes, str, bytes]]:
    """NSEC records for *entries* (in canonical order; types include NSEC and RRSIG).

    Next names are written lowercase, so that RFC 4034 and RFC 6840 agree on their
    canonical form. Returns (owner key, rdata text, rdata wire).
    """
    out = []
    count = len(entries)
    for i, (key, types) in enumerate(entries):
        next_key = entries[(i + 1) % count][0]
        text = f"{key_to_text(next_key)} {types_text(types)}"
        out.append((key, text, key_to_wire(next_key) + type_bitmap(types)))
    return out
