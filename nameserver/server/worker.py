"""A worker process: serves DNS on sockets inherited from the supervisor.

A worker is forked by the supervisor after the zones are loaded and compiled, so
the engine and its zone snapshots are shared copy-on-write with the supervisor and
every other worker. On SIGTERM it stops reading its sockets (which stay open in
the supervisor and in the next generation of workers, so nothing queued in them is
lost), lets open TCP connections finish for a moment, and exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass

from nameserver.config import Config
from nameserver.engine.core import Engine
from nameserver.server.tcp import start_tcp, stop_tcp, tcp_stats
from nameserver.server.udp import start_udp

logger = logging.getLogger("nameserver.worker")

DRAIN_SECONDS = 2.0  # how long open TCP connections may finish after SIGTERM


@dataclass
class EngineHolder:
    """The one reference the transports read per message."""

    engine: Engine


@dataclass(frozen=True)
class WorkerSockets:
    """The sockets of one worker slot: a UDP and a TCP socket per listener."""

    udp: tuple[socket.socket, ...]
    tcp: tuple[socket.socket, ...]


def run_worker(cfg: Config, engine: Engine, sockets: WorkerSockets, ready_fd: int) -> None:
    """Serve until SIGTERM; write one byte to ``ready_fd`` once serving. Runs in the child."""
    import uvloop

    try:
        uvloop.run(_serve(cfg, EngineHolder(engine), sockets, ready_fd))
    except Exception:
        logger.exception("worker %d failed", os.getpid())
        raise


async def _serve(cfg: Config, holder: EngineHolder, sockets: WorkerSockets, ready_fd: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the supervisor decides
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
    os.write(ready_fd, b"R")
    os.close(ready_fd)
    await stop.wait()
    for transport in udp:
        transport.close()  # this process's copy of the socket only
    for server in tcp:
        server.close()
    await asyncio.sleep(0)
    deadline = loop.time() + DRAIN_SECONDS
    while loop.time() < deadline and any(_open_connections(s) for s in tcp):
        await asyncio.sleep(0.05)
    for server in tcp:
        await stop_tcp(server)


def _open_connections(server: asyncio.AbstractServer) -> int:
    return tcp_stats(server).connections_open
