"""Speaker grouping (docs/architecture.md §4): confidence, gated clustering, merges, naming."""

from ml_backend.grouping.grouper import SpeakerGrouper
from ml_backend.grouping.lines import EpisodeLines, load_lines, select
from ml_backend.grouping.proposal import Placeholders, Proposal

__all__ = ["EpisodeLines", "Placeholders", "Proposal", "SpeakerGrouper", "load_lines", "select"]
