"""Show a project's operation log: what each annotator accepted and corrected, per episode.

Prints a table (reviewed, accepted, corrected, and the corrections by kind: add, remove, merge,
name, as docs/architecture.md §5 counts them) and, with --png, draws the cumulative corrections
against lines reviewed, one curve per episode and annotator.

Label Studio's webhooks name an annotator by user id only, so with a Label Studio to ask
(``--url``/``--api-key``, or ``$LABEL_STUDIO_URL``/``$LABEL_STUDIO_API_KEY``) the ids are shown
as the users' e-mail addresses from its user list; without one, as ``user 3``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from speaker_grouping.commands.label_studio_options import add_label_studio_options

logger = logging.getLogger(__name__)

COLUMNS = ("reviewed", "accepted", "corrected", "add", "remove", "merge", "name", "revisions")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, type=int, help="Label Studio project id")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("MODEL_DIR") or "model-dir"),
        help="the backend's state folder (default: $MODEL_DIR or ./model-dir)",
    )
    parser.add_argument("--png", type=Path, help="also draw the log into this PNG file")
    add_label_studio_options(parser, url_purpose="to name annotators by e-mail")


def run(args: argparse.Namespace) -> int:
    from foundation.label_studio import LabelStudioError
    from ml_backend.operation_log import OPERATIONS_FILE, OperationLog

    folder = args.model_dir / str(args.project)
    if not (folder / OPERATIONS_FILE).is_file():
        raise FileNotFoundError(f"{folder / OPERATIONS_FILE}: no operation log for this project")
    log = OperationLog(folder)
    users: dict[str, str] = {}
    if args.url and args.api_key:
        try:
            users = fetch_user_emails(args.url, args.api_key)
        except (OSError, ValueError, LabelStudioError) as error:
            print(f"note: annotators shown by id: {error}", file=sys.stderr)
    rows = [{**row, "annotator": annotator_name(row["annotator"], users)} for row in log.summary()]
    print(format_table(rows))
    if args.png:
        entries = [
            {**entry, "annotator": annotator_name(str(entry.get("annotator")), users)}
            for entry in log.entries()
        ]
        draw(entries, args.png)
        print(f"chart: {args.png}")
    return 0


def fetch_user_emails(url: str, api_key: str) -> dict[str, str]:
    """Label Studio's user id -> e-mail (``GET /api/users/``, the organisation's members)."""
    from foundation.label_studio import LabelStudioClient

    with LabelStudioClient(url, api_key) as client:
        users = client.users()
    return {
        str(user["id"]): str(user.get("email") or user.get("username") or user["id"])
        for user in users
        if "id" in user
    }


def annotator_name(annotator: str, users: Mapping[str, str]) -> str:
    """The e-mail of a Label Studio user id; ``user N`` for an id nobody could name; any other
    recorded name (an e-mail a full annotation carried) as it is."""
    if annotator in users:
        return users[annotator]
    return f"user {annotator}" if annotator.isdigit() else annotator


def format_table(rows: list[dict]) -> str:
    header = ("episode", "annotator", *COLUMNS, "corrections/100")
    body = []
    for row in rows:
        per_100 = 100.0 * row["corrected"] / row["reviewed"] if row["reviewed"] else 0.0
        body.append(
            (row["episode"], row["annotator"], *(str(row[c]) for c in COLUMNS), f"{per_100:.1f}")
        )
    if not body:
        return "no annotations logged yet"
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in body
    )
    return "\n".join(lines)


def draw(entries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from foundation.atomic import atomic_write_bytes

    curves: dict[tuple[str, str], list[int]] = {}
    kinds: dict[str, int] = {}
    for entry in entries:
        if entry.get("deleted"):
            continue
        curve = curves.setdefault((entry["episode"], entry["annotator"]), [0])
        corrected = entry["kind"] != "accepted"
        curve.append(curve[-1] + int(corrected))
        if corrected:
            kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=(3, 1))
    for (episode, annotator), curve in sorted(curves.items()):
        left.plot(range(len(curve)), curve, label=f"{episode} / {annotator}")
    left.set_xlabel("lines reviewed")
    left.set_ylabel("corrections")
    left.set_title("Corrections as annotation proceeds")
    if curves:
        left.legend(fontsize="small")
    names = ["add", "remove", "merge", "name"]
    right.bar(names, [kinds.get(name, 0) for name in names], color="tab:orange")
    right.set_title("Corrections by kind")
    # Lines and corrections are counts: no tick at 2.5 corrections.
    for axis in (left.xaxis, left.yaxis, right.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
