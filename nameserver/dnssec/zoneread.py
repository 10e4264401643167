"""Reading master files into :class:`~nameserver.dnssec.zonedata.ZoneData`.

:func:`read_zone` reads with the serving loader's fast reader
(:func:`nameserver.zone.fastread.read_wire_records`: dnspython for rare forms, errors
as ``file:line``). With worker processes it can split the file at record boundaries
where the reader's state is known ($ORIGIN, $TTL), hand each piece to a worker and
merge the pieces in file order; files with ``$INCLUDE`` or bare CR line ends are read
in one piece.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.name
import dns.ttl

from nameserver.dnssec.workers import worker_pool
from nameserver.dnssec.zonedata import (
    _NAME_TEXT,
    Group,
    Progress,
    ZoneData,
    _compact,
    _gc_paused,
)
from nameserver.zone.fastread import WireRecord, read_wire_records
from nameserver.zone.reader import ZoneSyntaxError

if TYPE_CHECKING:
    import multiprocessing.pool

__all__ = ["read_zone"]

_CHUNK_BYTES = 4 << 20  # zone-file piece per reading task


_INCLUDE_RE = re.compile(rb"(?im)^[ \t]*\$include\b")
_BARE_CR_RE = re.compile(rb"\r(?!\n)")
_SPECIAL_RE = re.compile(rb'["();\\]')


def _paren_depth(raw: bytes, depth: int) -> int:
    """Parenthesis depth after one line, tokenized as the reader does (ValueError on a
    quote left open or a stray ')')."""
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x3B:  # ';' starts a comment
            break
        if c == 0x22:  # '"'
            j = i + 1
            while j < n and raw[j] != 0x22:
                j += 2 if raw[j] == 0x5C else 1
            if j >= n:
                raise ValueError("unterminated quoted string")
            i = j + 1
        elif c == 0x28:
            depth += 1
            i += 1
        elif c == 0x29:
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ')'")
            i += 1
        else:
            i += 2 if c == 0x5C else 1
    return depth


_QUIET_BLOCK = re.compile(rb'["()\\]|(?m:^[ \t]*\$)')
_LINE_WITH_OWNER = re.compile(rb"(?m)^[^ \t\r\n;]")


def _pieces(path: str, origin: dns.name.Name, target: int) -> Iterator[tuple[int, int, Any]]:
    """Split points of a master file: (start offset, first line, state) where the state
    is None at the start of the file, else ($ORIGIN text, $TTL) in force there.

    A piece starts only at a line that begins a record with an explicit owner, outside
    parentheses, with a $TTL in force, so the reader started there with that $ORIGIN
    and $TTL reads exactly what it would have read in one go. Blocks without quotes,
    parentheses, escapes or directives (nearly all of a big zone) are skipped at C
    speed; anything unusual stops the splitting (the rest is one piece, and the reader
    reports the problem).
    """
    yield 0, 1, None
    current = origin
    default_ttl: int | None = None
    depth = 0
    offset = 0  # file offset of the block
    lineno = 1  # line number at the start of the block
    next_split = target
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += f.readline()
            if depth == 0 and _QUIET_BLOCK.search(block) is None:
                pos = next_split - offset
                while default_ttl is not None and pos < len(block):
                    m = _LINE_WITH_OWNER.search(block, max(pos, 0))
                    if m is None:
                        break
                    at = m.start()
                    yield offset + at, lineno + block.count(b"\n", 0, at), (
                        current.to_text(), default_ttl)
                    next_split = offset + at + target
                    pos = next_split - offset
            else:
                line_start = 0
                line_no = lineno
                for raw in block.splitlines(keepends=True):
                    first = raw[:1]
                    try:
                        if depth == 0 and first and first not in b" \t\r\n;":
                            if first == b"$":
                                if _SPECIAL_RE.search(raw.split(b";", 1)[0]) is not None:
                                    return  # quotes or escapes in a directive: no more pieces
                                words = raw.split(b";", 1)[0].split()
                                word = words[0].upper()
                                if word in (b"$ORIGIN", b"$TTL") and len(words) != 2:
                                    return
                                if word == b"$ORIGIN":
                                    current = dns.name.from_text(words[1].decode(), current)
                                elif word == b"$TTL":
                                    default_ttl = dns.ttl.from_text(words[1].decode())
                                else:
                                    return  # $INCLUDE or unknown: the reader decides
                            elif offset + line_start >= next_split and default_ttl is not None:
                                yield offset + line_start, line_no, (current.to_text(),
                                                                     default_ttl)
                                next_split = offset + line_start + target
                        if _SPECIAL_RE.search(raw) is not None:
                            depth = _paren_depth(raw, depth)
                    except (ValueError, UnicodeDecodeError, dns.exception.DNSException):
                        return
                    line_start += len(raw)
                    line_no += 1
            offset += len(block)
            lineno += block.count(b"\n")


def _read_piece(task: tuple[Any, ...]) -> tuple[list[Group], list[str]]:
    """Worker: read bytes [start, end) of the file with the zone reader."""
    path, tmpdir, index, start, end, first_line, state, origin_text, canon_all, skip_ns = task
    zone_origin = dns.name.from_text(origin_text)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start if end is not None else -1)
    if state is None:
        preamble = b""
        reader_origin = zone_origin
    else:
        preamble = f"$ORIGIN {state[0]}\n$TTL {state[1]}\n".encode("ascii")
        reader_origin = dns.name.from_text(state[0])
    piece = os.path.join(tmpdir, f"piece-{index}.zone")
    with open(piece, "wb") as f:
        f.write(preamble)
        f.write(data)
    del data
    shift = first_line - 1 - preamble.count(b"\n")

    def records() -> Iterator[WireRecord]:
        for rec in read_wire_records(piece, reader_origin):
            yield (*rec[:5], path, rec[6] + shift)  # type: ignore[misc]

    problems: list[str] = []
    try:
        groups = list(_compact(records(), zone_origin, canon_all, skip_ns, problems))
    finally:
        os.unlink(piece)
    fixed = []
    for p in problems:
        if p.startswith(piece + ":"):
            number, sep, rest = p[len(piece) + 1 :].partition(":")
            if sep and number.isdigit():
                p = f"{path}:{int(number) + shift}:{rest}"
            else:
                p = path + p[len(piece) :]
        fixed.append(p.replace(piece, path))
    return groups, fixed


def read_zone(
    path: str | os.PathLike[str],
    origin: dns.name.Name | str,
    *,
    workers: int | None = None,
    pool: multiprocessing.pool.Pool | None = None,
    canon_all: bool = False,
    skip_delegation_ns: bool = False,
    progress: Progress | None = None,
) -> ZoneData:
    """Read a master file into :class:`ZoneData` with the project's zone reader.

    With a *pool* (or *workers* > 1) the file is read in pieces in parallel. Canonical
    wire RDATA is kept for everything that may be signed, or for every record with
    *canon_all* (needed for ZONEMD). Raises ZoneSyntaxError listing every problem.
    """
    origin = dns.name.from_text(origin) if isinstance(origin, str) else origin
    path = os.fspath(path)
    size = os.path.getsize(path)
    n = (os.cpu_count() or 1) if workers is None else workers
    if pool is None and (n <= 1 or size < 2 * _CHUNK_BYTES):
        return _read_whole(path, origin, canon_all, skip_delegation_ns, progress)
    with (
        open(path, "rb") as f,
        contextlib.closing(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)) as mm,
    ):
        sequential = bool(_INCLUDE_RE.search(mm) or _BARE_CR_RE.search(mm))
    if sequential:
        return _read_whole(path, origin, canon_all, skip_delegation_ns, progress)
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(worker_pool(n))
            assert pool is not None
        tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="nameserver-sign-"))
        starts = _pieces(path, origin, _CHUNK_BYTES)

        def tasks() -> Iterator[tuple[Any, ...]]:
            prev = next(starts)
            for index, nxt in enumerate(starts):
                yield (path, tmpdir, index, prev[0], nxt[0], prev[1], prev[2],
                       origin.to_text(), canon_all, skip_delegation_ns)
                prev = nxt
            yield (path, tmpdir, -1, prev[0], None, prev[1], prev[2], origin.to_text(),
                   canon_all, skip_delegation_ns)

        zone = ZoneData(origin)
        problems: list[str] = []
        # At most a few pieces in flight: results waiting to be merged cost memory.
        limit = 2 * max(1, getattr(pool, "_processes", 2))
        pending: collections.deque[tuple[Any, int]] = collections.deque()
        with _gc_paused():
            for task in tasks():
                pending.append((pool.apply_async(_read_piece, (task,)), task[3]))
                if len(pending) >= limit:
                    _merge_piece(zone, problems, pending, progress, size)
            while pending:
                _merge_piece(zone, problems, pending, progress, size)
    if problems:
        raise ZoneSyntaxError(problems)
    return zone


def _read_whole(path: str, origin: dns.name.Name, canon_all: bool, skip_ns: bool,
                progress: Progress | None) -> ZoneData:
    """Read the file in this process (progress by line)."""
    zone = ZoneData(origin)
    problems: list[str] = []
    add = zone.add
    records: Iterable[WireRecord] = read_wire_records(path, origin)
    if progress is not None:
        records = _line_progress(records, path, progress)
    with _gc_paused():
        for group in _compact(records, origin, canon_all, skip_ns, problems):
            add(group)
    if problems:
        raise ZoneSyntaxError(problems)
    _NAME_TEXT.clear()
    return zone


def _line_progress(records: Iterable[WireRecord], path: str, progress: Progress
                   ) -> Iterator[WireRecord]:
    with open(path, "rb") as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    for n, rec in enumerate(records):
        if not n & 0xFFFF:
            progress("reading", rec[6], lines)
        yield rec
    progress("reading", lines, lines)


def _merge_piece(
    zone: ZoneData,
    problems: list[str],
    pending: collections.deque[tuple[Any, int]],
    progress: Progress | None,
    size: int,
) -> None:
    result, start = pending.popleft()
    groups, found = result.get()
    problems.extend(found)
    add = zone.add
    for group in groups:
        add(group)
    if progress is not None:
        progress("reading", pending[0][1] if pending else size, size)
