"""The annotation loop as an annotator lives it, in a real browser (issue 16, item 8).

Playwright drives Debian's ``chromium`` (``playwright install`` downloads browsers and fails
offline, so the system binary is passed as ``executable_path``) against a real Label Studio and
a real ``speaker-grouping serve`` child process, both on 127.0.0.1, with the generated ``tiny``
episode imported and pushed. The test:

1. logs in and opens the "Doubt first" view: the first row must be the lowest score;
2. opens that task, finds the proposal pre-selected, types a new name and submits;
3. checks that within 5 s (the issue's figure) other lines of that character show the name;
4. restarts the backend, submits another correction, and checks that it takes effect;
5. exports with the default formats and draws the report, which names the annotator by e-mail.

With ``SG_WRITE_SCREENSHOTS=1`` the same run writes the README's screenshots under ``docs/``
(task list, labelling screen, report chart), shrunk to palette PNGs under 150 KB; without it
nothing under the repository changes, so ``make test`` leaves the committed files alone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from label_studio_sdk import LabelStudio
from PIL import Image

from importers.push import push_tasks
from speaker_grouping.cli import main as cli_main
from speaker_grouping.local_backend import LocalBackend

pytestmark = [pytest.mark.label_studio, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
WRITE_SCREENSHOTS = os.environ.get("SG_WRITE_SCREENSHOTS") == "1"
MAX_SCREENSHOT_BYTES = 150 * 1024
NAME_VISIBLE_S = 5.0
"""Issue 16, item 8: a typed name shows on the character's other lines within 5 s."""
DOUBT_VIEW = "Doubt first"
HIDDEN_COLUMNS = [
    f"tasks:{name}"
    for name in (
        "inner_id",
        "completed_at",
        "total_annotations",
        "cancelled_annotations",
        "total_predictions",
        "annotators",
        "annotations_results",
        "annotations_ids",
        "predictions_model_versions",
        "file_upload",
        "storage_filename",
        "created_at",
        "updated_at",
        "updated_by",
        "avg_lead_time",
        "draft_exists",
        "data.line_id",
        "data.episode",
        "data.start",
        "data.end",
        "data.audio",
        "data.image",
        "data.frames",
        "data.flags",
        "data.style",
        "data.actor",
        "data.source_line",
        "data.audio_track",
    )
]
"""The screenshot's view shows the task id, the line's index, time and text, the score and the
proposal, not Label Studio's bookkeeping columns."""
T = TypeVar("T")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _required() -> bool:
    return os.environ.get("SPEAKER_GROUPING_REQUIRE_LABEL_STUDIO") == "1"


@dataclass
class Project:
    id: int
    view: int
    episode: str
    truth: dict[int, str]  # task id -> true character
    index_of: dict[int, int]  # task id -> line index


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if _required():
            raise
        pytest.skip("playwright is not installed: run `make setup`")
    if executable is None:
        if _required():
            raise FileNotFoundError("chromium is not installed: run `make setup-system`")
        pytest.skip("chromium is not installed: run `make setup-system`")
    # Chromium's sandbox needs user namespaces, which a root shell in a container lacks and
    # Ubuntu 23.10+ runners restrict (AppArmor); the browser only visits our 127.0.0.1 servers.
    args = ["--no-sandbox"]
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=args)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def backend(label_studio, tmp_path_factory) -> Iterator[LocalBackend]:
    server = LocalBackend(
        model_dir=tmp_path_factory.mktemp("browser-models"),
        document_root=label_studio.document_root,
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.token,
        extra_env={"SG_REFIT_DELAY_S": "0.1"},
    )
    server.start(timeout=300)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def project(label_studio, tiny_episode, backend) -> Project:
    """The tiny episode in a fresh project, connected to the backend, every line proposed, and a
    "Doubt first" view ordered by prediction score, as `make demo` sets it up."""
    folder = label_studio.document_root / tiny_episode.imported.name
    # The import's media URLs are relative to its own folder's parent; under Label Studio's
    # document root they resolve the same way.
    shutil.copytree(tiny_episode.imported, folder, dirs_exist_ok=True)
    tasks = json.loads((folder / "tasks.json").read_text(encoding="utf-8"))
    pushed = push_tasks(
        tasks,
        url=label_studio.url,
        api_key=label_studio.token,
        project=f"browser-{uuid.uuid4().hex[:8]}",
        document_root=label_studio.document_root,
        media_dir=folder,
    )
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    client.ml.create(
        url=backend.url, project=pushed.project_id, title="speaker-grouping", is_interactive=False
    )
    view = client.views.create(
        project=pushed.project_id,
        data={
            "title": DOUBT_VIEW,
            "ordering": ["tasks:predictions_score"],
            "hiddenColumns": {"explore": HIDDEN_COLUMNS, "labeling": HIDDEN_COLUMNS},
        },
    )
    answer = requests.post(
        f"{label_studio.url}/api/dm/actions",
        params={"id": "retrieve_tasks_predictions", "project": pushed.project_id},
        json={"selectedItems": {"all": True, "excluded": []}},
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=600,
    )
    assert answer.status_code == 200, answer.text
    with tiny_episode.truth.open(encoding="utf-8") as stream:
        by_start = {
            round(float(row["start"]), 2): row["character"] for row in csv.DictReader(stream)
        }
    truth: dict[int, str] = {}
    index_of: dict[int, int] = {}
    for task in client.tasks.list(project=pushed.project_id, fields="task_only"):
        truth[task.id] = by_start[round(float(task.data["start"]), 2)]
        index_of[task.id] = int(task.data["index"])
    return Project(pushed.project_id, int(view.id), tiny_episode.imported.name, truth, index_of)


def newest_predictions(label_studio, project: int) -> dict[int, tuple[str, float | None]]:
    """task id -> (speaker, score) of its newest prediction."""
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    found: dict[int, tuple[str, float | None]] = {}
    for task in client.tasks.list(project=project, fields="all"):
        predictions = [p if isinstance(p, dict) else p.dict() for p in task.predictions or []]
        if not predictions:
            continue
        newest = max(predictions, key=lambda p: p.get("id") or 0)
        speaker = newest["result"][0]["value"]["choices"][0]
        found[task.id] = (speaker, newest.get("score"))
    return found


def versions(label_studio, project: int) -> set[str]:
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    return {
        str((p if isinstance(p, dict) else p.dict()).get("model_version"))
        for task in client.tasks.list(project=project, fields="all")
        for p in task.predictions or []
    }


def wait_for(condition: Callable[[], T | None], timeout: float, step: float = 0.2) -> T | None:
    """The condition's first truthy value, or its last value once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def save_screenshot(png: bytes, name: str, *, width: int) -> None:
    """Shrink a screenshot to ``width`` and a 64-colour palette; write it under docs/ only when
    asked (SG_WRITE_SCREENSHOTS=1), and check its size either way."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    height = round(image.height * width / image.width)
    small = image.resize((width, height), Image.Resampling.LANCZOS).quantize(colors=64)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < MAX_SCREENSHOT_BYTES, (name, len(buffer.getvalue()))
    if WRITE_SCREENSHOTS:
        from foundation.atomic import atomic_write_bytes

        atomic_write_bytes(DOCS / name, buffer.getvalue())


def open_task(page: Any, label_studio, project: Project, task: int) -> None:
    """Open a task's labelling screen and wait until it is ready to edit: its draft (made from
    the proposal) is loaded, the speaker list shows a choice, and Submit is enabled. Typing into
    a screen still loading is lost when the draft arrives."""
    from playwright.sync_api import expect

    page.goto(f"{label_studio.url}/projects/{project.id}/data?tab={project.view}&task={task}")
    expect(page.locator("[data-testid^='select-trigger-'][data-value]").first).to_be_visible(
        timeout=60_000
    )
    expect(page.locator("[data-testid=bottombar-submit-button]")).to_be_enabled(timeout=60_000)
    expect(page.locator(".lsf-choices_layout_select")).to_be_visible()


def type_new_speaker(page: Any, name: str) -> None:
    """Type ``name`` into "New speaker" and press Enter, which adds it to the annotation (a
    typed text that was never entered may be lost on a quick submit)."""
    box = page.locator("input[name=new_speaker]")
    box.fill(name)
    box.press("Enter")
    page.get_by_text(name, exact=True).first.wait_for(timeout=10_000)


def submit(page: Any) -> float:
    """Press Submit; returns the time Label Studio answered that the annotation is saved."""
    with page.expect_response(
        lambda response: "/annotations" in response.url and response.request.method == "POST"
    ) as saved:
        page.locator("[data-testid=bottombar-submit-button]").click()
    assert saved.value.status == 201, saved.value.text()
    return time.monotonic()


def lines_named(label_studio, project: Project, name: str) -> set[int]:
    return {
        task
        for task, (speaker, _) in newest_predictions(label_studio, project.id).items()
        if speaker == name
    }


def test_an_annotator_fixes_doubt_first_in_chromium_across_a_backend_restart(
    label_studio, project, backend, browser, tmp_path, capsys
):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})

    # 1. Log in and open "Doubt first": the first row is the lowest score.
    page.goto(f"{label_studio.url}/user/login/")
    page.fill("input[name=email]", label_studio.server.username)
    page.fill("input[name=password]", label_studio.server.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)
    page.goto(f"{label_studio.url}/projects/{project.id}/data?tab={project.view}")
    first_row = page.locator("[data-testid=table-row]").first
    first_row.wait_for(timeout=60_000)
    label = first_row.locator("input[aria-label^='Select Task']").get_attribute("aria-label")
    first_task = int(str(label).removeprefix("Select Task").strip())
    proposals = newest_predictions(label_studio, project.id)
    assert set(proposals) == set(project.truth)  # every line has a proposal
    lowest = min(score for _, score in proposals.values() if score is not None)
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    assert proposals[first_task][1] == lowest, (
        f"Doubt first starts with task {first_task} (score {proposals[first_task][1]}), "
        f"not with the lowest score {lowest}; Label Studio sorts by the scores of the project's "
        f"model version {client.projects.get(id=project.id).model_version!r} only, and the "
        f"predictions carry {sorted(versions(label_studio, project.id))}"
    )
    save_screenshot(page.screenshot(), "screenshot-task-list.png", width=960)

    # 2. Open it: the proposal is pre-selected; type the character's name and submit.
    character = project.truth[first_task]
    first_name = f"{character} (browser)"
    open_task(page, label_studio, project, first_task)
    chosen = page.locator("[data-testid^='select-trigger-']").first
    assert chosen.get_attribute("data-value") == proposals[first_task][0]
    # The flags keep their hotkeys however many names the list holds (issue 16, item 8).
    assert page.get_by_text("[shift+t]").count() == 1
    assert page.get_by_text("[shift+n]").count() == 1
    type_new_speaker(page, first_name)
    save_screenshot(page.screenshot(), "screenshot-labelling.png", width=960)
    saved_at = submit(page)

    # 3. Within 5 s, other lines of that character show the name.
    others = {task for task, who in project.truth.items() if who == character} - {first_task}
    named = wait_for(
        lambda: lines_named(label_studio, project, first_name) & others,
        timeout=NAME_VISIBLE_S - (time.monotonic() - saved_at),
    )
    visible_s = time.monotonic() - saved_at
    assert named, f"no other line of {character} showed {first_name!r} within {NAME_VISIBLE_S} s"
    with capsys.disabled():  # a figure for the log, not a check (bench/ measures speed)
        print(f"\nsubmitted → name on {len(named)} other line(s) of {character}: {visible_s:.2f} s")
    # ... and in the labelling screen of one of them, the name is the pre-selected proposal.
    open_task(page, label_studio, project, min(named))
    shown = page.locator("[data-testid^='select-trigger-']").first
    assert shown.get_attribute("data-value") == first_name

    # 4. Restart the backend (same address), then correct a line of another character.
    backend.stop()
    began = time.monotonic()
    backend.start(timeout=300)
    with capsys.disabled():
        print(f"backend restarted in {time.monotonic() - began:.2f} s")
    remaining = [who for who in project.truth.values() if who != character]
    second_character = max(set(remaining), key=remaining.count)
    second_name = f"{second_character} (browser)"
    second_task = min(task for task, who in project.truth.items() if who == second_character)
    open_task(page, label_studio, project, second_task)
    type_new_speaker(page, second_name)
    submit(page)
    second_others = {task for task, who in project.truth.items() if who == second_character} - {
        second_task
    }
    taken = wait_for(
        lambda: lines_named(label_studio, project, second_name) & second_others, timeout=60
    )
    assert taken, f"after the restart, no other line of {second_character} took {second_name!r}"
    assert lines_named(label_studio, project, first_name)  # the first correction survived

    # 5. The default export works as it is, and the report names the annotator by e-mail.
    out = tmp_path / "export"
    args = ["export", "--url", label_studio.url, "--api-key", label_studio.token]
    assert cli_main([*args, "--project", str(project.id), "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr()
    assert "note:" not in printed.err and "warning" not in printed.err  # an SRT source
    assert (out / "clips" / first_name).is_dir() and (out / "clips" / second_name).is_dir()
    chart = tmp_path / "report.png"
    report = ["report", "--project", str(project.id), "--model-dir", str(backend.model_dir)]
    report += ["--url", label_studio.url, "--api-key", label_studio.token, "--png", str(chart)]
    assert cli_main(report) == 0
    table = capsys.readouterr().out
    assert label_studio.server.username in table  # admin@example.com, not "1"
    save_screenshot(chart.read_bytes(), "screenshot-report.png", width=880)
    page.close()
