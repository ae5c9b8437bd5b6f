"""Stable numbers for the numbered speakers ("Speaker N") across re-proposals.

An annotator who has seen "Speaker 7" must find the same voice under that number after the
next refit, or not at all: a number is never given to another voice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any


class SpeakerNumbers:
    """Stable numbers of the numbered speakers ("Speaker N") across re-proposals.

    Each call to `assign` matches the new clusters to the previous call's by shared members
    (greatest overlap first); a cluster that matches none gets the next unused number. Numbers
    are never reused, so an annotator's "Speaker 7" stays Speaker 7 or disappears.
    """

    def __init__(self) -> None:
        self.members: dict[int, set[str]] = {}
        self.next_number = 1

    def assign(self, clusters: Sequence[Sequence[str]]) -> list[int]:
        """One number per cluster (given as member line ids), in the order given."""
        overlaps = []
        index: dict[str, int] = {}
        for number, members in self.members.items():
            for line_id in members:
                index[line_id] = number
        for position, members in enumerate(clusters):
            counts = Counter(index[m] for m in members if m in index)
            overlaps += [(-count, position, number) for number, count in counts.items()]
        overlaps.sort()
        numbers: list[int | None] = [None] * len(clusters)
        taken: set[int] = set()
        for _, position, number in overlaps:
            if numbers[position] is None and number not in taken:
                numbers[position] = number
                taken.add(number)
        for position in range(len(clusters)):
            if numbers[position] is None:
                numbers[position] = self.next_number
                self.next_number += 1
        self.members = {
            int(number): set(members)
            for number, members in zip(numbers, clusters, strict=True)
            if number is not None
        }
        return [int(number) for number in numbers if number is not None]

    def copy(self) -> SpeakerNumbers:
        """An independent copy: `assign` on it leaves this one as it is."""
        out = SpeakerNumbers()
        out.members = {number: set(ids) for number, ids in self.members.items()}
        out.next_number = self.next_number
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "next_number": self.next_number,
            "members": {str(number): sorted(ids) for number, ids in self.members.items()},
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> SpeakerNumbers:
        numbers = cls()
        numbers.next_number = int(values.get("next_number", 1))
        numbers.members = {
            int(number): set(ids) for number, ids in values.get("members", {}).items()
        }
        if numbers.members:
            numbers.next_number = max(numbers.next_number, max(numbers.members) + 1)
        return numbers
