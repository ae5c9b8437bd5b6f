"""Embedder speed and accuracy on generated episodes.

Run ``python -m bench.bench_embedders [--repeats 3] [--seed 7] [--out DIR]``.

It generates (once, then reuses from ``.cache/bench-embedders/``) a ``standard`` and a ``hard``
episode with :mod:`bench.make_episode`, imports each with the real pipeline, and reads back the
clips and frames an import leaves. Then:

- **speed**: every embedder embeds every line of the standard episode (the unbatched baselines
  every third line), in batches of 32 lines
  as :mod:`ml_backend.features.extract` calls it, ``--repeats`` times, each repeat in a fresh
  Python process (so the peak resident memory is that embedder's own; worker processes are
  reported apart). The model load is timed apart from the embedding. Unbatched resemblyzer
  (``embed_utterance`` per line, the way its README embeds) runs in the same session as the
  baseline of the speed-up ratio.
- **accuracy**: leave-one-out 1-NN character accuracy of each embedder's vectors, voice-only
  and image-only, on both episodes (same scoring as :mod:`bench.voice_accuracy`).

Embedders that cannot load here (ECAPA and CLIP need the hub-models stack and their weights)
are reported as "needs weights". The tables go to stdout (markdown); the raw numbers to
``DIR/embedders.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foundation.layout import clip_file, frame_file

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench-embedders"
BATCH = 32
"""Lines per embed call, as the extraction calls the embedders."""
VOICE_MODELS = (
    "resemblyzer-unbatched",
    "resemblyzer-unbatched-1t",
    "resemblyzer",
    "resemblyzer-no-trim",
    "ecapa",
)
BASELINES = ("resemblyzer-unbatched", "resemblyzer-unbatched-1t")
BASELINE_STRIDE = 3
"""Unbatched resemblyzer with torch's default threads (one per core) and with one thread; the
speed-up is reported against the faster of the two."""
IMAGE_MODELS = ("anime-colour", "clip")


@dataclass(frozen=True)
class EpisodeLines:
    """One imported episode, line by line, in cue order."""

    preset: str
    clips: list[np.ndarray]
    frames: list[np.ndarray]
    characters: list[str]
    conditions: list[tuple[str, ...]]


def episode_dir(preset: str, seed: int) -> Path:
    """The cached episode, generated and imported on first use."""
    folder = CACHE / f"{preset}-seed{seed}"
    if not (folder / "imported.json").is_file():
        from bench.make_episode import make_episode
        from importers.pipeline import import_episode

        began = time.monotonic()
        video, subtitles = folder / "episode.mp4", folder / "episode.srt"
        if not (folder / "truth.csv").is_file():
            files = make_episode(preset, seed=seed, out_dir=folder)
            video, subtitles = files.video, files.subtitles
        imported = import_episode(video, subtitles=subtitles, out_dir=folder / "import")
        (folder / "imported.json").write_text(
            json.dumps(
                {
                    "episode_dir": str(imported.episode_dir.relative_to(folder)),
                    "indexes": [task["data"]["index"] for task in imported.tasks],
                    "made_in_s": round(time.monotonic() - began, 1),
                }
            )
        )
    return folder


def load_lines(
    preset: str, seed: int, *, kinds: tuple[str, ...] = ("voice", "image")
) -> EpisodeLines:
    from PIL import Image

    from bench.voice_accuracy import read_truth

    folder = episode_dir(preset, seed)
    record = json.loads((folder / "imported.json").read_text())
    media = folder / record["episode_dir"]
    truth = {row.index: row for row in read_truth(folder / "truth.csv")}
    indexes = record["indexes"]
    return EpisodeLines(
        preset=preset,
        clips=[_read_wav(media / clip_file(f"{index:04d}")) for index in indexes]
        if "voice" in kinds
        else [],
        frames=[
            np.asarray(Image.open(media / frame_file(f"{index:04d}")).convert("RGB"))
            for index in indexes
        ]
        if "image" in kinds
        else [],
        characters=[truth[index].character for index in indexes],
        conditions=[truth[index].conditions for index in indexes],
    )


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as clip:
        pcm = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
    return (pcm / 32768.0).astype(np.float32)


def build(model: str):  # noqa: ANN201 (an Embedder, or the unbatched stand-in)
    """The embedder a model name of this benchmark stands for."""
    from ml_backend.features.embedder import image_embedder, voice_embedder
    from ml_backend.features.voice import ResemblyzerEmbedder

    if model in BASELINES:
        return _Unbatched(ResemblyzerEmbedder(), torch_threads=1 if model.endswith("1t") else None)
    if model == "resemblyzer-no-trim":
        return ResemblyzerEmbedder(trim_silences=False)
    if model in VOICE_MODELS:
        return voice_embedder(model)
    return image_embedder(model)


class _Unbatched:
    """resemblyzer as its README uses it: one ``embed_utterance`` call per line."""

    def __init__(self, embedder: object, *, torch_threads: int | None) -> None:
        self.embedder = embedder
        self.torch_threads = torch_threads
        self.info = embedder.info

    def embed(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return self.embedder.embed_unbatched(batch, torch_threads=self.torch_threads)


def embed_all(embedder: object, items: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(
        [embedder.embed(items[start : start + BATCH]) for start in range(0, len(items), BATCH)]
    )


def child_main(model: str, preset: str, seed: int, out: Path) -> None:
    """One repeat of one embedder in this fresh process: load, embed every line, report.

    The unbatched baselines embed every ``BASELINE_STRIDE``-th line only (their rate is what
    the table needs, and all lines would take ten minutes a repeat on a busy machine).
    """
    kind = "image" if model in IMAGE_MODELS else "voice"
    lines = load_lines(preset, seed, kinds=(kind,))  # the other kind would inflate peak RSS
    items = lines.frames if kind == "image" else lines.clips
    if model in BASELINES:
        items = items[::BASELINE_STRIDE]
    began = time.perf_counter()
    embedder = build(model)
    if "resemblyzer" in model:
        embedder.embed(items[:1])  # loads the network lazily; count that as loading
    loaded = time.perf_counter()
    vectors = embed_all(embedder, items)
    done = time.perf_counter()
    if hasattr(embedder, "close"):
        embedder.close()
    np.save(out.with_suffix(".npy"), vectors)
    out.write_text(
        json.dumps(
            {
                "model": model,
                "info": [embedder.info.name, embedder.info.version, embedder.info.dim],
                "lines": len(items),
                "load_s": loaded - began,
                "embed_s": done - loaded,
                "peak_rss_mib": own_peak_rss_kib() / 1024,
                "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                / 1024,
            }
        )
    )


def own_peak_rss_kib() -> int:
    """Peak resident size of this process since exec (VmHWM).

    Not ``ru_maxrss``: that carries over the parent's size at fork, and the parent holds both
    decoded episodes (about 0.9 GiB), which made every embedder's peak look the same.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(model: str, preset: str, seed: int, repeats: int, work: Path) -> dict:
    """``repeats`` fresh-process runs of one embedder; the vectors of the last run."""
    runs, error = [], None
    for repeat in range(repeats):
        out = work / f"{model}-{preset}-{repeat}.json"
        command = ["-m", "bench.bench_embedders", "--child", model, preset, str(seed), str(out)]
        result = subprocess.run(
            [sys.executable, *command],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
            error = lines[-1] if lines else f"exit {result.returncode}"
            break
        runs.append(json.loads(out.read_text()))
    if not runs:
        return {"model": model, "error": error}
    embed_s = statistics.median(run["embed_s"] for run in runs)
    return {
        "model": model,
        "info": runs[-1]["info"],
        "lines": runs[-1]["lines"],
        "repeats": len(runs),
        "embed_s": [round(run["embed_s"], 3) for run in runs],
        "median_embed_s": embed_s,
        "lines_per_s": runs[-1]["lines"] / embed_s,
        "median_load_s": statistics.median(run["load_s"] for run in runs),
        "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
        "worker_peak_rss_mib": max(run["worker_peak_rss_mib"] for run in runs),
        "vectors": str(work / f"{model}-{preset}-{len(runs) - 1}.npy"),
    }


def nearest_neighbour(vectors: np.ndarray, lines: EpisodeLines, *, exclude: str = "") -> dict:
    """Leave-one-out 1-NN character accuracy; ``exclude`` drops lines of that condition from
    the scored lines (not from the candidates)."""
    from collections import Counter

    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    counts = Counter(lines.characters)
    scored = [
        i
        for i, character in enumerate(lines.characters)
        if counts[character] > 1 and exclude not in lines.conditions[i]
    ]
    hits = [lines.characters[nearest[i]] == lines.characters[i] for i in scored]
    return {"accuracy": float(np.mean(hits)), "scored": len(scored)}


def speed_table(results: list[dict], baseline: dict) -> str:
    out = [
        "| embedder | vector | lines/s | × unbatched resemblyzer | load s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    base_rate = baseline["lines_per_s"]
    for result in results:
        if "error" in result:
            out.append(f"| {result['model']} | — | needs weights | — | — | — |")
            continue
        ratio = f"{result['lines_per_s'] / base_rate:.1f}×"
        rss = f"{result['peak_rss_mib']:.0f}"
        if result["worker_peak_rss_mib"] > 1:
            rss += f" (+ workers {result['worker_peak_rss_mib']:.0f} each)"
        out.append(
            f"| {result['model']} | {result['info'][2]}-d | {result['lines_per_s']:.1f} "
            f"(median of {result['repeats']}: {', '.join(f'{s:.1f}' for s in result['embed_s'])} s)"
            f" | {ratio} | {result['median_load_s']:.1f} | {rss} |"
        )
    return "\n".join(out)


def accuracy_table(rows: list[tuple[str, str, dict[str, dict | None]]], presets: list[str]) -> str:
    header = ["embedder", "kind", *presets]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, kind, per_preset in rows:
        cells = []
        for preset in presets:
            score = per_preset.get(preset)
            if score is None:
                cells.append("needs weights")
            else:
                cell = f"{score['all']['accuracy']:.3f} ({score['all']['scored']})"
                if "on_screen" in score:
                    cell += f"; on screen {score['on_screen']['accuracy']:.3f}"
                cells.append(cell)
        out.append(f"| {model} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_embedders")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "raw")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model, preset, seed, out = args.child
        child_main(model, preset, int(seed), Path(out))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "embedders"
    work.mkdir(exist_ok=True)
    presets = ["standard", "hard"]
    episodes = {preset: load_lines(preset, args.seed) for preset in presets}
    print(f"episodes ready: {', '.join(presets)}", file=sys.stderr)
    speed, accuracy_rows, raw = [], [], {"machine": _machine(), "seed": args.seed}
    for model in (*VOICE_MODELS, *IMAGE_MODELS):
        kind = "image" if model in IMAGE_MODELS else "voice"
        per_preset: dict[str, dict | None] = {}
        for preset in presets:
            repeats = args.repeats if preset == "standard" else 1
            if model in BASELINES and preset != "standard":
                continue
            result = measure(model, preset, args.seed, repeats, work)
            print(f"{model} on {preset}: {_brief(result)}", file=sys.stderr)
            raw[f"{model}/{preset}"] = result
            if preset == "standard":
                speed.append(result)
            if "error" in result:
                per_preset[preset] = None
                continue
            if model in BASELINES:
                continue
            vectors = np.load(result["vectors"])
            score = {"all": nearest_neighbour(vectors, episodes[preset])}
            if kind == "image":
                score["on_screen"] = nearest_neighbour(
                    vectors, episodes[preset], exclude="offscreen"
                )
            per_preset[preset] = score
            raw[f"{model}/{preset}"]["nearest_neighbour"] = score
        if model not in BASELINES:  # they embed a subset: same vectors as batched, not scored
            accuracy_rows.append((model, kind, per_preset))
    baseline = max(
        (r for r in speed if r["model"] in BASELINES and "error" not in r),
        key=lambda r: r["lines_per_s"],
    )
    print("## Speed (standard episode)\n")
    print(speed_table(speed, baseline))
    print("\n## 1-NN character accuracy\n")
    print(accuracy_table(accuracy_rows, presets))
    (args.out / "embedders.json").write_text(json.dumps(raw, indent=2))
    return 0


def _brief(result: dict) -> str:
    if "error" in result:
        return result["error"]
    return f"{result['lines_per_s']:.1f} lines/s, load {result['median_load_s']:.1f} s"


def _machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
