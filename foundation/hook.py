"""The progress hook protocol: how long work reports progress to its caller.

Library code reports progress through ``hook(step, completed=i, total=n)`` and never draws
anything itself (docs/style.md); only the command line turns those calls into bars
(`speaker_grouping.progress.ProgressBars`). This module is the protocol alone, so the server and
the libraries under it never import tqdm for a type.
"""

from __future__ import annotations

from typing import Protocol


class Hook(Protocol):
    """``hook(step, completed=i, total=n)``: how long work reports progress to its caller."""

    def __call__(self, step: str, *, completed: int, total: int) -> None: ...
