"""Wire-format building blocks shared by the zone compiler and the response renderer.

Names are prepared once at load as :class:`WireName`: their wire bytes (original
letter case, as the zone spells them) and their lowercased key, so that compressing
a name while rendering is a few dictionary look-ups (one per suffix of the key).
"""

from __future__ import annotations

import dns.name

MAX_POINTER = 0x3FFF


def label_boundary(key: bytes, pos: int) -> bool:
    """Whether a label of the wire name ``key`` starts at ``pos``."""
    i = 0
    while i < pos:
        i += key[i] + 1
    return i == pos


class WireName:
    """A domain name in wire form with the keys needed for RFC 1035 §4.1.4 compression.

    Only ``wire`` (the name as the zone spells it) and ``key`` (lowercased; the same
    object when the spelling is already lowercase) are stored: a million-delegation
    zone holds millions of names. ``suffixes`` (``(offset, key)`` for every label
    start except the root) and ``labels`` are computed when asked for; the
    :class:`Compressor` walks the key itself.
    """

    __slots__ = ("wire", "key")

    def __init__(self, wire: bytes):
        self.wire = wire
        key = wire.lower()
        self.key = wire if key == wire else key

    @property
    def suffixes(self) -> tuple[tuple[int, bytes], ...]:
        key = self.key
        suffixes: list[tuple[int, bytes]] = []
        i = 0
        while key[i]:
            suffixes.append((i, key[i:]))
            i += key[i] + 1
        return tuple(suffixes)

    @property
    def labels(self) -> int:
        """The number of labels, the root excluded."""
        key = self.key
        count = i = 0
        while key[i]:
            i += key[i] + 1
            count += 1
        return count

    @classmethod
    def from_name(cls, name: dns.name.Name) -> WireName:
        return cls(name.to_wire())

    def to_name(self) -> dns.name.Name:
        return dns.name.from_wire(self.wire, 0)[0]

    def __repr__(self) -> str:
        return f"WireName({self.to_name()})"


def name_keys(wire_key: bytes) -> list[bytes]:
    """Lowercased wire names of ``wire_key`` and every ancestor, root excluded, longest first."""
    keys = []
    i = 0
    while wire_key[i]:
        keys.append(wire_key[i:])
        i += wire_key[i] + 1
    return keys


def label_list(wire_key: bytes) -> list[bytes]:
    """The labels of a wire name, leftmost first, root excluded."""
    labels = []
    i = 0
    while (n := wire_key[i]) != 0:
        labels.append(wire_key[i + 1 : i + 1 + n])
        i += n + 1
    return labels


class Compressor:
    """Writes names into a message under construction, reusing earlier suffixes."""

    __slots__ = ("table", "pointers")

    def __init__(self) -> None:
        self.table: dict[bytes, int] = {}
        self.pointers: list[int] = []  # where each compression pointer was written

    def add_question(self, qname_key: bytes, offset: int = 12, start: int = 0) -> None:
        """Make the question name's suffixes from byte ``start`` on available as targets."""
        i = start
        table = self.table
        while qname_key[i]:
            table.setdefault(qname_key[i:], offset + i)
            i += qname_key[i] + 1

    def write(self, out: bytearray, name: WireName) -> None:
        """Append ``name`` at the end of ``out``, compressed against what is already there."""
        table = self.table
        pos = len(out)
        key = name.key
        off = 0
        while n := key[off]:
            suffix = key[off:]
            ptr = table.get(suffix)
            if ptr is not None:
                out += name.wire[:off]
                self.pointers.append(len(out))
                out += (0xC000 | ptr).to_bytes(2, "big")
                return
            if pos + off <= MAX_POINTER:
                table[suffix] = pos + off
            off += n + 1
        out += name.wire
