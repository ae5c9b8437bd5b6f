"""How far a line's vector can be trusted, learned from labelled episodes (docs/architecture.md §4).

The target is the exact cross-validated kNN-vote probability of `confidence_target`; the
inputs are what is known without labels: the line's place in its embedding neighbourhood
(`context.neighbourhood` statistics) and its audio quality. One logistic model per modality
(voice, image), fit on soft targets; ranks matter more than absolute values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ml_backend.grouping.confidence_target import LENGTH, K, Q, confidence_targets
from ml_backend.grouping.context import LineContext, Neighbourhood
from ml_backend.grouping.linear import LogisticModel

NEIGHBOURHOOD_FEATURES = ("s1_rel", "s3_rel", "s10_rel", "peak_rel", "reciprocal_rel", "lof_rel")
"""Only statistics relative to the episode's own level: absolute similarities shift with the
episode's size and cast (a 20-line episode's nearest lines are farther, a season's nearer),
which would make every line of a small episode look doubtful and every line of a season sure."""
QUALITY_FEATURES = ("log_duration", "speech_ratio", "snr_db", "rms_dbfs", "log_speech_s", "low_snr")
# noise and music beds pull lines of different speakers together (they share the bed), so a
# dense neighbourhood means less in a noisy line: let the model discount it
INTERACTION_FEATURES = ("low_snr_x_s10_rel", "low_snr_x_peak_rel", "low_snr_x_reciprocal_rel")
FEATURES = NEIGHBOURHOOD_FEATURES + QUALITY_FEATURES + INTERACTION_FEATURES
LOW_SNR_DB = 20.0
"""Below this SNR estimate a line counts as noisy, linearly down to fully noisy at 0 dB."""
MODALITIES = ("voice", "image")

# what a missing quality stat is replaced by: an ordinary line, so the stat neither helps nor hurts
_QUALITY_DEFAULTS = {"duration": 2.0, "speech_ratio": 0.6, "snr_db": 30.0, "rms_dbfs": -28.0}


def quality_features(quality: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """(n, 6) float64: log duration, speech ratio, SNR (clipped to 0–60 dB), RMS, log speech s,
    and how noisy the line is (0 above `LOW_SNR_DB`, 1 at 0 dB and below)."""
    column = {}
    for key, default in _QUALITY_DEFAULTS.items():
        values = np.asarray(quality.get(key, np.full(n, np.nan)), dtype=np.float64)
        column[key] = np.where(np.isfinite(values), values, default)
    duration = np.clip(column["duration"], 0.05, 60.0)
    speech = np.clip(column["speech_ratio"], 0.0, 1.0)
    return np.stack(
        [
            np.log(duration),
            speech,
            np.clip(column["snr_db"], 0.0, 60.0),
            np.clip(column["rms_dbfs"], -90.0, 0.0),
            np.log(np.maximum(duration * speech, 0.05)),
            low_snr(column["snr_db"]),
        ],
        axis=1,
    )


def low_snr(snr_db: np.ndarray) -> np.ndarray:
    """(n,) 0 for a clean line (SNR >= `LOW_SNR_DB`) up to 1 for SNR <= 0 dB; unknown = clean."""
    snr = np.nan_to_num(np.asarray(snr_db, dtype=np.float64), nan=LOW_SNR_DB)
    return np.clip((LOW_SNR_DB - snr) / LOW_SNR_DB, 0.0, 1.0)


def confidence_features(hood: Neighbourhood, quality: np.ndarray) -> np.ndarray:
    """(n, len(FEATURES)) float64; NaN statistics (no neighbours) become 0."""
    stats = np.nan_to_num(
        np.stack([hood.stats[name] for name in NEIGHBOURHOOD_FEATURES], axis=1), nan=0.0
    )
    noisy = quality[:, QUALITY_FEATURES.index("low_snr")]
    column = {name: stats[:, i] for i, name in enumerate(NEIGHBOURHOOD_FEATURES)}
    interactions = np.stack(
        [noisy * column["s10_rel"], noisy * column["peak_rel"], noisy * column["reciprocal_rel"]],
        axis=1,
    )
    return np.hstack([stats, quality, interactions])


class ConfidenceModel:
    """Voice and image confidence of every line, from label-free inputs.

    fit(context, labels) computes the targets of the labelled lines per modality and fits one
    logistic model each; predict(context) -> {"voice": (n,), "image": (n,)} in [0, 1], 0 for a
    line without that vector.
    """

    def __init__(self, *, k: int = K, q: float = Q, length: int = LENGTH, l2: float = 1.0) -> None:
        self.k = k
        self.q = q
        self.length = length
        self.l2 = l2

    def targets(self, context: LineContext, labels: np.ndarray) -> dict[str, np.ndarray]:
        """(n,) targets per modality; NaN for unlabelled lines (``labels`` < 0) and no-evidence."""
        out = {}
        labelled = np.flatnonzero(labels >= 0)
        for modality in MODALITIES:
            vectors = getattr(context.lines, modality)
            target = np.full(len(labels), np.nan)
            if vectors is not None and len(labelled) > 1:
                target[labelled] = confidence_targets(
                    vectors[labelled], labels[labelled], k=self.k, q=self.q, length=self.length
                )
            out[modality] = target
        return out

    def features(self, context: LineContext) -> dict[str, np.ndarray]:
        quality = quality_features(context.lines.quality, len(context.lines))
        out = {"voice": confidence_features(context.voice, quality)}
        if context.image is not None:
            out["image"] = confidence_features(context.image, quality)
        return out

    def fit(
        self,
        context: LineContext,
        labels: np.ndarray,
        *,
        prior: ConfidenceModel | None = None,
        strength: float = 0.0,
    ) -> ConfidenceModel:
        """labels : (n,) int label codes, -1 for unlabelled lines."""
        return self.fit_arrays(
            self.features(context), self.targets(context, labels), prior=prior, strength=strength
        )

    def fit_arrays(
        self,
        features: Mapping[str, np.ndarray],
        targets: Mapping[str, np.ndarray],
        *,
        prior: ConfidenceModel | None = None,
        strength: float = 0.0,
    ) -> ConfidenceModel:
        """Fit from stacked (features, targets) per modality, e.g. of several episodes."""
        self.models_ = {}
        for modality in MODALITIES:
            if modality not in features:
                if prior is not None and modality in prior.models_:
                    self.models_[modality] = prior.models_[modality]
                continue
            X, y = features[modality], targets[modality]
            keep = np.isfinite(y)
            previous = prior.models_.get(modality) if prior is not None else None
            if not keep.any() and previous is not None:
                self.models_[modality] = previous
                continue
            model = LogisticModel(l2=self.l2, feature_names=FEATURES)
            self.models_[modality] = model.fit(
                X[keep], y[keep], prior=previous, strength=strength if previous else 0.0
            )
        return self

    def predict(self, context: LineContext) -> dict[str, np.ndarray]:
        features = self.features(context)
        out = {}
        for modality in MODALITIES:
            present = (
                context.voice.present
                if modality == "voice"
                else (context.image.present if context.image is not None else None)
            )
            if modality not in features or modality not in self.models_:
                out[modality] = np.zeros(len(context.lines))
                continue
            out[modality] = np.where(
                present, self.models_[modality].predict_proba(features[modality]), 0.0
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "q": self.q,
            "length": self.length,
            "l2": self.l2,
            "models": {name: model.to_json() for name, model in self.models_.items()},
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> ConfidenceModel:
        model = cls(
            k=int(values["k"]),
            q=float(values["q"]),
            length=int(values["length"]),
            l2=float(values["l2"]),
        )
        model.models_ = {
            name: LogisticModel.from_json(part) for name, part in values["models"].items()
        }
        for name, part in model.models_.items():
            if part.feature_names != FEATURES:
                raise ValueError(
                    f"{name} confidence model has features {list(part.feature_names)}, this "
                    f"version computes {list(FEATURES)}: retrain (python -m bench.train_priors)"
                )
        return model
