"""Run the ML backend that Label Studio talks to (predictions, webhooks, refits).

Connect it in Label Studio under Settings → Model with the URL printed here. Settings come from
the environment (see ``ml_backend/config.py``: MODEL_DIR, LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY,
LOCAL_FILES_DOCUMENT_ROOT, BASIC_AUTH_USER/PASS, ...); the options below override them. One
process holds each project's state and its refit worker, so run one process (in production:
``gunicorn -w 1 --threads 8 'ml_backend.server:create_app()'``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    parser.add_argument("--model-dir", type=Path, help="per-project state (default: $MODEL_DIR)")
    parser.add_argument(
        "--document-root",
        type=Path,
        action="append",
        help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (repeat for more allowed media roots)",
    )
    parser.add_argument("--label-studio-url", help="default: $LABEL_STUDIO_URL")
    parser.add_argument("--api-key", help="default: $LABEL_STUDIO_API_KEY")
    parser.add_argument(
        "--public-url",
        help="where Label Studio reaches this backend; its webhook is kept pointing there "
        "(default: $SG_PUBLIC_URL, else http://HOST:PORT when HOST is one address)",
    )


def run(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from ml_backend.config import BackendConfig
    from ml_backend.server import create_app

    overrides: dict = {}
    if args.model_dir is not None:
        overrides["model_dir"] = args.model_dir
    if args.document_root:
        overrides["media_roots"] = tuple(args.document_root)
    if args.label_studio_url:
        overrides["label_studio_url"] = args.label_studio_url
    if args.api_key:
        overrides["label_studio_api_key"] = args.api_key
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not a TCP port")
    if args.public_url:
        overrides["public_url"] = args.public_url
    elif not os.environ.get("SG_PUBLIC_URL") and args.host not in ("0.0.0.0", "::", ""):
        host = f"[{args.host}]" if ":" in args.host else args.host
        overrides["public_url"] = f"http://{host}:{args.port}"
    config = BackendConfig.from_env(**overrides)
    app = create_app(config)
    try:
        server = make_server(args.host, args.port, app, threaded=True)
    except OSError as error:
        raise ValueError(f"cannot listen on {args.host}:{args.port} ({error.strerror})") from None
    print(f"speaker-grouping backend on http://{args.host}:{server.server_port}")
    print(f"model dir: {config.model_dir.resolve()}")
    if not config.media_roots:
        print(
            "warning: no media root (LOCAL_FILES_DOCUMENT_ROOT); local media cannot be read",
            file=sys.stderr,
        )
    if not config.can_push:
        print(
            "note: no LABEL_STUDIO_URL/API key; refreshed proposals are not pushed unless "
            "/setup's hostname is allowed (SG_SETUP_HOSTNAMES or SG_TRUST_SETUP_HOSTNAME=1)",
            file=sys.stderr,
        )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.shutdown()
    app.extensions["speaker_grouping"].close()
    return 0
