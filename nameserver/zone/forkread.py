"""Read a big zone file in two processes: a child reads its first part while this
one reads the rest and builds the tree.

Parsing the text is most of a big zone's load time, building the tree from what was
parsed most of the rest: with two cores they overlap. The file is cut at a line that
starts a record (:func:`plan`); a child process reads the first part with the reader
(:func:`~nameserver.zone.fastread.read_wire_records` and
:func:`~nameserver.zone.runs.flat_batches`) and writes each batch of runs to a pipe
with :mod:`marshal` (flat tuples of bytes and ints: cheap to write and to read back).
This process reads the second part meanwhile, keeping its runs, and builds the
child's batches as they come between two of its own; then its own, so that the
tree is gathered in file order.

The child writes frames: one byte of kind and four of length, then the payload.
``R`` a batch of runs, ``E`` the end (the problems found, as ``file:line: reason``
strings), ``X`` a failure of the child itself (its traceback). If anything is not
as reading the file whole would have it (the child failed, the first part had
problems, the file changed), :func:`forked_batches` raises :class:`ChildFailed`
and the caller reads the file whole, here.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import marshal
import mmap
import os
import select
import signal
import struct
import time
import traceback
from collections.abc import Iterator

import dns.exception
import dns.name

from nameserver.zone.fastread import Span, read_wire_records
from nameserver.zone.reader import ZoneSyntaxError
from nameserver.zone.runs import Run, flat_batches

_HEAD = struct.Struct("!cI")
_F_SETPIPE_SZ = 1031  # Linux: fcntl.F_SETPIPE_SZ (Python 3.10+ has the name on Linux only)
PIPE_SIZE = 1 << 20
# Where the file is cut (a fraction of its size): the child reads the part before,
# this process the part after and builds the whole tree.
FIRST_PART = 0.65
_CHUNK = 8 << 20


class ChildFailed(Exception):
    """Reading in two processes did not work out: read the file whole instead."""


def forked_batches(path: str, origin: dns.name.Name, origin_key: bytes | None = None
                   ) -> Iterator[list[Run]]:
    """The batches of :func:`flat_batches` over the whole file, in file order (with
    the delegations packed if the origin's ``origin_key`` is given); raise
    ZoneSyntaxError as the reader would, or ChildFailed."""
    before = _stamp(path)
    spans = plan(path, origin) if spare_core() else None
    if spans is None:
        raise ChildFailed("no spare core, or no place to cut the file")
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):  # a smaller pipe only means more switches
        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, PIPE_SIZE)
    pid: int | None = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(path, origin, spans[0], write_fd, origin_key)  # never returns
    os.close(write_fd)
    try:
        first = _frames(read_fd)
        mine: list[list[Run]] = []
        problems: list[str] = []
        waiting = True  # for more of the child's batches
        try:
            records = read_wire_records(path, origin, spans[1])
            for batch in flat_batches(records, path, origin_key):
                mine.append(batch)
                while waiting and select.select([read_fd], [], [], 0)[0]:
                    theirs = next(first, None)
                    if theirs is None:
                        waiting = False
                    else:
                        yield theirs
        except ZoneSyntaxError as e:
            problems = e.problems
        yield from first
        if _reap(pid) != 0:  # type: ignore[arg-type]
            raise ChildFailed("the reading process failed")
        pid = None
        mine.reverse()
        while mine:
            yield mine.pop()  # and let it go once built
        if _stamp(path) != before:
            raise ChildFailed("the file changed while it was read")
        if problems:
            raise ZoneSyntaxError(problems)
    finally:
        os.close(read_fd)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)


def spare_core() -> bool:
    """Whether another core is free for a child now. On a busy machine two processes
    would take turns on one core, more work (the runs handed over) for nothing: at
    the least of a few looks, fewer tasks must be running than we have cores, this
    one included (/proc/loadavg; yes if it cannot be read)."""
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        return False
    try:
        for _ in range(5):
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
            if running < cores:
                return True
            time.sleep(0.01)
    except (OSError, ValueError, IndexError):
        return True
    return False


def _stamp(path: str) -> tuple[int, ...]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _reap(pid: int) -> int:
    """Wait for the child; its exit code (-1 if it was killed or already reaped)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return -1
    return os.waitstatus_to_exitcode(status)


def _frames(fd: int) -> Iterator[list[Run]]:
    """The batches of the child's frames; ChildFailed unless it ends without problems."""
    while True:
        kind, size = _HEAD.unpack(_read(fd, _HEAD.size))
        payload = _read(fd, size)
        if kind == b"R":
            yield marshal.loads(payload)
        elif kind == b"E":
            if marshal.loads(payload):
                # Reading the file whole could tell them otherwise (an error that
                # stops the reading, a '(' left open where the file was cut).
                raise ChildFailed("problems in the first part")
            return
        else:
            raise ChildFailed(payload.decode("utf-8", "replace"))


def _read(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise ChildFailed("the reading process ended early")
        chunks.append(chunk)
        size -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def plan(path: str, origin: dns.name.Name | None = None) -> tuple[Span, Span] | None:
    """Where to cut the file in two for two readers: a line near the middle that
    starts a record with its owner and TTL, before which there is no directive and
    no carriage return (so the second reader starts in the state and at the line
    number the first would reach); None if there is no such line. A first line
    ``$ORIGIN`` naming ``origin`` itself is allowed (the state the readers start in
    anyway): ``nameserver sign`` writes one."""
    size = os.path.getsize(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        cut = _record_start(mm, int(size * FIRST_PART))
        if cut is None:
            return None
        skip = _leading_origin(mm, origin)  # a first line allowed (no '\r' in it)
        lines = 0
        for at in range(0, cut, _CHUNK):
            chunk = mm[at : min(at + _CHUNK, cut)]
            # A directive starts a line: after a newline (from the one that ends the
            # allowed line, if any), or at the start of a chunk that starts a line.
            if b"\r" in chunk or chunk.find(b"\n$", max(0, skip - 1 - at)) >= 0 or (
                    at >= skip and chunk[:1] == b"$" and (at == 0 or mm[at - 1] == 10)):
                return None
            lines += chunk.count(b"\n")
    return (0, 0, lines), (cut, lines, None)


def _leading_origin(mm: mmap.mmap, origin: dns.name.Name | None) -> int:
    """The length of a first line ``$ORIGIN <origin>`` (newline included), or 0."""
    end = mm.find(b"\n", 0, 1024)
    line = mm[0 : end + 1] if end >= 0 else b""
    words = line.split()
    if origin is None or len(words) != 2 or words[0] != b"$ORIGIN" or b"\r" in line:
        return 0
    try:
        named = dns.name.from_text(words[1].decode("ascii"))
    except (UnicodeDecodeError, dns.exception.DNSException):
        return 0
    return len(line) if named == origin else 0


def _record_start(mm: mmap.mmap, at: int) -> int | None:
    """The offset of the first line after ``at`` that starts a record stating its
    owner and TTL (within a few hundred lines), or None."""
    for _ in range(512):
        nl = mm.find(b"\n", at)
        if nl < 0:
            return None
        at = nl + 1
        end = mm.find(b"\n", at)
        line = mm[at : end if end >= 0 else len(mm)]
        words = line.split()
        if len(words) < 3 or line[:1] in b" \t;$()" or not line.isascii():
            continue
        ttl = words[2] if words[1] in (b"IN", b"in") else words[1]
        if ttl.isdigit() and b"\\" not in line and b'"' not in line:
            return at
    return None


def _child(path: str, origin: dns.name.Name, span: Span, fd: int,
           origin_key: bytes | None = None) -> None:
    """Read the file and write the frames to ``fd``; exit without returning."""
    code = 1
    try:
        gc.disable()  # short-lived, and nothing it makes is garbage
        _forget_signals()
        with os.fdopen(fd, "wb", buffering=PIPE_SIZE) as out:
            try:
                try:
                    records = read_wire_records(path, origin, span)
                    for batch in flat_batches(records, path, origin_key):
                        _frame(out, b"R", marshal.dumps(batch))
                    problems: list[str] = []
                except ZoneSyntaxError as e:
                    problems = e.problems
                _frame(out, b"E", marshal.dumps(problems))
            except BrokenPipeError:
                raise
            except BaseException:  # noqa: BLE001 - reported to the parent, which reads again
                _frame(out, b"X", traceback.format_exc().encode())
        code = 0
    except BaseException:  # noqa: BLE001 - the child must never return into the caller
        pass
    finally:
        os._exit(code)


def _frame(out: object, kind: bytes, payload: bytes) -> None:
    """One whole frame into the pipe (the parent waits for no more than it sees)."""
    out.write(_HEAD.pack(kind, len(payload)))  # type: ignore[attr-defined]
    out.write(payload)  # type: ignore[attr-defined]
    out.flush()  # type: ignore[attr-defined]


def _forget_signals() -> None:
    """Signals are the parent's business (a server's handlers write to its wake-up
    pipe): the child takes the defaults, ignores ^C, and ends when its pipe breaks."""
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGCHLD, signal.SIGUSR1,
                    signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C is for the parent to handle
    except ValueError:
        pass  # not the main thread: nothing was installed by this process's loop
