"""Speaker grouping (docs/architecture.md §4): confidence, gated clustering, merges, naming."""

from ml_backend.grouping.grouper import SpeakerGrouper
from ml_backend.grouping.lines import EpisodeLines, select
from ml_backend.grouping.params import GrouperParams
from ml_backend.grouping.proposal import Grouping, Proposal
from ml_backend.grouping.speaker_numbers import SpeakerNumbers

__all__ = [
    "EpisodeLines",
    "GrouperParams",
    "Grouping",
    "Proposal",
    "SpeakerGrouper",
    "SpeakerNumbers",
    "select",
]
