"""Label Studio's webhook and annotation bodies as the tests send them to the backend.

Label Studio sends these shapes (DESIGN.md, "Verified Label Studio behaviours"); one module
builds them, so that a test module says only what differs in its case. The values are passed
through as given, never cleaned, so the hostile-input tests can send what Label Studio never
would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def speaker_result(speaker: Any) -> list[dict[str, Any]]:
    """The ``result`` of an annotation that picked ``speaker`` in the speaker choices."""
    return [
        {
            "from_name": "speaker",
            "to_name": "audio",
            "type": "choices",
            "value": {"choices": [speaker]},
        }
    ]


def annotation(annotation_id: Any, task_id: Any, speaker: Any, **extra: Any) -> dict[str, Any]:
    """An annotation body; ``extra`` adds or overrides fields (``completed_by``, ``updated_at``)."""
    return {"id": annotation_id, "task": task_id, "result": speaker_result(speaker), **extra}


def stamped_annotation(
    annotation_id: int, task_id: int, speaker: str, **extra: Any
) -> dict[str, Any]:
    """`annotation` by user 1, with an ``updated_at`` that orders annotations by id within a
    minute, as Label Studio's own timestamps would."""
    return annotation(
        annotation_id,
        task_id,
        speaker,
        completed_by=1,
        updated_at=f"2025-01-01T00:00:{annotation_id % 60:02d}Z",
        **extra,
    )


def annotation_event(
    body: Mapping[str, Any],
    task: Mapping[str, Any],
    *,
    project: int = 7,
    action: str = "ANNOTATION_CREATED",
) -> dict[str, Any]:
    """The webhook Label Studio posts for ``body`` on ``task`` (the task's id comes from
    ``body["task"]``)."""
    return {
        "action": action,
        "annotation": dict(body),
        "task": {"id": body["task"], **task},
        "project": {"id": project},
    }
