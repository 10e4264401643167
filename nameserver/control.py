"""Client side of the control socket: what ``nameserver status|reload|stop`` send.

The protocol is one JSON object per line each way: ``{"command": "reload", "zone":
"coop."}`` in, ``{"ok": true, ...}`` out. The socket is a Unix domain socket that
only its owner can reach (see :mod:`nameserver.server.supervisor`).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

TIMEOUT = 600.0  # a reload of a large zone takes a while


class ControlError(Exception):
    """The server could not be reached or did not answer properly."""


def read_line(conn: socket.socket, limit: int | None = None) -> bytes:
    """Read one newline-terminated message (or up to EOF); ValueError past ``limit``."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if limit is not None and len(data) > limit:
            raise ValueError("message too long")
    return data


def send(path: Path, request: dict[str, object], timeout: float = TIMEOUT) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(json.dumps(request).encode() + b"\n")
            data = read_line(s)
        except FileNotFoundError:
            raise ControlError(f"no server is running (no control socket at {path})") from None
        except ConnectionRefusedError:
            raise ControlError(f"no server is running (nothing listens on {path})") from None
        except OSError as e:
            raise ControlError(f"control socket {path}: {e}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"control socket {path}: unreadable answer {data[:80]!r}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"control socket {path}: unexpected answer {reply!r}")
    return reply
