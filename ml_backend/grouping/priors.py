"""The shipped cold-start priors: the models trained by ``bench/train_priors.py``.

One JSON file (no pickle): the confidence and merge models, the score calibrator, the name
model's prior weights, the nuisance projection of the voice vectors (optional), and the voice
and image models they were trained for, since a threshold belongs to an embedder
(docs/architecture.md §4). Learned weights only: the hyper-parameters are
`params.GrouperParams`. A file may carry an explicit, versioned override of some of them
(``"params_override"``, see `params.params_for_priors`), which is logged when used; the
packaged file has none.

Format 1 kept the tuned thresholds in ``"options"``; such a file still loads, its options read
as a version-1 override.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation.atomic import atomic_write_json
from ml_backend.grouping.calibration import ScoreCalibrator
from ml_backend.grouping.confidence import ConfidenceModel
from ml_backend.grouping.merge import MergeClassifier
from ml_backend.grouping.name_model import NameModel
from ml_backend.grouping.nuisance import NuisanceProjection
from ml_backend.grouping.params import ParamsOverride

logger = logging.getLogger(__name__)

FORMAT_NAME = "speaker-grouping-priors"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
PACKAGED = Path(__file__).resolve().parent / "priors" / "default.json"


class PriorsError(ValueError):
    """A priors file is unreadable or not ours; one line naming the file."""


@dataclass
class Priors:
    confidence: ConfidenceModel
    merge: MergeClassifier
    calibrator: ScoreCalibrator
    voice_model: str
    image_model: str | None
    trained_on: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    names: NameModel | None = None
    """Prior weights of the name model; None in priors trained before it existed."""
    nuisance: NuisanceProjection | None = None
    """Voice directions removed before grouping (`nuisance`); None in priors without it."""
    params_override: ParamsOverride | None = None
    """Hyper-parameters this file sets explicitly (None: the `GrouperParams` defaults)."""
    source: str = ""
    """Where the priors were read from, for log messages; not saved."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "voice_model": self.voice_model,
            "image_model": self.image_model,
            "trained_on": self.trained_on,
            "confidence": self.confidence.to_json(),
            "merge": self.merge.to_json(),
            "calibrator": self.calibrator.to_json(),
            "report": self.report,
        }
        if self.names is not None:
            out["names"] = self.names.to_json()
        if self.nuisance is not None:
            out["nuisance"] = self.nuisance.to_json()
        if self.params_override is not None:
            out["params_override"] = self.params_override.to_json()
        return out

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Priors:
        version = values.get("version")
        if values.get("format") != FORMAT_NAME or version not in READABLE_VERSIONS:
            raise ValueError(f"not {FORMAT_NAME} version {FORMAT_VERSION}")
        if version == 1:
            override = ParamsOverride.from_json({"version": 1, "values": values["options"]})
        elif "params_override" in values:
            override = ParamsOverride.from_json(values["params_override"])
        else:
            override = None
        return cls(
            confidence=ConfidenceModel.from_json(values["confidence"]),
            merge=MergeClassifier.from_json(values["merge"]),
            calibrator=ScoreCalibrator.from_json(values["calibrator"]),
            params_override=override,
            voice_model=str(values["voice_model"]),
            image_model=None if values.get("image_model") is None else str(values["image_model"]),
            trained_on=[str(name) for name in values.get("trained_on", [])],
            report=dict(values.get("report", {})),
            names=NameModel.from_json(values["names"]) if "names" in values else None,
            nuisance=(
                NuisanceProjection.from_json(values["nuisance"]) if "nuisance" in values else None
            ),
        )

    def save(self, path: Path | str) -> None:
        atomic_write_json(path, self.to_json())


def load_priors(path: Path | str | None = None) -> Priors:
    """Read a priors JSON file (default: the packaged one). A folder means its default.json."""
    path = PACKAGED if path is None else Path(path)
    if path.is_dir():
        path = path / "default.json"
    try:
        priors = Priors.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise PriorsError(f"{path}: priors not found (run python -m bench.train_priors)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise PriorsError(f"{path}: not a readable priors file ({error})") from None
    priors.source = str(path)
    return priors
