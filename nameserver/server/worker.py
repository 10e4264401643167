"""A worker process: serves DNS on sockets inherited from the supervisor.

A worker is forked by the supervisor after the zones are loaded and compiled, so
the engine and its zone snapshots are shared copy-on-write with the supervisor and
every other worker. On SIGTERM it stops reading its sockets (which stay open in
the supervisor and in the next generation of workers, so nothing queued in them is
lost), lets open TCP connections finish for a moment, and exits.

Once a second, and once more as it exits, a worker writes its cumulative counters
to its report pipe for the supervisor's metrics (:mod:`nameserver.metrics`).
SIGUSR1 switches the query log on and SIGUSR2 off (:mod:`nameserver.server.querylog`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvloop  # imported here, before the fork and before any switch of user

from nameserver.config import Config
from nameserver.engine.core import Engine
from nameserver.metrics import REPORT_INTERVAL, encode_snapshot, worker_snapshot
from nameserver.server.querylog import QueryLoggingEngine
from nameserver.server.tcp import start_tcp, stop_tcp, tcp_stats
from nameserver.server.udp import start_udp, udp_stats

logger = logging.getLogger("nameserver.worker")

FREEZE_INTERVAL = 1.0  # seconds between two gc.freeze() in a worker
DRAIN_SECONDS = 2.0  # how long open TCP connections may finish after SIGTERM
FINAL_REPORT_SECONDS = 1.0  # how long the last report may wait for room in its pipe


@dataclass
class EngineHolder:
    """The one reference the transports read per message (UDP: per batch)."""

    engine: Engine | QueryLoggingEngine


@dataclass(frozen=True)
class WorkerSockets:
    """The sockets of one worker slot: a UDP and a TCP socket per listener."""

    udp: tuple[socket.socket, ...]
    tcp: tuple[socket.socket, ...]


def run_worker(
    cfg: Config,
    engine: Engine,
    sockets: WorkerSockets,
    ready_fd: int,
    report_fd: int = -1,
    query_log: bool = False,
) -> None:
    """Serve until SIGTERM; write one byte to ``ready_fd`` once serving, and counters
    to ``report_fd`` (if not -1) as it goes. Runs in the child."""
    try:
        uvloop.run(_serve(cfg, engine, sockets, ready_fd, report_fd, query_log))
    except Exception:
        logger.exception("worker %d failed", os.getpid())
        raise


class _QueryLogSwitch:
    """Puts the query-logging wrapper in the holder, or takes it out."""

    def __init__(self, holder: EngineHolder, engine: Engine) -> None:
        self.holder, self.engine = holder, engine

    def set(self, on: bool) -> None:
        if on == isinstance(self.holder.engine, QueryLoggingEngine):
            return
        self.holder.engine = QueryLoggingEngine(self.engine) if on else self.engine
        logger.debug("worker %d: query log %s", os.getpid(), "on" if on else "off")


class _Reporter:
    """Writes the worker's cumulative counters to its report pipe, never blocking:
    what does not fit now is finished at the next tick."""

    def __init__(self, fd: int, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.fd = fd
        self.snapshot = snapshot
        self.pending = b""
        self.handle: asyncio.TimerHandle | None = None
        self.broken = fd < 0
        if fd >= 0:
            os.set_blocking(fd, False)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.broken:
            self.handle = loop.call_later(REPORT_INTERVAL, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.write()
        if not self.broken:
            self.handle = loop.call_later(REPORT_INTERVAL, self._tick, loop)

    def write(self) -> bool:
        """Write a fresh snapshot (after the rest of the last one); True when all is out."""
        if self.broken:
            return True
        if not self.pending:
            self.pending = encode_snapshot(self.snapshot())
        try:
            n = os.write(self.fd, self.pending)
        except BlockingIOError:
            return False
        except OSError:  # the supervisor is gone
            self.broken = True
            return True
        self.pending = self.pending[n:]
        return not self.pending

    async def finish(self) -> None:
        """Stop ticking and write the final snapshot (waiting a little for room)."""
        if self.handle is not None:
            self.handle.cancel()
        if self.broken:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FINAL_REPORT_SECONDS
        # The rest of a half-written line first, then the final snapshot.
        self.pending += encode_snapshot(self.snapshot())
        while self.pending and loop.time() < deadline:
            try:
                self.pending = self.pending[os.write(self.fd, self.pending) :]
            except BlockingIOError:
                await asyncio.sleep(0.02)
            except OSError:
                break
        os.close(self.fd)
        self.broken = True


async def _serve(
    cfg: Config,
    engine: Engine,
    sockets: WorkerSockets,
    ready_fd: int,
    report_fd: int,
    query_log: bool,
) -> None:
    loop = asyncio.get_running_loop()
    holder = EngineHolder(engine)
    switch = _QueryLogSwitch(holder, engine)
    switch.set(query_log)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the supervisor decides
    loop.add_signal_handler(signal.SIGUSR1, switch.set, True)
    loop.add_signal_handler(signal.SIGUSR2, switch.set, False)
    udp = [await start_udp(holder, "", 0, sock=s) for s in sockets.udp]
    tcp = [
        await start_tcp(
            holder,
            "",
            0,
            sock=s,
            max_connections=cfg.tcp.max_connections,
            idle_timeout=cfg.tcp.idle_timeout,
            max_queries_per_connection=cfg.tcp.max_queries_per_connection,
        )
        for s in sockets.tcp
    ]
    udp_counters = [udp_stats(t) for t in udp]
    tcp_counters = [tcp_stats(s) for s in tcp]
    reporter = _Reporter(
        report_fd, lambda: worker_snapshot(engine, udp_counters, tcp_counters)
    )
    reporter.start(loop)
    _freeze_survivors(loop)
    os.write(ready_fd, b"R")
    os.close(ready_fd)
    await stop.wait()
    for listener in udp:
        listener.close()  # this process's copy of the socket only
    for server in tcp:
        server.close()
    await asyncio.sleep(0)
    deadline = loop.time() + DRAIN_SECONDS
    while loop.time() < deadline and any(_open_connections(s) for s in tcp):
        await asyncio.sleep(0.05)
    for server in tcp:
        await stop_tcp(server)
    await reporter.finish()


def _freeze_survivors(loop: asyncio.AbstractEventLoop) -> None:
    """Move what survived into the collector's permanent generation, every second.

    The answer caches fill with long-lived tuples; left to the cyclic collector they
    trigger full collections that stop answering for 20-140 ms (measured with
    benchmarks/reload_latency.py on the 1M zone). Cache entries are freed by reference
    counting when evicted, so freezing them loses nothing; the collector still sees
    everything younger than a second.
    """
    gc.freeze()
    loop.call_later(FREEZE_INTERVAL, _freeze_survivors, loop)


def _open_connections(server: asyncio.AbstractServer) -> int:
    return tcp_stats(server).connections_open
