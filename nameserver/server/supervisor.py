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

Control: SIGHUP reloads, SIGTERM/SIGINT stop, SIGUSR1/SIGUSR2 switch the query log
on/off, and a Unix socket (owner-only) takes the JSON commands that ``nameserver
status|reload|stop|querylog`` send.

Operations: the supervisor gathers the workers' counters over a pipe per worker and
serves them, with its own state, as Prometheus metrics (:mod:`nameserver.metrics`);
started as root with ``user`` set, it opens every socket first and then switches to
that user before forking a worker; with ``watch`` it reloads a zone whose file
changed on disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import itertools
import json
import logging
import os
import pwd
import select
import signal
import socket
import stat
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nameserver import __version__
from nameserver.config import Config, ConfigError, default_control_socket
from nameserver.control import read_line
from nameserver.engine.core import Engine
from nameserver.metrics import Metrics, MetricsServer, ReportPipe, ServerState, ZoneState
from nameserver.server.udp import create_bound_socket
from nameserver.server.worker import WorkerSockets, run_worker
from nameserver.zone.load import ZoneError, load_zone
from nameserver.zone.tree import Zone

logger = logging.getLogger("nameserver")

READY_TIMEOUT = 30.0  # seconds a new worker has to start serving
STOP_TIMEOUT = 5.0  # seconds workers have to exit after SIGTERM before SIGKILL
CONTROL_REQUEST_LIMIT = 65536  # bytes: a control request is one short JSON line
CONTROL_TIMEOUT = 5.0  # seconds a control client has to send its command
RESPAWN_DELAY = 1.0  # seconds between restarts of a worker that keeps dying
WATCH_INTERVAL = 2.0  # seconds between two looks at the zone files, with watch on
UDP_BUFFER = 4 * 1024 * 1024
TCP_BACKLOG = 1024  # as the workers' start_tcp


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
        self.query_log = cfg.query_log
        self._query_log_request: bool | None = None  # from SIGUSR1/SIGUSR2
        self.worker_restarts = 0
        self.metrics = Metrics()
        self.metrics_server: MetricsServer | None = None
        self._reports: dict[int, ReportPipe] = {}  # read end of a report pipe -> it
        self._report_keys = itertools.count(1)
        self._zone_files: dict[str, tuple[int, ...] | None] = {}  # origin -> file at load
        self._zone_loads: dict[str, tuple[bool, float]] = {}  # origin -> last load: ok, when
        self._next_watch = 0.0

    # -- start and stop -------------------------------------------------------------

    def run(self) -> int:
        """Start, serve until told to stop, and return the exit status."""
        try:
            user = self._target_user()
            self._load_all()
            self.engine = self._build_engine(self.cfg)
            self._open_sockets()
            self._open_control()
            self._open_metrics()
            if user is not None:
                _switch_user(user)
        except StartError as e:
            logger.error("not starting: %s", e)
            self._close_metrics()
            self._close_control()
            return 1
        self._install_signals()
        self._publish()
        try:
            if self.metrics_server is not None:
                self.metrics_server.start()
            if not self._spawn_generation():
                logger.error("not starting: the workers did not come up")
                return 1
            logger.info(
                "ready: %d worker(s), control socket %s", len(self.workers), self.control_path
            )
            if self.query_log:
                logger.info("query log on")
            self._publish()
            self._loop()
        finally:
            self._stop_workers(list(self.workers))
            self._close_metrics()
            self._close_control()
        logger.info("stopped")
        return 0

    def _target_user(self) -> pwd.struct_passwd | None:
        """The user to switch to once the sockets are open (None: stay as we are)."""
        name = self.cfg.user
        if name is None:
            if os.geteuid() == 0:
                logger.warning(
                    "running as root: set user (or --user NAME) to switch to an unprivileged "
                    "user once the sockets are open, or run as that user with the capability "
                    "CAP_NET_BIND_SERVICE to use port 53"
                )
            return None
        if os.geteuid() != 0:
            raise StartError(
                f"user is set to {name!r}, but only root can switch users and this server "
                f"runs as uid {os.geteuid()}: start it as root, or leave out user/--user "
                "(to serve port 53 without root, give it CAP_NET_BIND_SERVICE)"
            )
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise StartError(f"user {name!r} does not exist") from None

    def _load_all(self) -> None:
        for zc in self.cfg.zones:
            loaded = self._load(zc.origin, str(zc.file))
            if isinstance(loaded, list):
                raise StartError(f"zone {zc.origin} was refused")
            self.zones[zc.origin] = loaded

    def _load(self, origin: str, path: str) -> LoadedZone | list[str]:
        """Load one zone, logging the outcome; return it, or the problems that refused it."""
        self._zone_files[origin] = _file_signature(path)  # before reading: no change missed
        try:
            result = load_zone(path, origin)
        except ZoneError as e:
            for problem in e.problems:
                logger.error("zone %s refused: %s", origin, problem)
            self._zone_loads[origin] = (False, time.time())
            return e.problems
        self._zone_loads[origin] = (True, time.time())
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
            cache_entries=cfg.answer_cache_entries,
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
                    stream = create_bound_socket(
                        lst.address, lst.port, socket.SOCK_STREAM, reuse_port=reuse
                    )
                    tcp.append(stream)
                    # Listen now, not when the worker starts: a connection that comes
                    # while the workers start waits in the backlog instead of being reset.
                    stream.listen(TCP_BACKLOG)
                self.slots.append(WorkerSockets(tuple(udp), tuple(tcp)))
        except OSError as e:
            raise StartError(f"cannot listen: {e}") from None
        for lst in self.cfg.listen:
            logger.info("listening on %s port %d (UDP and TCP)", lst.address, lst.port)

    def _open_metrics(self) -> None:
        if self.cfg.metrics is None:
            return
        lst = self.cfg.metrics.listen
        try:
            self.metrics_server = MetricsServer(lst.address, lst.port, self.metrics.render)
        except OSError as e:
            raise StartError(
                f"cannot listen for metrics on {lst.address} port {lst.port}: {e}"
            ) from None
        logger.info("metrics on %s", self.metrics_server.url)

    def _close_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGHUP, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGCHLD, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_signal)
        signal.signal(signal.SIGUSR2, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
        elif signum == signal.SIGHUP:
            self._reload_pending = True
        elif signum in (signal.SIGUSR1, signal.SIGUSR2):
            self._query_log_request = signum == signal.SIGUSR1

    # -- the supervisor's loop --------------------------------------------------------

    def _loop(self) -> None:
        assert self.control is not None
        while not self._stopping:
            due = list(self._respawn.values())
            if self.cfg.watch:
                due.append(self._next_watch)
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            control = self.control.fileno()
            readable = _wait_readable([control, self._wake_r, *self._reports], timeout)
            if self._wake_r in readable:
                os.read(self._wake_r, 512)
            self._read_reports(readable)
            self._reap()
            if self._stopping:
                break
            if self._query_log_request is not None:
                on, self._query_log_request = self._query_log_request, None
                self.set_query_log(on, "signal")
            if self._reload_pending:
                self._reload_pending = False
                logger.info("SIGHUP: reloading")
                self.reload()
            if control in readable:
                self._serve_control()
            self._respawn_due()
            self._watch_due()
            self._publish()
        logger.info("stopping")

    def _read_reports(self, fds: Iterable[int]) -> None:
        """Take in what the workers reported on the pipes in ``fds`` (others are skipped)."""
        for fd in fds:
            pipe = self._reports.get(fd)
            if pipe is None:
                continue
            snapshot, eof = pipe.read()
            if snapshot is not None:
                self.metrics.update(pipe.key, snapshot)
            if eof:  # the worker has exited: its counts join the retired total
                self.metrics.retire(pipe.key)
                del self._reports[fd]
                os.close(fd)

    def _publish(self) -> None:
        """Hand the metrics thread a fresh, immutable view of the supervisor's state."""
        last = self.last_reload
        configured = [zc.origin for zc in self.cfg.zones]
        self.metrics.publish(
            ServerState(
                started_at=self.started_at,
                generation=self.generation,
                supervisor_pid=os.getpid(),
                worker_pids=tuple(self.workers),
                zones=tuple(
                    ZoneState(
                        origin,
                        lz.zone.serial,
                        lz.zone.record_count,
                        lz.loaded_at,
                        lz.seconds,
                        getattr(lz.zone, "earliest_expiry", None),
                    )
                    for origin, lz in self.zones.items()
                ),
                zone_loads=tuple(
                    (origin, *self._zone_loads[origin])
                    for origin in configured
                    if origin in self._zone_loads
                ),
                reload_ok=last.ok if last else True,
                reload_at=last.at if last else self.started_at,
                query_log=self.query_log,
                worker_restarts=self.worker_restarts,
                version=__version__,
            )
        )

    def _watch_due(self) -> None:
        """With watch on, every WATCH_INTERVAL: reload the zones whose file changed."""
        now = time.monotonic()
        if not self.cfg.watch or now < self._next_watch:
            return
        self._next_watch = now + WATCH_INTERVAL
        changed = [
            zc
            for zc in self.cfg.zones
            if _file_signature(str(zc.file)) != self._zone_files.get(zc.origin)
        ]
        if not changed:
            return
        for zc in changed:
            logger.info("zone %s: %s changed on disk; reloading it", zc.origin, zc.file)
        self.reload(origins=[zc.origin for zc in changed])
        self._next_watch = time.monotonic() + WATCH_INTERVAL

    def set_query_log(self, on: bool, why: str) -> None:
        """Switch the query log on or off in every worker, now and in those to come."""
        self.query_log = on
        sig = signal.SIGUSR1 if on else signal.SIGUSR2
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        self._publish()
        logger.info("query log %s (%s)", "on" if on else "off", why)

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
                self.worker_restarts += 1
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
        report_r, report_w = os.pipe()  # the worker's counters, for the metrics
        # Keep the collector off the shared snapshot's pages in the workers. No collect
        # first: a full collection walks every zone object (~5 s for 1M delegations),
        # and the loader leaves no cycles behind; what is frozen stays frozen.
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(read_fd)
                os.close(report_r)
                self._forget_supervisor_state(slot)
                run_worker(
                    self.cfg, self.engine, self.slots[slot], write_fd, report_w, self.query_log
                )
                code = 0
            except BaseException:  # noqa: BLE001 - the worker must never return into the supervisor
                logger.exception("worker for slot %d failed", slot)
            finally:
                os._exit(code)
        os.close(write_fd)
        os.close(report_w)
        os.set_blocking(report_r, False)
        self._reports[report_r] = ReportPipe(report_r, next(self._report_keys), pid)
        self.workers[pid] = Worker(pid, slot, self.generation, time.time())
        logger.info("worker %d started (slot %d, generation %d)", pid, slot, self.generation)
        return pid, read_fd

    def _forget_supervisor_state(self, slot: int) -> None:
        """In a new worker: drop what belongs to the supervisor."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for sig in (signal.SIGUSR1, signal.SIGUSR2):  # until the worker handles them
            signal.signal(sig, signal.SIG_IGN)
        for fd in (self._wake_r, self._wake_w, *self._reports):
            os.close(fd)
        if self.control is not None:
            self.control.close()
        if self.metrics_server is not None:
            self.metrics_server.close_in_child()
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
            for fd in _wait_readable(list(fds), left):
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
        self._publish()
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
                    worker = self.workers.pop(pid, None)
                    if worker is not None:
                        logger.info(
                            "worker %d stopped (slot %d, generation %d)",
                            pid,
                            worker.slot,
                            worker.generation,
                        )
            if remaining:  # meanwhile, take in the exiting workers' last counts
                self._read_reports(_wait_readable(list(self._reports), 0.02))
        self._read_reports(_wait_readable(list(self._reports), 0))
        for pid in remaining:
            logger.warning("worker %d did not stop in %.0f s; killing it", pid, STOP_TIMEOUT)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.workers.pop(pid, None)

    # -- reload ---------------------------------------------------------------------

    def reload(
        self, only: str | None = None, *, origins: Collection[str] | None = None
    ) -> ReloadResult:
        """Reload the configuration and the zones (or just zone ``only``, or just the
        zones in ``origins``; zones new in the configuration are loaded in any case).

        A zone that fails to load keeps its previous snapshot; the result says why.
        """
        started = time.monotonic()
        messages: list[str] = []
        ok = True
        try:
            cfg = self.reread_config()
        except ConfigError as e:
            logger.error("reload: configuration refused: %s", e)
            return self._reloaded(ReloadResult(False, [f"configuration refused: {e}"]))
        fixed = _restart_only(cfg, self.cfg)
        if fixed:
            messages.append(f"{_and(fixed)} change only with a restart")
            cfg = _keep_restart_only(cfg, self.cfg)
        targets = set(origins) if origins is not None else None
        if only is not None:
            only = only.lower().rstrip(".") + "."
            if only not in {zc.origin for zc in cfg.zones}:
                return self._reloaded(ReloadResult(False, [f"no zone {only} is configured"]))
            targets = {only}
        zones: dict[str, LoadedZone] = {}
        for zc in cfg.zones:
            old = self.zones.get(zc.origin)
            if targets is not None and zc.origin not in targets and old is not None:
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
        old_query_log = self.query_log
        if cfg.query_log != old_cfg.query_log:  # else a switch at run time stays
            self.query_log = cfg.query_log
            logger.info("query log %s (configuration)", "on" if cfg.query_log else "off")
        self.zones, self.cfg = zones, cfg
        self.engine = self._build_engine(cfg)
        old_workers = [w.pid for w in self.workers.values()]
        if self._spawn_generation():
            self._stop_workers(old_workers)
        else:
            ok = False
            messages.append("new workers did not start; the previous zones keep serving")
            self.zones, self.engine, self.cfg = old_zones, old_engine, old_cfg
            self.query_log = old_query_log
            self.generation -= 1
        logger.info(
            "reload %s in %.2f s",
            "done" if ok else "done with errors",
            time.monotonic() - started,
        )
        return self._reloaded(ReloadResult(ok, messages))

    def _reloaded(self, result: ReloadResult) -> ReloadResult:
        self.last_reload = result
        self._publish()  # before the reply: whoever asked for the reload sees it in metrics
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
                try:
                    self.control_path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as e:  # e.g. made by root, and we switched user since
                    logger.debug("cannot remove the control socket %s: %s", self.control_path, e)

    def _serve_control(self) -> None:
        assert self.control is not None
        try:
            conn, _ = self.control.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(CONTROL_TIMEOUT)
            try:
                request = json.loads(read_line(conn, limit=CONTROL_REQUEST_LIMIT))
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
        if name == "querylog":
            state = request.get("state")
            if state not in ("on", "off"):
                return {"ok": False, "error": f"querylog takes on or off, not {state!r}"}
            self.set_query_log(state == "on", "control")
            return {"ok": True, "query_log": self.query_log}
        return {"ok": False, "error": f"unknown command {name!r}"}

    def status(self) -> dict[str, object]:
        counters, _, _ = self.metrics.totals()
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
            "query_log": self.query_log,
            "watch": self.cfg.watch,
            "user": self.cfg.user,
            "metrics": self.metrics_server.url if self.metrics_server else None,
            "queries": {"udp": counters["queries_udp"], "tcp": counters["queries_tcp"]},
        }


# Settings a reload cannot change: what was opened, bound or given up at the start.
_RESTART_ONLY = ("listen", "workers", "user", "metrics", "control_socket")


def _restart_only(cfg: Config, running: Config) -> list[str]:
    return [name for name in _RESTART_ONLY if getattr(cfg, name) != getattr(running, name)]


def _keep_restart_only(cfg: Config, running: Config) -> Config:
    return dataclasses.replace(cfg, **{name: getattr(running, name) for name in _RESTART_ONLY})


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _switch_user(user: pwd.struct_passwd) -> None:
    """Give up root for ``user`` for good (the supervisor, before any worker exists)."""
    try:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    except OSError as e:
        raise StartError(f"cannot switch to user {user.pw_name}: {e}") from None
    if user.pw_uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise StartError(f"switched to user {user.pw_name}, but root could be regained")
    logger.info(
        "running as user %s (uid %d, gid %d)", user.pw_name, user.pw_uid, user.pw_gid
    )


def _file_signature(path: str) -> tuple[int, ...] | None:
    """What tells that a file changed (modified, resized or replaced); None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _wait_readable(fds: list[int], timeout: float | None) -> list[int]:
    """The fds in ``fds`` ready to read (or closed at the other end), waiting at most
    ``timeout`` seconds (None: no limit). poll(), not select(): no limit on fd numbers,
    and a supervisor with many workers holds many sockets."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return [fd for fd, _ in poller.poll(ms)]


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
