"""Start and stop reference authoritative DNS servers (Knot DNS, NSD) on loopback.

Standard library only, so that both the benchmark runner and the test suite can import it
(``sys.path.insert(0, "<repo>/benchmarks"); import refservers``).

Every server runs in the foreground as the current user, inside a private temporary
directory holding its configuration, pid file, storage, control socket and log; nothing is
written to /etc, /var/lib or /run.  The ``subprocess.Popen`` PID is the server itself (for
NSD it is the PID NSD writes to its pid file; NSD forks a main server process and worker
children below it, see :func:`process_tree_pids`).

Typical use::

    port = free_port()
    with start_knot("coop.zone", "coop.", port) as srv:
        srv.wait_ready(10)
        ...  # query 127.0.0.1:port
    # the server and all its children are gone here, the temp dir removed

Each server is started in its own session (so a Ctrl-C in the terminal does not reach it;
the owner stops it) and with ``PR_SET_PDEATHSIG`` = SIGTERM, so it does not outlive the
Python process that started it even if that process is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

__all__ = [
    "DnsHeader",
    "RefServer",
    "ServerStartError",
    "find_binary",
    "free_port",
    "knotd_version",
    "make_query",
    "nsd_version",
    "parse_header",
    "process_tree_cpu_seconds",
    "process_tree_pids",
    "process_tree_pss_bytes",
    "process_tree_rss_bytes",
    "query_soa",
    "start_knot",
    "start_nsd",
    "start_process",
    "udp_query",
]

ListenSpec = str | tuple[str, int]

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

RCODE_NAMES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}


class ServerStartError(RuntimeError):
    """The server exited, could not be spawned, or did not answer in time."""


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def find_binary(name: str) -> str | None:
    """Locate an executable on PATH or in the sbin directories (often not on a user's PATH)."""
    found = shutil.which(name)
    if found:
        return found
    return shutil.which(name, path=os.pathsep.join(_SBIN_DIRS))


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def ephemeral_low() -> int:
    """The first port the kernel hands out to clients (Linux), else a common default."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(address: str = "127.0.0.1", attempts: int = 200) -> int:
    """Return a port that is currently free for both UDP and TCP on ``address``.

    The port is drawn below the kernel's ephemeral range: a TCP benchmark leaves
    thousands of client ports there in TIME-WAIT, and those cannot be listened on.
    There is an unavoidable race between this check and the server binding the port.
    """
    fam = _family(address)
    high = max(ephemeral_low(), 12000)
    for _ in range(attempts):
        port = random.randrange(10000, high)
        with socket.socket(fam, socket.SOCK_DGRAM) as udp, socket.socket(
            fam, socket.SOCK_STREAM
        ) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            try:
                udp.bind((address, port))
                tcp.bind((address, port))
            except OSError:
                continue
            return port
    raise OSError(f"could not find a free UDP+TCP port on {address}")


def _normalize_origin(origin: str) -> str:
    origin = origin.strip()
    if origin in ("", "."):
        return "."
    return origin if origin.endswith(".") else origin + "."


def _normalize_listen(
    listen: Iterable[ListenSpec] | None, address: str, port: int
) -> list[tuple[str, int]]:
    """``listen`` items: ``(addr, port)``, ``"addr@port"`` or ``"addr"`` (uses ``port``)."""
    if listen is None:
        return [(address, port)]
    result: list[tuple[str, int]] = []
    for item in listen:
        if isinstance(item, tuple):
            result.append((item[0], int(item[1])))
        elif "@" in item:
            addr, _, p = item.rpartition("@")
            result.append((addr, int(p)))
        else:
            result.append((item, port))
    if not result:
        raise ValueError("listen must name at least one address")
    return result


def _quote(value: str | os.PathLike[str]) -> str:
    """Double-quote a string for knot.conf / nsd.conf."""
    text = os.fspath(value)
    if '"' in text or "\n" in text:
        raise ValueError(f"unsupported character in config value: {text!r}")
    return f'"{text}"'


# --------------------------------------------------------------------------------------------
# Minimal DNS over UDP (hand-made wire format)
# --------------------------------------------------------------------------------------------


class DnsHeader(NamedTuple):
    id: int
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int

    @property
    def qr(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def aa(self) -> bool:
        return bool(self.flags & 0x0400)

    @property
    def tc(self) -> bool:
        return bool(self.flags & 0x0200)

    @property
    def rcode(self) -> int:
        return self.flags & 0x000F

    @property
    def rcode_name(self) -> str:
        return RCODE_NAMES.get(self.rcode, str(self.rcode))


def _encode_name(name: str) -> bytes:
    name = _normalize_origin(name)
    if name == ".":
        return b"\x00"
    out = bytearray()
    for label in name[:-1].split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name too long: {name!r}")
    return bytes(out)


def make_query(
    qname: str,
    qtype: int = 6,
    *,
    qid: int | None = None,
    rd: bool = False,
    edns: bool = False,
    dnssec_ok: bool = False,
    udp_size: int = 1232,
) -> bytes:
    """Build a DNS query message (class IN). ``dnssec_ok`` implies ``edns``."""
    if qid is None:
        qid = random.randrange(0x10000)
    flags = 0x0100 if rd else 0
    edns = edns or dnssec_ok
    header = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    question = _encode_name(qname) + struct.pack("!HH", qtype, 1)
    opt = b""
    if edns:
        opt = b"\x00" + struct.pack("!HHIH", 41, udp_size, 0x8000 if dnssec_ok else 0, 0)
    return header + question + opt


def parse_header(message: bytes) -> DnsHeader:
    if len(message) < 12:
        raise ValueError(f"DNS message too short ({len(message)} bytes)")
    return DnsHeader(*struct.unpack("!HHHHHH", message[:12]))


def udp_query(address: str, port: int, query: bytes, timeout: float = 1.0) -> bytes:
    """Send ``query`` over UDP and return the first datagram matching its ID and question.

    Raises ``TimeoutError`` (a subclass of ``OSError``) if nothing matching arrives in time.
    """
    qid = query[:2]
    qend = 12
    while query[qend] != 0:  # skip the (uncompressed) QNAME
        qend += query[qend] + 1
    question = query[12 : qend + 5].lower()
    deadline = time.monotonic() + timeout
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.connect((address, port))
        sock.send(query)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer from {address}@{port} within {timeout} s")
            sock.settimeout(remaining)
            data = sock.recv(65535)  # TimeoutError / ConnectionRefusedError propagate
            if (
                len(data) >= 12 + len(question)
                and data[:2] == qid
                and data[12 : 12 + len(question)].lower() == question
            ):
                return data


def query_soa(
    address: str, port: int, origin: str, timeout: float = 1.0, *, dnssec_ok: bool = False
) -> DnsHeader:
    """Ask ``origin`` SOA over UDP and return the response header."""
    response = udp_query(address, port, make_query(origin, 6, dnssec_ok=dnssec_ok), timeout=timeout)
    return parse_header(response)


# --------------------------------------------------------------------------------------------
# /proc accounting
# --------------------------------------------------------------------------------------------


class _Stat(NamedTuple):
    state: str
    ppid: int
    pgrp: int
    utime: int
    stime: int
    cutime: int
    cstime: int
    starttime: int


def _read_stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state); field n is fields[n - 3].
    return _Stat(
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
        starttime=int(fields[19]),
    )


def _children_via_task(pid: int) -> list[int] | None:
    """Children from /proc/<pid>/task/*/children, or None if the kernel lacks that file."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids.extend(int(x) for x in fh.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # thread vanished
            return None  # CONFIG_PROC_CHILDREN is off
        except OSError:
            continue
    return kids


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _read_stat(int(entry))
        if st is not None:
            children.setdefault(st.ppid, []).append(int(entry))
    return children


def process_tree_pids(pid: int) -> list[int]:
    """``pid`` followed by all its live descendants (breadth first); [] if ``pid`` is gone.

    Uses /proc/<pid>/task/*/children when the kernel provides it (CONFIG_PROC_CHILDREN),
    otherwise scans the ppid of every process in /proc.
    """
    if _read_stat(pid) is None:
        return []
    result = [pid]
    i = 0
    while i < len(result):
        kids = _children_via_task(result[i])
        if kids is None:
            break
        result.extend(k for k in kids if k not in result)
        i += 1
    else:
        return result
    result = [pid]
    pmap = _ppid_map()
    i = 0
    while i < len(result):
        result.extend(k for k in pmap.get(result[i], []) if k not in result)
        i += 1
    return result


def process_tree_cpu_seconds(
    pid: int, *, include_reaped: bool = True, system_only: bool = False
) -> float:
    """User+system CPU seconds of ``pid`` and all its descendants (from /proc/<pid>/stat);
    with ``system_only``, the system (kernel) part alone.

    With ``include_reaped`` (default) the cutime/cstime of every process in the tree is
    added too, i.e. CPU of children that already exited and were waited for, so the value
    never goes backwards when a server replaces a worker process.
    """
    ticks = 0
    for p in process_tree_pids(pid):
        st = _read_stat(p)
        if st is None:
            continue
        ticks += st.stime if system_only else st.utime + st.stime
        if include_reaped:
            ticks += st.cstime if system_only else st.cutime + st.cstime
    return ticks / _CLK_TCK


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def _pss_bytes(pid: int) -> int:
    for name in ("smaps_rollup", "smaps"):
        try:
            with open(f"/proc/{pid}/{name}") as fh:
                total_kb = 0
                for line in fh:
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
                return total_kb * 1024
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return 0
    return 0


def process_tree_rss_bytes(pid: int) -> int:
    """Sum of resident set sizes over the tree (double-counts pages shared between processes)."""
    return sum(_rss_bytes(p) for p in process_tree_pids(pid))


def process_tree_pss_bytes(pid: int) -> int:
    """Sum of proportional set sizes over the tree (shared pages split fairly; needs access)."""
    return sum(_pss_bytes(p) for p in process_tree_pids(pid))


# --------------------------------------------------------------------------------------------
# RefServer
# --------------------------------------------------------------------------------------------


def _preexec(cpus: frozenset[int] | None) -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if cpus:
        os.sched_setaffinity(0, cpus)


def _alive(pid: int, starttime: int | None = None) -> bool:
    st = _read_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return False
    return starttime is None or st.starttime == starttime


def _live_group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _read_stat(int(entry))
            if st is not None and st.pgrp == pgid and st.state not in ("Z", "X"):
                members.append(int(entry))
    return members


class RefServer:
    """A running server process; stop it with :meth:`stop` or use it as a context manager.

    Attributes: ``name``, ``pid``, ``port`` (primary), ``address`` (primary), ``listen``
    (all ``(address, port)`` pairs), ``origin``, ``workdir``, ``log_path``, ``argv``,
    ``config_path`` (or None), ``proc`` (the Popen), ``started_at`` (time.monotonic() just
    before spawning), ``ready_seconds`` (start to first good answer, set by wait_ready).
    """

    def __init__(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        *,
        argv: Sequence[str],
        origin: str,
        listen: Sequence[tuple[str, int]],
        workdir: Path,
        log_path: Path,
        log_file: object,
        started_at: float,
        config_path: Path | None = None,
        keep_workdir: bool = False,
    ) -> None:
        self.name = name
        self.proc = proc
        self.pid: int = proc.pid
        self.argv = list(argv)
        self.origin = _normalize_origin(origin)
        self.listen = list(listen)
        self.address, self.port = self.listen[0]
        self.workdir = workdir
        self.log_path = log_path
        self.config_path = config_path
        self.started_at = started_at
        self.ready_seconds: float | None = None
        self.keep_workdir = keep_workdir
        self._log_file = log_file
        self._stopped = False
        self._final_log: str | None = None
        st = _read_stat(self.pid)
        self._starttime = st.starttime if st else None

    def __repr__(self) -> str:
        return f"<RefServer {self.name} pid={self.pid} {self.address}@{self.port}>"

    def __enter__(self) -> RefServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def pids(self) -> list[int]:
        """The server PID and all its live descendants."""
        return process_tree_pids(self.pid) if self.alive() else []

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.pid) if self.alive() else 0.0

    def system_cpu_seconds(self) -> float:
        """The kernel's part of :meth:`cpu_seconds` (system calls, softirqs)."""
        return process_tree_cpu_seconds(self.pid, system_only=True) if self.alive() else 0.0

    def rss_bytes(self) -> int:
        return process_tree_rss_bytes(self.pid) if self.alive() else 0

    def pss_bytes(self) -> int:
        return process_tree_pss_bytes(self.pid) if self.alive() else 0

    def log_text(self) -> str:
        """The server's stdout+stderr so far (kept in memory once the work dir is removed)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- readiness ---------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 10.0, interval: float = 0.01) -> float:
        """Poll with a UDP SOA query for the origin until it is answered with NOERROR and at
        least one answer record, on every listen address.  Returns the seconds from spawning
        the process to that first good answer (also stored in ``ready_seconds``).

        Raises :class:`ServerStartError` (with the log tail) if the process exits or the
        timeout expires.
        """
        deadline = time.monotonic() + timeout
        pending = list(self.listen)
        last = "no answer"
        while True:
            if not self.alive():
                raise ServerStartError(
                    f"{self.name} exited with status {self.proc.returncode} before answering"
                    f" (log {self.log_path}):\n{self.log_tail()}"
                )
            addr, port = pending[0]
            try:
                hdr = query_soa(addr, port, self.origin, timeout=max(interval, 0.05))
            except (OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if hdr.qr and hdr.rcode == 0 and hdr.ancount > 0:
                    now = time.monotonic()
                    if self.ready_seconds is None:
                        self.ready_seconds = now - self.started_at
                    pending.pop(0)
                    if not pending:
                        return self.ready_seconds
                    continue
                last = f"rcode {hdr.rcode_name}, {hdr.ancount} answers"
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"{self.name} did not answer {self.origin} SOA with NOERROR on "
                    f"{addr}@{port} within {timeout} s (last: {last}; log {self.log_path}):\n"
                    f"{self.log_tail()}"
                )
            time.sleep(interval)

    # -- shutdown ----------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the server, wait up to ``timeout`` s, then SIGKILL; make sure every process
        of its tree (and session) is gone, then remove the work directory (unless
        ``keep_workdir``).  Idempotent.  Returns the server's exit status.
        """
        if self._stopped:
            return self.proc.returncode
        tree: list[tuple[int, int]] = []
        for p in process_tree_pids(self.pid)[1:] if self.alive() else []:
            st = _read_stat(p)
            if st is not None:
                tree.append((p, st.starttime))
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    self.proc.wait()
            # Descendants (e.g. NSD's main and worker processes) normally exit with the
            # parent; give them the same grace period, then kill what is left.
            deadline = time.monotonic() + timeout
            while any(_alive(p, s) for p, s in tree) and time.monotonic() < deadline:
                time.sleep(0.02)
            for p, s in tree:
                if _alive(p, s):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(p, signal.SIGKILL)
            # Anything else left in the server's own process group (it was started as a
            # session leader, so pgid == pid).  Signalled one by one rather than with
            # killpg(), so a recycled PID can never take an unrelated group with it.
            for p in _live_group_members(self.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
        finally:
            self._stopped = True
            with contextlib.suppress(Exception):
                self._log_file.close()  # type: ignore[attr-defined]
            self._final_log = self.log_text()[-65536:]
            if not self.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        return self.proc.returncode


# --------------------------------------------------------------------------------------------
# Starting servers
# --------------------------------------------------------------------------------------------


def start_process(
    name: str,
    argv: Sequence[str],
    origin: str,
    port: int,
    address: str = "127.0.0.1",
    *,
    listen: Iterable[ListenSpec] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    cpus: Iterable[int] | None = None,
    keep_workdir: bool = False,
    config_path: Path | None = None,
) -> RefServer:
    """Spawn any server command (e.g. our own nameserver) as a :class:`RefServer`.

    ``argv`` must keep the server in the foreground.  stdout and stderr go to
    ``<workdir>/server.log``.  ``workdir`` defaults to a fresh temporary directory which is
    removed on stop.  ``cpus`` pins the process (and its children) to those CPUs.
    ``listen`` only tells :meth:`RefServer.wait_ready` where to probe; the command itself
    must be configured to listen there.
    """
    pairs = _normalize_listen(listen, address, port)
    wd = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=f"ref-{name}-"))
    wd.mkdir(parents=True, exist_ok=True)
    log_path = wd / "server.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed by RefServer.stop()
    cpuset = frozenset(cpus) if cpus is not None else None
    started_at = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=lambda: _preexec(cpuset),
        )
    except OSError as exc:
        log_file.close()
        if not keep_workdir:
            shutil.rmtree(wd, ignore_errors=True)
        raise ServerStartError(f"{name}: cannot execute {argv[0]!r}: {exc}") from exc
    return RefServer(
        name,
        proc,
        argv=argv,
        origin=origin,
        listen=pairs,
        workdir=wd,
        log_path=log_path,
        log_file=log_file,
        started_at=started_at,
        config_path=config_path,
        keep_workdir=keep_workdir,
    )


def _require(binary: str) -> str:
    path = find_binary(binary)
    if path is None:
        raise ServerStartError(f"{binary} not found (install the knot / nsd Debian package)")
    return path


def _option_lines(options: Mapping[str, str] | None, indent: str) -> list[str]:
    return [f"{indent}{key}: {value}" for key, value in (options or {}).items()]


def start_knot(
    zonefile: str | os.PathLike[str],
    origin: str,
    port: int,
    address: str = "127.0.0.1",
    udp_workers: int = 1,
    tcp_workers: int = 1,
    background_workers: int = 1,
    *,
    listen: Iterable[ListenSpec] | None = None,
    cpus: Iterable[int] | None = None,
    keep_workdir: bool = False,
    server_options: Mapping[str, str] | None = None,
    zone_options: Mapping[str, str] | None = None,
    knotd: str | None = None,
) -> RefServer:
    """Start ``knotd -c <tmp>/knot.conf`` serving ``zonefile`` as ``origin``.

    The zone file is loaded whole and served as is: no journal, no zone file write-back,
    semantic checks off, DNSSEC signing off (pre-signed zones are served unchanged), no
    response rate limiting (Knot only does RRL when mod-rrl is configured).  Logs warnings
    and errors to stderr (-> ``log_path``).  ``server_options`` / ``zone_options`` are
    extra raw ``key: value`` lines for the server and zone sections.
    """
    binary = knotd or _require("knotd")
    pairs = _normalize_listen(listen, address, port)
    zpath = Path(zonefile).resolve()
    wd = Path(tempfile.mkdtemp(prefix="ref-knot-"))
    storage = wd / "storage"
    storage.mkdir()
    conf = wd / "knot.conf"
    listen_list = ", ".join(_quote(f"{a}@{p}") for a, p in pairs)
    lines = [
        "server:",
        f"    rundir: {_quote(wd)}",
        f"    pidfile: {_quote(wd / 'knot.pid')}",
        f"    listen: [ {listen_list} ]",
        f"    udp-workers: {int(udp_workers)}",
        f"    tcp-workers: {int(tcp_workers)}",
        f"    background-workers: {int(background_workers)}",
        *_option_lines(server_options, "    "),
        "",
        "database:",
        f"    storage: {_quote(storage)}",
        "",
        "control:",
        f"    listen: {_quote(wd / 'knot.sock')}",
        "",
        "log:",
        "  - target: stderr",
        "    any: warning",
        "",
        "zone:",
        f"  - domain: {_quote(_normalize_origin(origin))}",
        f"    file: {_quote(zpath)}",
        "    journal-content: none",
        "    zonefile-load: whole",
        "    zonefile-sync: -1",
        "    semantic-checks: off",
        "    dnssec-signing: off",
        *_option_lines(zone_options, "    "),
        "",
    ]
    conf.write_text("\n".join(lines))
    return start_process(
        "knot",
        [binary, "-c", str(conf)],
        origin,
        port,
        address,
        listen=pairs,
        workdir=wd,
        cwd=wd,
        cpus=cpus,
        keep_workdir=keep_workdir,
        config_path=conf,
    )


def start_nsd(
    zonefile: str | os.PathLike[str],
    origin: str,
    port: int,
    address: str = "127.0.0.1",
    server_count: int = 1,
    *,
    listen: Iterable[ListenSpec] | None = None,
    cpus: Iterable[int] | None = None,
    keep_workdir: bool = False,
    server_options: Mapping[str, str] | None = None,
    zone_options: Mapping[str, str] | None = None,
    nsd: str | None = None,
) -> RefServer:
    """Start ``nsd -d -c <tmp>/nsd.conf`` serving ``zonefile`` as ``origin``.

    ``server-count`` workers (default 1), RRL off (Debian's NSD enables it by default), no
    on-disk database, no privilege drop or chroot, remote control disabled, zone files never
    written back, verbosity 1 to stderr (-> ``log_path``).  The Popen PID is the pid NSD
    writes to its pid file; in NSD 4.6 that process becomes ``nsd: xfrd`` and forks
    ``nsd: main``, which forks the ``nsd: server N`` workers, so use :meth:`RefServer.pids`
    / the ``process_tree_*`` helpers to account for all of them.  On shutdown NSD may leave
    a worker as a zombie re-parented to init; that is not a running process.
    """
    binary = nsd or _require("nsd")
    pairs = _normalize_listen(listen, address, port)
    zpath = Path(zonefile).resolve()
    wd = Path(tempfile.mkdtemp(prefix="ref-nsd-"))
    conf = wd / "nsd.conf"
    lines = [
        "server:",
        *(f"    ip-address: {a}@{p}" for a, p in pairs),
        f"    port: {pairs[0][1]}",
        f"    server-count: {int(server_count)}",
        '    username: ""',
        '    chroot: ""',
        f"    zonesdir: {_quote(wd)}",
        f"    pidfile: {_quote(wd / 'nsd.pid')}",
        f"    xfrdfile: {_quote(wd / 'xfrd.state')}",
        f"    xfrdir: {_quote(wd)}",
        f"    zonelistfile: {_quote(wd / 'zone.list')}",
        '    database: ""',
        "    zonefiles-write: 0",
        "    verbosity: 1",
        "    rrl-ratelimit: 0",
        *_option_lines(server_options, "    "),
        "",
        "remote-control:",
        "    control-enable: no",
        "",
        "zone:",
        f"    name: {_quote(_normalize_origin(origin))}",
        f"    zonefile: {_quote(zpath)}",
        *_option_lines(zone_options, "    "),
        "",
    ]
    conf.write_text("\n".join(lines))
    return start_process(
        "nsd",
        [binary, "-d", "-c", str(conf)],
        origin,
        port,
        address,
        listen=pairs,
        workdir=wd,
        cwd=wd,
        cpus=cpus,
        keep_workdir=keep_workdir,
        config_path=conf,
    )


def _version(argv: list[str]) -> str | None:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (res.stdout + "\n" + res.stderr).splitlines():
        if "version" in line.lower():
            return line.strip()
    return None


def knotd_version() -> str | None:
    """E.g. ``"knotd (Knot DNS), version 3.2.6"``; None if knotd is missing."""
    binary = find_binary("knotd")
    return _version([binary, "-V"]) if binary else None


def nsd_version() -> str | None:
    """E.g. ``"NSD version 4.6.1"``; None if nsd is missing."""
    binary = find_binary("nsd")
    return _version([binary, "-v"]) if binary else None
