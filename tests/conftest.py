"""Shared fixtures: a real Label Studio (tests/ls_fixtures.py) and generated episodes."""

from __future__ import annotations

import os

pytest_plugins = ["tests.ls_fixtures", "tests.episode_fixtures"]

# Hub loads must fail in milliseconds, not after retries: CI and this machine are offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
