"""Issue 16 item 1: the demo keeps its ports from run to run (flags, environment, stored)."""

from __future__ import annotations

import json
import socket

import pytest

from speaker_grouping.demo_ports import PORTS_FILE, resolve_ports


def test_ports_are_chosen_once_and_kept(tmp_path):
    first = resolve_ports(tmp_path, environ={})
    assert first.label_studio != first.backend
    assert json.loads((tmp_path / PORTS_FILE).read_text()) == {
        "label_studio": first.label_studio,
        "backend": first.backend,
    }
    assert resolve_ports(tmp_path, environ={}) == first


def test_flags_win_over_environment_and_are_stored(tmp_path):
    env = {"SG_DEMO_LABEL_STUDIO_PORT": "18081", "SG_DEMO_BACKEND_PORT": "19091"}
    assert resolve_ports(tmp_path, environ=env) == (ports := resolve_ports(tmp_path, environ=env))
    assert (ports.label_studio, ports.backend) == (18081, 19091)
    flagged = resolve_ports(tmp_path, label_studio=18082, environ=env)
    assert (flagged.label_studio, flagged.backend) == (18082, 19091)
    assert resolve_ports(tmp_path, environ={}).label_studio == 18082


def test_a_stored_port_taken_meanwhile_is_replaced(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        (tmp_path / PORTS_FILE).write_text(json.dumps({"label_studio": taken, "backend": 19099}))
        ports = resolve_ports(tmp_path, environ={})
    assert ports.label_studio != taken and ports.backend == 19099


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SG_DEMO_BACKEND_PORT": "http"}, "SG_DEMO_BACKEND_PORT: 'http' is not a port number"),
        ({"SG_DEMO_BACKEND_PORT": "70000"}, "70000 is not a TCP port"),
        (
            {"SG_DEMO_BACKEND_PORT": "18000", "SG_DEMO_LABEL_STUDIO_PORT": "18000"},
            "cannot share port 18000",
        ),
    ],
)
def test_bad_ports_get_one_clear_line(tmp_path, env, message):
    with pytest.raises(ValueError, match=message):
        resolve_ports(tmp_path, environ=env)
