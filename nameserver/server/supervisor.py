"""The supervisor: loads zones, owns the sockets, forks the workers that answer, and
reloads without losing a query.

The NSD model, for the same reasons: the supervisor never answers a query, so it
can spend seconds loading a zone without delaying anyone. It opens every listening
socket once (one UDP and one TCP socket per listener and worker slot, with
SO_REUSEPORT when there are several slots) and keeps them open for its whole life.
Workers are forked after the zones are compiled, so they share the snapshot
copy-on-write. A reload builds new snapshots in the supervisor, forks a new
generation of workers on the *same* sockets, waits until each is serving, and only
then tells the old generation to stop; a datagram queued in a socket is read by
whichever generation reads next, so none is lost and each answer comes wholly from
the old zone or wholly from the new.

Control: SIGHUP reloads, SIGTERM/SIGINT stop, and a Unix socket (owner-only)
takes the JSON commands that ``nameserver status|reload|stop`` send.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging
import os
import select
import signal
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nameserver.config import Config, ConfigError, default_control_socket
from nameserver.engine.core import Engine
from nameserver.server.udp import create_bound_socket
from nameserver.server.worker import WorkerSockets, run_worker
from nameserver.zone.load import ZoneError, load_zone
from nameserver.zone.tree import Zone

logger = logging.getLogger("nameserver")

READY_TIMEOUT = 30.0  # seconds a new worker has to start serving
STOP_TIMEOUT = 5.0  # seconds workers have to exit after SIGTERM before SIGKILL
CONTROL_TIMEOUT = 5.0  # seconds a control client has to send its command
RESPAWN_DELAY = 1.0  # seconds between restarts of a worker that keeps dying
UDP_BUFFER = 4 * 1024 * 1024


@dataclass
class LoadedZone:
    zone: Zone
    file: str
    loaded_at: float
    seconds: float
    warnings: int


@dataclass
class Worker:
    pid: int
    slot: int
    generation: int
    started_at: float


@dataclass
class ReloadResult:
    ok: bool
    messages: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "messages": self.messages, "at": self.at}


class StartError(Exception):
    """The server cannot start; the message says why (already logged in detail)."""


class Supervisor:
    """Runs the server; see the module docstring. ``reread_config`` gives the
    configuration again at each reload (the file re-read, command-line overrides
    applied again)."""

    def __init__(self, cfg: Config, reread_config: Callable[[], Config]):
        self.cfg = cfg
        self.reread_config = reread_config
        self.zones: dict[str, LoadedZone] = {}
        self.engine: Engine | None = None
        self.slots: list[WorkerSockets] = []
        self.workers: dict[int, Worker] = {}
        self.generation = 0
        self.started_at = time.time()
        self.last_reload: ReloadResult | None = None
        self.control: socket.socket | None = None
        self.control_path: Path | None = None
        self._stopping = False
        self._reload_pending = False
        self._wake_r, self._wake_w = -1, -1
        self._respawn: dict[int, float] = {}  # slot -> when to restart it

    # -- start and stop -------------------------------------------------------------

    def run(self) -> int:
        """Start, serve until told to stop, and return the exit status."""
        try:
            self._load_all()
            self.engine = self._build_engine(self.cfg)
            self._open_sockets()
            self._open_control()
        except StartError as e:
            logger.error("not starting: %s", e)
            self._close_control()
            return 1
        self._install_signals()
        try:
            if not self._spawn_generation():
                logger.error("not starting: the workers did not come up")
                return 1
            logger.info(
                "ready: %d worker(s), control socket %s", len(self.workers), self.control_path
            )
            self._loop()
        finally:
            self._stop_workers(list(self.workers))
            self._close_control()
        logger.info("stopped")
        return 0

    def _load_all(self) -> None:
        for zc in self.cfg.zones:
            loaded = self._load(zc.origin, str(zc.file))
            if isinstance(loaded, list):
                raise StartError(f"zone {zc.origin} was refused")
            self.zones[zc.origin] = loaded

    def _load(self, origin: str, path: str) -> LoadedZone | list[str]:
        """Load one zone, logging the outcome; return it, or the problems that refused it."""
        try:
            result = load_zone(path, origin)
        except ZoneError as e:
            for problem in e.problems:
                logger.error("zone %s refused: %s", origin, problem)
            return e.problems
        for warning in result.warnings:
            logger.warning("zone %s: %s", origin, warning)
        z = result.zone
        logger.info(
            "zone %s loaded: serial %d, %d records, %.2f s, from %s",
            origin,
            z.serial,
            z.record_count,
            result.seconds,
            path,
        )
        return LoadedZone(z, path, time.time(), result.seconds, len(result.warnings))

    def _build_engine(self, cfg: Config) -> Engine:
        return Engine(
            [lz.zone for lz in self.zones.values()],
            identity=cfg.identity,
            udp_payload=cfg.udp_payload_size,
        )

    def _open_sockets(self) -> None:
        reuse = self.cfg.workers > 1
        try:
            for _ in range(self.cfg.workers):
                udp, tcp = [], []
                for lst in self.cfg.listen:
                    udp.append(
                        create_bound_socket(
                            lst.address,
                            lst.port,
                            socket.SOCK_DGRAM,
                            reuse_port=reuse,
                            bufsize=UDP_BUFFER,
                        )
                    )
                    tcp.append(
                        create_bound_socket(
                            lst.address, lst.port, socket.SOCK_STREAM, reuse_port=reuse
                        )
                    )
                self.slots.append(WorkerSockets(tuple(udp), tuple(tcp)))
        except OSError as e:
            raise StartError(f"cannot listen: {e}") from None
        for lst in self.cfg.listen:
            logger.info("listening on %s port %d (UDP and TCP)", lst.address, lst.port)

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGHUP, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGCHLD, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
        elif signum == signal.SIGHUP:
            self._reload_pending = True

    # -- the supervisor's loop --------------------------------------------------------

    def _loop(self) -> None:
        assert self.control is not None
        while not self._stopping:
            timeout = None
            if self._respawn:
                timeout = max(0.0, min(self._respawn.values()) - time.monotonic())
            try:
                readable, _, _ = select.select([self.control, self._wake_r], [], [], timeout)
            except InterruptedError:
                readable = []
            if self._wake_r in readable:
                os.read(self._wake_r, 512)
            self._reap()
            if self._stopping:
                break
            if self._reload_pending:
                self._reload_pending = False
                logger.info("SIGHUP: reloading")
                self.reload()
            if self.control in readable:
                self._serve_control()
            self._respawn_due()
        logger.info("stopping")

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None or self._stopping:
                continue
            if worker.generation == self.generation:
                logger.error(
                    "worker %d (slot %d) died (%s); restarting it",
                    pid,
                    worker.slot,
                    _describe_status(status),
                )
                delay = RESPAWN_DELAY if time.time() - worker.started_at < 5 else 0.0
                self._respawn[worker.slot] = time.monotonic() + delay

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for slot, when in list(self._respawn.items()):
            if when <= now and not self._stopping:
                del self._respawn[slot]
                pid, ready = self._fork(slot)
                if pid and not self._wait_ready({pid: ready}):
                    self._respawn[slot] = time.monotonic() + RESPAWN_DELAY

    # -- workers --------------------------------------------------------------------

    def _fork(self, slot: int) -> tuple[int, int]:
        """Fork a worker for ``slot``; return (pid, the read end of its ready pipe)."""
        assert self.engine is not None
        read_fd, write_fd = os.pipe()
        gc.collect()
        gc.freeze()  # keep the collector from writing to the shared snapshot's pages
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(read_fd)
                self._forget_supervisor_state(slot)
                run_worker(self.cfg, self.engine, self.slots[slot], write_fd)
                code = 0
            except BaseException:  # noqa: BLE001 - the worker must never return into the supervisor
                logger.exception("worker for slot %d failed", slot)
            finally:
                os._exit(code)
        gc.unfreeze()
        os.close(write_fd)
        self.workers[pid] = Worker(pid, slot, self.generation, time.time())
        return pid, read_fd

    def _forget_supervisor_state(self, slot: int) -> None:
        """In a new worker: drop what belongs to the supervisor."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if self.control is not None:
            self.control.close()
        for i, sockets in enumerate(self.slots):
            if i != slot:
                for s in sockets.udp + sockets.tcp:
                    s.close()

    def _wait_ready(self, pending: dict[int, int]) -> bool:
        """Wait until every pid in ``pending`` (pid -> ready pipe) reports it is serving."""
        deadline = time.monotonic() + READY_TIMEOUT
        ok = True
        fds = {fd: pid for pid, fd in pending.items()}
        while fds:
            left = deadline - time.monotonic()
            if left <= 0:
                ok = False
                break
            readable, _, _ = select.select(list(fds), [], [], left)
            for fd in readable:
                if os.read(fd, 1) != b"R":
                    logger.error("worker %d exited before serving", fds[fd])
                    ok = False
                os.close(fd)
                del fds[fd]
        for fd in fds:
            os.close(fd)
        return ok

    def _spawn_generation(self) -> bool:
        """Fork a worker per slot for the current engine; True once all are serving."""
        self.generation += 1
        pending = dict(self._fork(slot) for slot in range(len(self.slots)))
        if self._wait_ready(pending):
            return True
        self._stop_workers(list(pending))
        return False

    def _stop_workers(self, pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        remaining = set(pids)
        while remaining and time.monotonic() < deadline:
            for pid in list(remaining):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    remaining.discard(pid)
                    self.workers.pop(pid, None)
            if remaining:
                time.sleep(0.02)
        for pid in remaining:
            logger.warning("worker %d did not stop in %.0f s; killing it", pid, STOP_TIMEOUT)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.workers.pop(pid, None)

    # -- reload ---------------------------------------------------------------------

    def reload(self, only: str | None = None) -> ReloadResult:
        """Reload the configuration and the zones (or just zone ``only``).

        A zone that fails to load keeps its previous snapshot; the result says why.
        """
        started = time.monotonic()
        messages: list[str] = []
        ok = True
        try:
            cfg = self.reread_config()
        except ConfigError as e:
            result = ReloadResult(False, [f"configuration refused: {e}"])
            logger.error("reload: configuration refused: %s", e)
            self.last_reload = result
            return result
        if cfg.listen != self.cfg.listen or cfg.workers != self.cfg.workers:
            messages.append("listeners and workers change only with a restart")
            cfg = _replace_listen(cfg, self.cfg)
        if only is not None:
            only = only.lower().rstrip(".") + "."
            if only not in {zc.origin for zc in cfg.zones}:
                result = ReloadResult(False, [f"no zone {only} is configured"])
                self.last_reload = result
                return result
        zones: dict[str, LoadedZone] = {}
        for zc in cfg.zones:
            old = self.zones.get(zc.origin)
            if only is not None and zc.origin != only and old is not None:
                zones[zc.origin] = old
                continue
            loaded = self._load(zc.origin, str(zc.file))
            if isinstance(loaded, list):
                ok = False
                messages.extend(loaded)
                if old is not None:
                    zones[zc.origin] = old
                    messages.append(f"zone {zc.origin}: still serving serial {old.zone.serial}")
                continue
            zones[zc.origin] = loaded
            messages.append(f"zone {zc.origin}: serial {loaded.zone.serial} loaded")
        for origin in self.zones.keys() - zones.keys():
            messages.append(f"zone {origin}: removed")
            logger.info("zone %s removed from the configuration", origin)
        old_zones, old_engine, old_cfg = self.zones, self.engine, self.cfg
        self.zones, self.cfg = zones, cfg
        self.engine = self._build_engine(cfg)
        old_workers = [w.pid for w in self.workers.values()]
        if self._spawn_generation():
            self._stop_workers(old_workers)
        else:
            ok = False
            messages.append("new workers did not start; the previous zones keep serving")
            self.zones, self.engine, self.cfg = old_zones, old_engine, old_cfg
            self.generation -= 1
        result = ReloadResult(ok, messages)
        self.last_reload = result
        logger.info(
            "reload %s in %.2f s",
            "done" if ok else "done with errors",
            time.monotonic() - started,
        )
        return result

    # -- control socket --------------------------------------------------------------

    def _open_control(self) -> None:
        path = self.cfg.control_socket or default_control_socket()
        directory = path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = directory.stat()
            if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
                raise StartError(
                    f"control socket directory {directory} must belong to this user "
                    "and be closed to others (mode 0700)"
                )
            if path.exists():
                if _answers(path):
                    raise StartError(f"another server is running (control socket {path})")
                path.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old_umask = os.umask(0o177)
            try:
                sock.bind(str(path))
            finally:
                os.umask(old_umask)
            sock.listen(8)
        except OSError as e:
            raise StartError(f"cannot open the control socket {path}: {e}") from None
        self.control, self.control_path = sock, path

    def _close_control(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
            if self.control_path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.control_path.unlink()

    def _serve_control(self) -> None:
        assert self.control is not None
        try:
            conn, _ = self.control.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(CONTROL_TIMEOUT)
            try:
                request = json.loads(_read_line(conn))
                reply = self.command(request)
            except (OSError, ValueError) as e:
                reply = {"ok": False, "error": f"bad request: {e}"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply).encode() + b"\n")

    def command(self, request: dict[str, object]) -> dict[str, object]:
        """Carry out one control command; the reply is what the CLI prints."""
        name = request.get("command")
        if name == "status":
            return {"ok": True, "status": self.status()}
        if name == "reload":
            zone = request.get("zone")
            logger.info("control: reload %s", zone or "all zones")
            return {"ok": True, **self.reload(zone if isinstance(zone, str) else None).as_dict()}
        if name == "stop":
            logger.info("control: stop")
            self._stopping = True
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {name!r}"}

    def status(self) -> dict[str, object]:
        return {
            "pid": os.getpid(),
            "uptime": time.time() - self.started_at,
            "generation": self.generation,
            "workers": [
                {"pid": w.pid, "slot": w.slot, "generation": w.generation}
                for w in sorted(self.workers.values(), key=lambda w: w.slot)
            ],
            "listeners": [f"{lst.address}@{lst.port}" for lst in self.cfg.listen],
            "zones": [
                {
                    "origin": origin,
                    "serial": lz.zone.serial,
                    "records": lz.zone.record_count,
                    "file": lz.file,
                    "loaded_at": lz.loaded_at,
                    "load_seconds": lz.seconds,
                    "warnings": lz.warnings,
                }
                for origin, lz in self.zones.items()
            ],
            "last_reload": self.last_reload.as_dict() if self.last_reload else None,
        }


def _replace_listen(cfg: Config, running: Config) -> Config:
    import dataclasses

    return dataclasses.replace(cfg, listen=running.listen, workers=running.workers)


def _read_line(conn: socket.socket, limit: int = 65536) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError("request too long")
    return data.decode()


def _answers(path: Path) -> bool:
    """Whether a server is listening on the control socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError as e:
            return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    return True


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.WEXITSTATUS(status)}"
