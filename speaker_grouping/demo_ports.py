"""The demo's two ports, kept from run to run in its data folder.

Label Studio keeps the ML backend's address and its webhook in its database, so a demo that
picked new ports on every run left the project talking to the previous run's backend: the
annotator saw "Annotation saved" and the backend never heard of it (issue 16). The ports are
therefore chosen once and stored in ``<data dir>/ports.json``; each is, first that applies:

1. the command-line flag (``--port``, ``--backend-port``);
2. the environment (``SG_DEMO_LABEL_STUDIO_PORT``, ``SG_DEMO_BACKEND_PORT``);
3. the stored port, while it is free;
4. a free port.

A stored port that something else holds now is replaced by a free one (logged); the demo then
repairs the connection anyway: it updates the ML backend's URL, and the backend points the
webhook at itself when it starts (`ml_backend.connection`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from foundation.atomic import atomic_write_json

logger = logging.getLogger(__name__)

PORTS_FILE = "ports.json"
ENVIRONMENT = {
    "label_studio": "SG_DEMO_LABEL_STUDIO_PORT",
    "backend": "SG_DEMO_BACKEND_PORT",
}


@dataclass(frozen=True)
class DemoPorts:
    label_studio: int
    backend: int


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str, taken: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port not in taken:
            return port


def _checked(value: object, where: str) -> int:
    try:
        port = int(str(value))
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{where}: {port} is not a TCP port (1-65535)")
    return port


def resolve_ports(
    data_dir: Path,
    *,
    label_studio: int | None = None,
    backend: int | None = None,
    environ: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
) -> DemoPorts:
    """The demo's ports (see the module docstring), stored for the next run."""
    env = os.environ if environ is None else environ
    path = Path(data_dir) / PORTS_FILE
    stored: dict[str, object] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            stored = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError) as error:
            logger.warning("%s unreadable (%s); choosing ports again", path, error)
    given = {"label_studio": label_studio, "backend": backend}
    chosen: dict[str, int] = {}
    for name, variable in ENVIRONMENT.items():
        if given[name] is not None:
            chosen[name] = _checked(given[name], f"--{name.replace('_', '-')} port")
        elif env.get(variable, "").strip():
            chosen[name] = _checked(env[variable].strip(), variable)
        elif name in stored:
            port = _checked(stored[name], f"{path} {name}")
            if port_is_free(port, host) and port not in chosen.values():
                chosen[name] = port
            else:
                chosen[name] = _free_port(host, set(chosen.values()))
                logger.warning(
                    "the demo's %s port %d is taken now; using %d (the connection is repaired)",
                    name,
                    port,
                    chosen[name],
                )
        else:
            chosen[name] = _free_port(host, set(chosen.values()))
    if chosen["label_studio"] == chosen["backend"]:
        raise ValueError(f"Label Studio and the backend cannot share port {chosen['backend']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, chosen)
    return DemoPorts(**chosen)
