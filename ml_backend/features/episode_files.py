"""Reading one imported episode folder for the grouping: its task rows and its feature store.

The grouping core works on arrays and never opens a file (docs/architecture.md §2); this is
where the two files it needs, ``tasks.json`` and ``features.npz`` (foundation.layout), are read
and checked, so `ml_backend.grouping.lines.load_lines` only joins what it is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.layout import features_path, tasks_path
from ml_backend.features.store import FeatureStore


@dataclass(frozen=True)
class EpisodeFiles:
    """One episode folder as read from disk.

    rows : each task's ``data`` (line_id, episode, index, start, end, text, ...), sorted by
        (episode, index), i.e. cue order.
    store : the folder's feature store.
    store_path : where the store was read from, to name it in errors.
    """

    rows: list[dict[str, Any]]
    store: FeatureStore
    store_path: Path


def read_episode_files(folder: str | Path) -> EpisodeFiles:
    """Read ``tasks.json`` and ``features.npz`` of an imported episode folder.

    Raises FileNotFoundError naming the missing file (import the episode and extract features
    first).
    """
    folder = Path(folder)
    tasks_file, store_file = tasks_path(folder), features_path(folder)
    for path in (tasks_file, store_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (import the episode and extract features)")
    tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
    rows = [task.get("data", task) for task in tasks]
    rows.sort(key=lambda data: (str(data["episode"]), int(data["index"])))
    return EpisodeFiles(rows=rows, store=FeatureStore.load(store_file), store_path=store_file)
