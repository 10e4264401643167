"""The loader's master-file reader: straight from text to the wire form the tree holds.

:func:`nameserver.zone.reader.read_zone_file` gives dnspython objects, one per record;
building them is most of the time a million-delegation zone takes to load. This
reader yields each record as the prepared wire form instead (:data:`WireRecord`),
with a fast path for the forms a TLD zone is made of:

* lines without quotes or escapes are split with ``str.split`` (comments and
  parentheses cut out first), a record spanning lines is joined;
* owner names and names in RDATA are turned into wire form directly, names that
  repeat (NS targets, RRSIG signers) once per spelling: one :class:`WireName` each;
* the RDATA of NS, CNAME, MX, SOA, A, AAAA, DS, DNSKEY, RRSIG, NSEC3 and NSEC3PARAM
  is packed from the tokens (binascii for hex and base64, cached RRSIG times, TTLs
  and NSEC3 type bitmaps).

Everything else goes the way the dnspython-based reader goes, with the same code:
another type or class, a quoted string, an escape, a token the fast path does not
fully understand (a mnemonic where it expects a number, an IPv6 address with an
IPv4 tail, a name with non-ASCII letters, a value out of range, ...). So a record
reads to the same bytes, or fails with the same ``file:line: reason``, either way;
``tests/test_zone_load.py`` checks it against :func:`reference_records`, which uses
dnspython for every record.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import os
import re
import socket
import struct
from collections.abc import Iterator
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.util
import dns.tokenizer
import dns.ttl
from dns.rdtypes.rrsigbase import sigtime_to_posixtime

from nameserver.wire import WireName
from nameserver.zone.reader import (
    Record,
    Where,
    ZoneSyntaxError,
    _reason,
    _split,
    _Token,
    parse_directive,
    parse_record,
    read_zone_file,
)
from nameserver.zone.tree import _rdata_parts, _target

NS = dns.rdatatype.NS
CNAME = dns.rdatatype.CNAME
MX = dns.rdatatype.MX
SOA = dns.rdatatype.SOA
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
DS = dns.rdatatype.DS
DNSKEY = dns.rdatatype.DNSKEY
RRSIG = dns.rdatatype.RRSIG
NSEC3 = dns.rdatatype.NSEC3
NSEC3PARAM = dns.rdatatype.NSEC3PARAM
IN = dns.rdataclass.IN

# One record read: owner, TTL, type, RDATA (bytes with the 2-byte length in front, or
# a tuple of bytes and compressible names as tree.RdataParts), the name the RDATA
# points at (NS, CNAME, DNAME, PTR, MX, SRV targets) or None, file and line.
WireRecord = tuple[WireName, int, int, "bytes | tuple", "WireName | None", str, int]

_DS_LENGTHS = {1: 20, 2: 32, 3: 32, 4: 48}  # digest types dnspython checks the length of
_INET6_CHARS = frozenset("0123456789abcdefABCDEF:")
# Whitespace str.split() cuts at that the character-by-character splitter does not.
_ODD_SPACE = re.compile("[\x0b\x0c\x1c-\x1f]")
_U16 = struct.Struct("!H")
NAMES_CACHED = 65536
_RRSIG_HEAD = struct.Struct("!HBBIIIH")
_SOA_TAIL = struct.Struct("!IIIII")


class _Fallback(Exception):
    """The fast path does not handle this record: read it the dnspython way."""


def _u8(text: str) -> int:
    if text.isdigit() and text.isascii():
        value = int(text)
        if value <= 255:
            return value
    raise _Fallback


def _u16(text: str) -> int:
    if text.isdigit() and text.isascii():
        value = int(text)
        if value <= 65535:
            return value
    raise _Fallback


def _u32(text: str) -> int:
    if text.isdigit() and text.isascii():
        value = int(text)
        if value <= 4294967295:
            return value
    raise _Fallback


class _Caches:
    """What repeats across a zone, kept for one read."""

    def __init__(self) -> None:
        self.ttls: dict[str, int] = {}
        self.types: dict[str, int] = {}
        # A type as spelled, to its number and the fast path's converter.
        self.converters: dict[str, tuple[int, Any]] = {}
        self.sigtimes: dict[str, int] = {}
        self.bitmaps: dict[tuple[str, ...], bytes] = {}
        # Names in RDATA by origin wire and text (at most NAMES_CACHED of them, then
        # it starts again): the 1-tuple of the WireName (the RDATA of NS and CNAME).
        self.names: dict[bytes, dict[str, tuple[WireName]]] = {}
        # The same 1-tuples by wire, for good: one WireName (and one tuple) per name
        # however many records refer to it; owners reuse them too (glue).
        self.by_wire: dict[bytes, tuple[WireName]] = {}
        # Small RDATA (A, AAAA) shared by value.
        self.small: dict[bytes, bytes] = {}

    def ttl(self, text: str) -> int:
        value = self.ttls.get(text)
        if value is None:
            try:
                value = dns.ttl.from_text(text)
            except dns.exception.DNSException:
                raise _Fallback from None
            self.ttls[text] = value
        return value

    def rdtype(self, text: str) -> int:
        value = self.types.get(text)
        if value is None:
            try:
                value = dns.rdatatype.from_text(text)
            except dns.exception.DNSException:
                raise _Fallback from None
            self.types[text] = value
        return value

    def sigtime(self, text: str) -> int:
        value = self.sigtimes.get(text)
        if value is None:
            try:
                value = sigtime_to_posixtime(text)
            except dns.exception.DNSException:
                raise _Fallback from None
            if not 0 <= value <= 4294967295:
                raise _Fallback
            self.sigtimes[text] = value
        return value

    def bitmap(self, words: tuple[str, ...]) -> bytes:
        value = self.bitmaps.get(words)
        if value is None:
            try:
                tok = dns.tokenizer.Tokenizer(" ".join(words))
                out = io.BytesIO()
                dns.rdtypes.util.Bitmap.from_text(tok).to_wire(out)
                value = out.getvalue()
            except (dns.exception.DNSException, ValueError):
                raise _Fallback from None
            self.bitmaps[words] = value
        return value


def _open(path: str, span: Span | None) -> io.TextIOWrapper:
    if span is None:
        return open(path, encoding="utf-8")
    raw = open(path, "rb")  # noqa: SIM115 - the wrapper closes it
    try:
        raw.seek(span[0])
        return io.TextIOWrapper(raw, encoding="utf-8")
    except BaseException:
        raw.close()
        raise


def name_wire(text: str, origin_wire: bytes) -> bytes | None:
    """``text`` (a name in a zone file, relative to ``origin_wire``) in wire form, or
    None where dnspython must read it (non-ASCII, escapes, bad lengths)."""
    if not text.isascii() or "\\" in text:
        return None
    if text == "@":
        return origin_wire
    if text[-1] == ".":
        if text == ".":
            return b"\0"
        body = text[:-1].encode()
        tail = b"\0"
    else:
        body = text.encode()
        tail = origin_wire
    if b"." not in body:
        n = len(body)
        if not 0 < n < 64:
            return None
        wire = bytes((n,)) + body + tail
    else:
        out = bytearray()
        for label in body.split(b"."):
            n = len(label)
            if not 0 < n < 64:
                return None
            out.append(n)
            out += label
        out += tail
        wire = bytes(out)
    return wire if len(wire) <= 255 else None


class _State:
    def __init__(self, origin: dns.name.Name):
        self.set_origin(origin)
        self.default_ttl: int | None = None
        self.last_ttl: int | None = None
        self.last_name: WireName | None = None
        self.last_name_text: str | None = None

    def set_origin(self, origin: dns.name.Name) -> None:
        self.origin = origin
        self.origin_wire = origin.to_wire()
        self.last_name_text = None
        # The names met in RDATA under this origin (the reader's cache for it, once
        # the reader has one: _Reader._new_name).
        self.names: dict[str, tuple[WireName]] = {}
        # ".<origin>." when the origin's text reads back as plain labels: an owner
        # "label.<origin>." then needs no splitting.
        text = origin.to_text()
        plain = text.isascii() and "\\" not in text and text != "."
        self.origin_suffix: str | None = "." + text if plain else None


# A part of a file: the byte offset where a line starts, the number of lines before
# it, and how many lines to read (None: to the end).
Span = tuple[int, int, "int | None"]


def read_wire_records(
    path: str | os.PathLike[str], origin: dns.name.Name, span: Span | None = None
) -> Iterator[WireRecord]:
    """Yield the records of a master file in wire form; raise ZoneSyntaxError listing
    every bad line (reading goes on after a bad record, as ``read_zone_file``).

    With ``span`` only that part of the file is read, as if it began the file but
    with its own line numbers."""
    problems: list[str] = []
    reader = _Reader(_Caches(), problems)
    yield from reader.read(os.fspath(path), origin, _State(origin), 0, span)
    if problems:
        raise ZoneSyntaxError(problems)


def reference_records(
    path: str | os.PathLike[str], origin: dns.name.Name
) -> Iterator[WireRecord]:
    """The same records through the dnspython-based reader and dnspython's RDATA
    (slow: the reference the fast path is tested against)."""
    for rec in read_zone_file(path, origin):
        target = _target(rec.rdata)
        yield (
            WireName.from_name(rec.name),
            rec.ttl,
            rec.rdtype,
            _rdata_parts(rec.rdata),
            WireName.from_name(target) if target is not None else None,
            rec.where.file,
            rec.where.line,
        )


class _Reader:
    def __init__(self, caches: _Caches, problems: list[str]):
        self.c = caches
        self.problems = problems
        # Unbound functions, called with the reader: bound methods in a dict the reader
        # holds would make a cycle, kept (with every cache) until the collector runs.
        self.fast = _FAST

    # -- files and lines -----------------------------------------------------------

    def read(self, path: str, origin: dns.name.Name, state: _State, depth: int,
             span: Span | None = None) -> Iterator[WireRecord]:
        state.set_origin(origin)
        problems = self.problems
        try:
            for lineno, blank, tokens in self._logical_lines(path, span):
                if type(tokens[0]) is str:
                    first = tokens[0]
                    if first[0] == "$":
                        yield from self._directive_safely(path, lineno, tokens, state, depth)
                        continue
                    try:
                        yield self._fast(path, lineno, blank, tokens, state)  # type: ignore[arg-type]
                        continue
                    except _Fallback:
                        tokens = [_Token(t, False) for t in tokens]  # type: ignore[misc]
                elif not tokens[0].quoted and tokens[0].text.startswith("$"):
                    yield from self._directive_safely(path, lineno, tokens, state, depth)
                    continue
                try:
                    yield self._slow(path, lineno, blank, tokens, state)  # type: ignore[arg-type]
                except (ValueError, dns.exception.DNSException) as e:
                    problems.append(f"{path}:{lineno}: {_reason(e)}")
        except OSError as e:
            problems.append(f"{path}: cannot read: {e.strerror or e}")
        except ZoneSyntaxError as e:
            problems.extend(e.problems)

    def _logical_lines(self, path: str, span: Span | None = None
                       ) -> Iterator[tuple[int, bool, list]]:
        """(line, starts_with_blank, tokens) per logical line, parentheses joined.

        Tokens are plain strings, or ``_Token``s (quoted ones remembered) when a line
        of the record has quotes, escapes or unusual characters: exactly the tokens
        of :func:`nameserver.zone.reader._logical_lines`.
        """
        odd = _ODD_SPACE.search
        with _open(path, span) as f:
            pending: list | None = None
            plain = True  # pending holds str tokens (else _Token)
            start = 0
            blank = False
            depth = 0
            lineno = 0 if span is None else span[1]
            lines = f if span is None or span[2] is None else itertools.islice(f, span[2])
            for text in lines:
                lineno += 1
                line = text
                if not ("(" in text or ")" in text or ";" in text or '"' in text
                        or "\\" in text):
                    if depth == 0:
                        toks = text.split()
                        if toks:
                            yield lineno, text[0] in " \t", toks
                        continue
                    toks = text.split()
                    is_plain = True
                elif '"' in text or "\\" in text or not text.isascii() or odd(text):
                    try:
                        toks = _split(text, Where(path, lineno))  # type: ignore[assignment]
                    except ValueError as e:
                        raise ZoneSyntaxError([f"{path}:{lineno}: {e}"]) from None
                    is_plain = False
                else:
                    cut = text.find(";")
                    if cut >= 0:
                        text = text[:cut]
                    if "(" in text or ")" in text:
                        text = text.replace("(", " ( ").replace(")", " ) ")
                    toks = text.split()
                    is_plain = True
                if pending is None:
                    if not toks:
                        continue
                    pending, start, blank, plain = [], lineno, line[:1] in (" ", "\t"), True
                if not is_plain and plain:
                    pending = [_Token(t, False) for t in pending]
                    plain = False
                for t in toks:
                    if is_plain:
                        if t == "(":
                            depth += 1
                            continue
                        if t == ")":
                            depth -= 1
                            if depth < 0:
                                raise ZoneSyntaxError([f"{path}:{lineno}: unbalanced ')'"])
                            continue
                        pending.append(t if plain else _Token(t, False))
                    else:
                        if not t.quoted and t.text == "(":  # type: ignore[attr-defined]
                            depth += 1
                        elif not t.quoted and t.text == ")":  # type: ignore[attr-defined]
                            depth -= 1
                            if depth < 0:
                                raise ZoneSyntaxError([f"{path}:{lineno}: unbalanced ')'"])
                        else:
                            pending.append(t)
                if depth == 0:
                    if pending:
                        yield start, blank, pending
                    pending = None
            if depth:
                raise ZoneSyntaxError([f"{path}:{start}: '(' is never closed"])

    def _directive_safely(self, path: str, lineno: int, tokens: list, state: _State,
                          depth: int) -> Iterator[WireRecord]:
        toks = [t if type(t) is _Token else _Token(t, False) for t in tokens]
        first = toks[0].text
        try:
            yield from self._directive(path, lineno, toks, state, depth)
        except (ValueError, dns.exception.DNSException) as e:
            self.problems.append(f"{path}:{lineno}: {first}: {e}")

    def _directive(self, path: str, lineno: int, tokens: list[_Token], state: _State,
                   depth: int) -> Iterator[WireRecord]:
        word, value = parse_directive(path, tokens, state.origin, depth)
        if word == "$ORIGIN":
            state.set_origin(value)
            state.last_name = None
        elif word == "$TTL":
            state.default_ttl = value
        else:
            target, inner = value
            saved_origin, saved_name = state.origin, state.last_name
            yield from self.read(target, inner, state, depth + 1)
            # RFC 1035 section 5.1: the origin reverts after the included file.
            state.set_origin(saved_origin)
            state.last_name = saved_name

    # -- one record ------------------------------------------------------------------

    def _fast(self, path: str, lineno: int, blank: bool, toks: list[str], state: _State
              ) -> WireRecord:
        """The record from plain tokens, or _Fallback (state untouched then)."""
        c = self.c
        if blank:
            name = state.last_name
            if name is None:
                raise _Fallback
            i = 0
        else:
            text = toks[0]
            if text == state.last_name_text and state.last_name is not None:
                name = state.last_name
            else:
                suffix = state.origin_suffix
                if (suffix is not None and text.endswith(suffix) and text.isascii()
                        and "." not in (label := text[: -len(suffix)]) and 0 < len(label) < 64
                        and "\\" not in label):
                    # "label.<origin>.", the usual owner of a TLD zone.
                    wire = bytes((len(label),)) + label.encode() + state.origin_wire
                else:
                    wire = name_wire(text, state.origin_wire)  # type: ignore[assignment]
                    if wire is None:
                        raise _Fallback
                shared = c.by_wire.get(wire)
                name = shared[0] if shared is not None else WireName(wire)
            i = 1
        n = len(toks)
        ttl = None
        ttls = c.ttls
        if i < n:
            word = toks[i]
            if word[0].isdigit():
                ttl = ttls.get(word) or c.ttl(word)
                i += 1
                if i < n and (toks[i] == "IN" or toks[i] == "in"):
                    i += 1
            elif word == "IN" or word == "in":
                i += 1
                if i < n and toks[i][0].isdigit():
                    ttl = ttls.get(toks[i]) or c.ttl(toks[i])
                    i += 1
        if i >= n:
            raise _Fallback
        typed = c.converters.get(toks[i]) or self._converter(toks[i])
        rdtype = typed[0]
        parts, target = typed[1](self, toks, i + 1, n, state)
        if ttl is None:
            if state.default_ttl is not None:
                ttl = state.default_ttl
            elif state.last_ttl is not None:
                ttl = state.last_ttl
            elif rdtype == SOA:
                ttl = int.from_bytes(parts[2][16:20], "big")
            else:
                raise _Fallback
        else:
            state.last_ttl = ttl
        if not blank:
            state.last_name = name
            state.last_name_text = toks[0]
        return name, ttl, rdtype, parts, target, path, lineno

    def _converter(self, text: str) -> tuple[int, object]:
        """The type spelled ``text`` and its converter, or _Fallback."""
        rdtype = self.c.rdtype(text)
        convert = self.fast.get(rdtype)
        if convert is None:
            raise _Fallback
        typed = self.c.converters[text] = (rdtype, convert)
        return typed

    def _slow(self, path: str, lineno: int, blank_owner: bool, tokens: list[_Token],
              state: _State) -> WireRecord:
        """As nameserver.zone.reader reads a record, with dnspython for names and RDATA."""
        name, ttl, rdtype, rdata = parse_record(tokens, blank_owner, state, self._name_from)
        target = _target(rdata)
        return (
            name,
            ttl,
            rdtype,
            _rdata_parts(rdata),
            self._name_from(target) if target is not None else None,
            path,
            lineno,
        )

    def _name_from(self, name: dns.name.Name) -> WireName:
        wire = name.to_wire()
        shared = self.c.by_wire.get(wire)
        return shared[0] if shared is not None else WireName(wire)

    # -- RDATA -----------------------------------------------------------------------

    def _name(self, text: str, state: _State) -> tuple[WireName]:
        hit = state.names.get(text)
        if hit is None:
            return self._new_name(text, state)
        return hit

    def _new_name(self, text: str, state: _State) -> tuple[WireName]:
        c = self.c
        names = c.names.get(state.origin_wire)
        if names is None:
            names = c.names[state.origin_wire] = {}
        state.names = names
        hit = names.get(text)
        if hit is None:
            wire = name_wire(text, state.origin_wire)
            if wire is None:
                raise _Fallback
            hit = c.by_wire.get(wire)
            if hit is None:
                hit = c.by_wire[wire] = (WireName(wire),)
            if len(names) >= NAMES_CACHED:
                names.clear()
            names[text] = hit
        return hit

    def _ns(self, toks: list[str], i: int, n: int, state: _State) -> tuple:
        if n - i != 1:
            raise _Fallback
        parts = self._name(toks[i], state)
        return parts, parts[0]

    def _mx(self, toks: list[str], i: int, n: int, state: _State) -> tuple:
        if n - i != 2:
            raise _Fallback
        pref = _U16.pack(_u16(toks[i]))
        wn = self._name(toks[i + 1], state)[0]
        return (pref, wn), wn

    def _soa(self, toks: list[str], i: int, n: int, state: _State) -> tuple:
        if n - i != 7:
            raise _Fallback
        mname = self._name(toks[i], state)[0]
        rname = self._name(toks[i + 1], state)[0]
        c = self.c
        tail = _SOA_TAIL.pack(_u32(toks[i + 2]), c.ttl(toks[i + 3]), c.ttl(toks[i + 4]),
                              c.ttl(toks[i + 5]), c.ttl(toks[i + 6]))
        return (mname, rname, tail), None

    def _a(self, toks: list[str], i: int, n: int, state: _State) -> tuple:
        if n - i != 1:
            raise _Fallback
        try:
            raw = b"\0\4" + socket.inet_pton(socket.AF_INET, toks[i])
        except OSError:
            raise _Fallback from None
        return self.c.small.setdefault(raw, raw), None

    def _aaaa(self, toks: list[str], i: int, n: int, state: _State) -> tuple:
        if n - i != 1:
            raise _Fallback
        text = toks[i]
        if not _INET6_CHARS.issuperset(text):
            raise _Fallback
        try:
            raw = b"\0\x10" + socket.inet_pton(socket.AF_INET6, text)
        except OSError:
            raise _Fallback from None
        return raw, None

    def _ds(self, toks: list[str], i: int, n: int, state: _State) -> tuple:
        if n - i < 4:
            raise _Fallback
        key_tag, algorithm, digest_type = _u16(toks[i]), _u8(toks[i + 1]), _u8(toks[i + 2])
        hexed = toks[i + 3] if n - i == 4 else "".join(toks[i + 3 : n])
        try:
            digest = binascii.unhexlify(hexed)
        except (binascii.Error, ValueError):
            raise _Fallback from None
        if _DS_LENGTHS.get(digest_type) != len(digest):
            raise _Fallback
        body = struct.pack("!HBB", key_tag, algorithm, digest_type) + digest
        return _U16.pack(len(body)) + body, None

    def _dnskey(self, toks: list[str], i: int, n: int, state: _State) -> tuple:
        if n - i < 4:
            raise _Fallback
        flags, protocol, algorithm = _u16(toks[i]), _u8(toks[i + 1]), _u8(toks[i + 2])
        key = _b64("".join(toks[i + 3 : n]))
        body = struct.pack("!HBB", flags, protocol, algorithm) + key
        return _U16.pack(len(body)) + body, None

    def _rrsig(self, toks: list[str], i: int, n: int, state: _State) -> tuple:
        if n - i < 9:
            raise _Fallback
        c = self.c
        head = _RRSIG_HEAD.pack(
            c.rdtype(toks[i]),
            _u8(toks[i + 1]),
            _u8(toks[i + 2]),
            c.ttl(toks[i + 3]),
            c.sigtime(toks[i + 4]),
            c.sigtime(toks[i + 5]),
            _u16(toks[i + 6]),
        )
        signer = self._name(toks[i + 7], state)[0].wire
        signature = _b64(toks[i + 8] if n - i == 9 else "".join(toks[i + 8 : n]))
        size = 18 + len(signer) + len(signature)
        return b"".join((_U16.pack(size), head, signer, signature)), None

    def _nsec3(self, toks: list[str], i: int, n: int, state: _State) -> tuple:
        if n - i < 5:
            raise _Fallback
        head = bytes((_u8(toks[i]), _u8(toks[i + 1]))) + _U16.pack(_u16(toks[i + 2]))
        salt = _salt(toks[i + 3])
        nxt = _b32hex(toks[i + 4])
        bitmap = self.c.bitmap(tuple(toks[i + 5 : n]))
        body = b"".join((head, bytes((len(salt),)), salt, bytes((len(nxt),)), nxt, bitmap))
        return _U16.pack(len(body)) + body, None

    def _nsec3param(self, toks: list[str], i: int, n: int, state: _State) -> tuple:
        if n - i != 4:
            raise _Fallback
        head = bytes((_u8(toks[i]), _u8(toks[i + 1]))) + _U16.pack(_u16(toks[i + 2]))
        salt = _salt(toks[i + 3])
        body = head + bytes((len(salt),)) + salt
        return _U16.pack(len(body)) + body, None


_FAST = {
    NS: _Reader._ns,
    CNAME: _Reader._ns,
    MX: _Reader._mx,
    SOA: _Reader._soa,
    A: _Reader._a,
    AAAA: _Reader._aaaa,
    DS: _Reader._ds,
    DNSKEY: _Reader._dnskey,
    RRSIG: _Reader._rrsig,
    NSEC3: _Reader._nsec3,
    NSEC3PARAM: _Reader._nsec3param,
}


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode(), validate=True)
    except (binascii.Error, ValueError):
        raise _Fallback from None


def _salt(text: str) -> bytes:
    if text == "-":
        return b""
    try:
        salt = binascii.unhexlify(text.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeError):
        raise _Fallback from None
    if len(salt) > 255:
        raise _Fallback
    return salt


def b32hex_whole(text: str | bytes) -> bytes | None:
    """Base32hex without padding, in whole 8-character groups (an NSEC3 hash: 32 of
    them), decoded as ``int(text, 32)`` reads it; None for anything else."""
    if len(text) % 8 or not text or not text.isascii() or not text.isalnum():
        return None
    try:
        value = int(text, 32)
    except ValueError:  # a letter past 'v'
        return None
    return value.to_bytes(len(text) * 5 // 8, "big")


def _b32hex(text: str) -> bytes:
    whole = b32hex_whole(text)
    if whole is not None and len(whole) <= 255:
        return whole
    if not text.isascii():
        raise _Fallback
    upper = text.encode().upper()
    if upper.endswith(b"="):
        raise _Fallback
    padded = upper + b"=" * (-len(upper) % 8)
    try:
        decoded = base64.b32hexdecode(padded)
    except (binascii.Error, ValueError):
        raise _Fallback from None
    if base64.b32hexencode(decoded).rstrip(b"=") != upper or len(decoded) > 255:
        raise _Fallback
    return decoded


__all__ = ["Record", "WireRecord", "read_wire_records", "reference_records", "name_wire"]
