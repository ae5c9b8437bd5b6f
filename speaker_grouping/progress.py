"""A progress hook that draws one tqdm bar per step.

Library code reports progress through ``hook(step, completed=i, total=n)`` (the protocol is
`foundation.hook.Hook`) and never draws anything itself (docs/style.md); only the command line
turns those calls into bars, here.
"""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm


class ProgressBars:
    """Callable as a hook; use as a context manager so bars are closed even on errors."""

    def __init__(self, *, disable: bool | None = None) -> None:
        # tqdm's own rule: disable=None hides bars when stderr is not a terminal (CI, pipes).
        self._disable = disable
        self._bars: dict[str, tqdm] = {}

    def __call__(self, step: str, *, completed: int, total: int) -> None:
        bar = self._bars.get(step)
        if bar is None:
            bar = tqdm(total=total, desc=step, unit="item", file=sys.stderr, disable=self._disable)
            self._bars[step] = bar
        bar.total = total
        bar.update(completed - bar.n)
        if completed >= total:
            bar.close()

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for bar in self._bars.values():
            bar.close()
