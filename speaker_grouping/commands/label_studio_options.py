"""The options that tell a command which Label Studio to talk to.

`import --push`, `export` and `report` all reach Label Studio over its API; they take the same
``--api-key`` (and ``--url``) with the same environment defaults, so a team sets
``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` once. (`serve` names them differently, after
the backend's own settings, see `ml_backend.config`.)
"""

from __future__ import annotations

import argparse
import os

URL_ENV = "LABEL_STUDIO_URL"
API_KEY_ENV = "LABEL_STUDIO_API_KEY"


def add_api_key_option(parser: argparse.ArgumentParser) -> None:
    """``--api-key``, defaulting to ``$LABEL_STUDIO_API_KEY``."""
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"Label Studio API token (default: ${API_KEY_ENV})",
    )


def add_label_studio_options(parser: argparse.ArgumentParser, *, url_purpose: str = "") -> None:
    """``--url`` and ``--api-key``; ``url_purpose`` says in the help what the URL is used for."""
    purpose = f", {url_purpose}" if url_purpose else ""
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV),
        help=f"Label Studio URL{purpose} (default: ${URL_ENV})",
    )
    add_api_key_option(parser)
