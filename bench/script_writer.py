"""Dialogue text for synthetic episodes: varied English lines from templates and word lists.

The words matter little to a speaker-grouping benchmark, but they must vary (a voice embedding
of the same sentence over and over would flatter every method), have a controllable length (line
length drives clip duration, and one-word lines are a hard condition of their own), and come out
the same for the same random generator, with no data downloaded from anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.episode_spec import HardConditions

CHARACTER_NAMES: tuple[str, ...] = (
    "Haruki", "Aoi", "Ren", "Sakura", "Kaito", "Yuna", "Sora", "Hina", "Daichi", "Mei",
    "Riku", "Nanami", "Takumi", "Emi", "Kenji", "Rin", "Shota", "Yui", "Hayato", "Mio",
)  # fmt: skip
"""Short names that every engine pronounces; also used as one-word lines ("Aoi!")."""

ONE_WORD_LINES: tuple[str, ...] = (
    "What?!", "Yes.", "No!", "Wait!", "Really?", "Thanks.", "Sorry.", "Okay.", "Hey!", "Huh?",
    "Run!", "Look!", "Right.", "Fine.", "Stop!", "Why?", "Where?", "Now!", "Great.", "Sure.",
    "Quiet!", "Help!", "Nope.", "Done.", "Go!", "Who?", "Me?", "Again?", "Hmm.", "Yeah.",
)  # fmt: skip

_WORDS: dict[str, tuple[str, ...]] = {
    "noun": (
        "key", "letter", "map", "train", "festival", "phone", "notebook", "bicycle", "umbrella",
        "lunch", "test", "concert", "garden", "camera", "ticket", "project", "secret", "promise",
        "dream", "storm", "lantern", "bridge", "shrine", "game", "song", "painting", "cat",
        "robot", "recipe", "message",
    ),
    "place": (
        "the station", "the school roof", "the library", "the beach", "the old shrine",
        "the market", "the club room", "the river", "the hospital", "the cafe", "the park",
        "the gym", "the harbour", "the bookshop", "the top floor", "the city hall",
    ),
    "time": (
        "tonight", "tomorrow", "this morning", "after school", "at noon", "next week",
        "on Sunday", "before dawn", "right now", "later", "yesterday", "by Friday",
    ),
    "verb": (
        "find", "fix", "carry", "open", "hide", "check", "bring", "finish", "draw", "cook",
        "return", "protect", "follow", "catch", "explain", "forget", "remember", "sell",
    ),
    "adj": (
        "strange", "quiet", "broken", "beautiful", "dangerous", "ridiculous", "perfect",
        "heavy", "secret", "tiny", "huge", "ancient", "empty", "shiny", "crowded", "cold",
    ),
    "feeling": (
        "happy", "worried", "tired", "nervous", "excited", "angry", "lost", "sure", "ready",
        "hungry", "scared", "proud",
    ),
    "person": (
        "the teacher", "my sister", "the captain", "our neighbour", "the new student",
        "my grandfather", "the doctor", "the shopkeeper", "your brother", "the president",
    ),
}  # fmt: skip

_TEMPLATES: tuple[str, ...] = (
    "Did you {verb} the {noun}?",
    "I left the {noun} at {place}.",
    "We have to {verb} the {noun} {time}.",
    "Meet me at {place} {time}.",
    "That {noun} looks {adj} to me.",
    "I am not {feeling}, I am just thinking.",
    "Why would {person} {verb} a {adj} {noun}?",
    "Nobody goes to {place} {time}.",
    "Have you seen {person} anywhere?",
    "The {noun} was {adj}, I swear.",
    "If we hurry, we can {verb} it {time}.",
    "I promised {person} I would {verb} the {noun}.",
    "Honestly, I feel a little {feeling} about this.",
    "Let us {verb} the {noun} before {person} notices.",
    "Something {adj} happened at {place} {time}.",
    "You always say that, but you never {verb} anything.",
    "Is that the {noun} from {place}?",
    "I think the {noun} is in {place}.",
    "Give me the {noun}, please.",
    "We should ask {person} about the {adj} {noun}.",
    "It is too {adj} to {verb} {time}.",
    "Wait, who told you about the {noun}?",
    "I can {verb} it myself, thank you.",
    "The whole class is going to {place} {time}.",
    "Are you {feeling}? You look pale.",
    "This is the most {adj} {noun} I have ever seen.",
    "Do not {verb} the {noun} without me.",
    "I heard {person} is {feeling} about the {noun}.",
    "Take the {noun} and run to {place}.",
    "Maybe we can {verb} it together {time}.",
    "Every time I see a {noun}, I remember that day.",
    "There is no way I am going to {place} alone.",
    "So that is why the {noun} was {adj}.",
    "Let me {verb} it, I know what I am doing.",
    "I was so {feeling} when I saw it.",
    "Please tell me you did not lose the {noun}.",
    "We will {verb} it, no matter what.",
    "{person} said the {noun} is {adj}.",
    "Why is everyone so {feeling} today?",
    "Could you {verb} my {noun} {time}?",
    "I know.",
    "Not again.",
    "Leave me alone.",
    "You are late!",
    "See you {time}.",
    "Where is {person}?",
    "That is {adj}.",
    "I am {feeling}.",
    "Let us go.",
    "Found the {noun}!",
    "Not the {noun} again.",
    "Bring it {time}.",
)

_TAILS: tuple[str, ...] = (
    "right?",
    "you know.",
    "I guess.",
    "okay?",
    "trust me.",
    "for real.",
    "or not.",
    "again.",
)

_OPENERS: tuple[str, ...] = ("Well,", "Listen,", "Hey,", "Look,", "Oh,", "Come on,", "Um,", "So,")


def one_word_line(rng: np.random.Generator, *, names: Sequence[str] = ()) -> str:
    """A one-word line: an exclamation, or now and then a name called out."""
    if names and rng.random() < 0.25:
        return f"{names[int(rng.integers(len(names)))]}{'!?'[int(rng.integers(2))]}"
    return ONE_WORD_LINES[int(rng.integers(len(ONE_WORD_LINES)))]


def dialogue_line(
    rng: np.random.Generator, *, words: tuple[int, int] = (3, 14), names: Sequence[str] = ()
) -> str:
    """A line of ``words[0]``..``words[1]`` words, sometimes addressing one of ``names``.

    Templates are combined (an opener, an addressee, a second sentence, a tag question) until
    the line reaches a length drawn in the range, so length varies independently of template.
    """
    low, high = words
    if low < 2:
        raise ValueError(f"a dialogue line needs at least 2 words, got words={words}")
    target = int(rng.integers(low, high + 1))
    for _ in range(50):
        order = rng.permutation(len(_TEMPLATES))  # distinct templates: no "I know. I know."
        parts = [_fill(_TEMPLATES[order[0]], rng)]
        if names and rng.random() < 0.2:
            name = names[int(rng.integers(len(names)))]
            parts[0] = f"{name}, {_decapitalise(parts[0])}"
        while _count(parts) < target - 3:
            parts.append(_fill(_TEMPLATES[order[len(parts)]], rng))
        if _count(parts) < target and rng.random() < 0.5:
            parts.insert(0, _OPENERS[int(rng.integers(len(_OPENERS)))])
        tail = _TAILS[int(rng.integers(len(_TAILS)))]
        last = parts[-1]
        # A tag on a statement of a few words, never echoing it ("Not again, again.").
        echoes = set(tail.rstrip(".?").lower().split()) & set(last.rstrip(".").lower().split())
        if _count(parts) < target and last.endswith(".") and len(last.split()) >= 3 and not echoes:
            parts[-1] = f"{last[:-1]}, {tail}"
        text = _join(parts)
        if low <= len(text.split()) <= high:
            return text
    # Some ranges are hard to hit with whole templates; a short exclamation pair always fits.
    fallback = [ONE_WORD_LINES[int(rng.integers(len(ONE_WORD_LINES)))] for _ in range(low)]
    return " ".join(fallback)


def _fill(template: str, rng: np.random.Generator) -> str:
    text = template
    for slot, choices in _WORDS.items():
        while "{" + slot + "}" in text:
            text = text.replace("{" + slot + "}", choices[int(rng.integers(len(choices)))], 1)
    return text[0].upper() + text[1:]


def _decapitalise(sentence: str) -> str:
    """Lower the first letter, except for "I" and names, which stay capitalised mid-sentence."""
    first = sentence.split(" ", 1)[0].rstrip(",")
    if first == "I" or first in CHARACTER_NAMES:
        return sentence
    return sentence[0].lower() + sentence[1:]


def _count(parts: Sequence[str]) -> int:
    return sum(len(part.split()) for part in parts)


def _join(parts: Sequence[str]) -> str:
    """Join an opener ("Well,") to the next sentence without capitalising mid-sentence."""
    text = ""
    for part in parts:
        if text.endswith(","):
            text = f"{text} {_decapitalise(part)}"
        else:
            text = f"{text} {part}" if text else part
    return text


# ---------------------------------------------------------------------------------------------
# The script: who speaks which line in which scene, and which hard conditions each line gets.

FRAMINGS = ("single", "two", "offscreen")
"""single: the speaker alone on screen; two: the speaker beside ``partner``; offscreen: the
picture shows ``partner`` (a listener) instead of the speaker, or nobody when it is None."""


@dataclass(frozen=True)
class ScriptLine:
    """One subtitle line as planned, before any audio exists."""

    character: int
    """Index into the cast, which is ordered by importance (0 is the main lead)."""
    text: str
    one_word: bool = False
    shout: bool = False
    whisper: bool = False
    cut_by_next: bool = False
    jitter: bool = False
    framing: str = "single"
    partner: int | None = None


@dataclass(frozen=True)
class Scene:
    """One place and time: a backdrop, who is present, and what the room sounds like."""

    characters: tuple[int, ...]
    lines: tuple[ScriptLine, ...]
    background: str
    background_seed: int
    bed: str | None = None
    """None, "music" or "noise"."""
    snr_db: int | None = None
    rt60_s: float | None = None


def line_counts(characters: int, lines: int, rng: np.random.Generator) -> list[int]:
    """How many lines each character speaks, in cast order: a long tail, as real casts have.

    Two or three leads carry most lines, a few supporting characters carry a handful each, and
    the last third or so are minor characters with 1 to 10 lines (fewer in a short episode).
    """
    if characters > lines:
        raise ValueError(f"{characters} characters cannot all speak in {lines} lines")
    leads = 2 if characters <= 5 else 3
    minors = max(1, (characters - leads) // 2) if characters > leads else 0
    major = characters - minors
    most_minor = int(min(10, max(1, lines // 10)))
    counts = [0] * characters
    for index in range(major, characters):
        counts[index] = int(rng.integers(1, most_minor + 1))
    rest = lines - sum(counts)
    # Zipf-like weights with some spread: the first lead says about twice what the second says.
    weights = np.array([(rank + 1) ** -1.1 for rank in range(major)]) * rng.uniform(
        0.85, 1.15, major
    )
    weights = np.sort(weights)[::-1]
    shares = weights / weights.sum() * rest
    major_counts = np.maximum(1, np.floor(shares)).astype(int)
    # Largest remainder, so the total is exact.
    while major_counts.sum() < rest:
        major_counts[int(np.argmax(shares - major_counts))] += 1
    while major_counts.sum() > rest:
        major_counts[int(np.argmax(major_counts))] -= 1
    counts[:major] = [int(count) for count in major_counts]
    return counts


def write_script(
    *,
    names: Sequence[str],
    counts: Sequence[int],
    conditions: HardConditions,
    scene_lines: tuple[int, int],
    words_per_line: tuple[int, int],
    rng: np.random.Generator,
) -> list[Scene]:
    """Scenes of conversation that give each character exactly ``counts[i]`` lines.

    Each scene gathers two to four characters, drawn in proportion to how many lines they still
    have to say, and lets them take turns (rarely the same speaker twice in a row). The hard
    conditions are then dealt out as exact counts, not coin flips, so that a switched-on
    condition always occurs, even in a 20-line episode.
    """
    remaining = np.array(counts, dtype=float)
    plans: list[tuple[tuple[int, ...], list[int]]] = []
    while remaining.sum() > 0:
        speaking = np.flatnonzero(remaining > 0)
        present = int(min(len(speaking), rng.integers(2, 5)))
        chosen = rng.choice(speaking, size=present, replace=False, p=_share(remaining[speaking]))
        listeners = [i for i in range(len(counts)) if i not in chosen]
        # Now and then someone present says nothing; they can still be shown listening.
        if listeners and rng.random() < 0.2:
            chosen = np.append(chosen, listeners[int(rng.integers(len(listeners)))])
        scene_cast = tuple(int(i) for i in chosen)
        length = int(rng.integers(scene_lines[0], scene_lines[1] + 1))
        speakers: list[int] = []
        for _ in range(length):
            options = [i for i in scene_cast if remaining[i] > 0]
            if not options:
                break
            if len(options) > 1 and speakers and speakers[-1] in options and rng.random() < 0.9:
                options.remove(speakers[-1])
            pick = options[int(rng.choice(len(options), p=_share(remaining[options])))]
            remaining[pick] -= 1
            speakers.append(pick)
        plans.append((scene_cast, speakers))
    return _deal_conditions(plans, names, conditions, words_per_line, rng)


def _share(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


def _pick(eligible: Sequence[int], share: float, total: int, rng: np.random.Generator) -> set[int]:
    """``round(share * total)`` of ``eligible`` (at least one when share > 0), at random."""
    if share <= 0 or not eligible:
        return set()
    count = int(min(len(eligible), max(1, round(share * total))))
    return {int(i) for i in rng.choice(np.asarray(eligible), size=count, replace=False)}


def _deal_conditions(
    plans: list[tuple[tuple[int, ...], list[int]]],
    names: Sequence[str],
    conditions: HardConditions,
    words_per_line: tuple[int, int],
    rng: np.random.Generator,
) -> list[Scene]:
    flat = [
        (scene, position)
        for scene, (_, speakers) in enumerate(plans)
        for position in range(len(speakers))
    ]
    total = len(flat)
    everyone = list(range(total))
    scene_of = [scene for scene, _ in flat]
    cast_of = [plans[scene][0] for scene in scene_of]
    speaker_of = [plans[scene][1][position] for scene, position in flat]
    last_in_scene = {
        i for i, (scene, position) in enumerate(flat) if position == len(plans[scene][1]) - 1
    }

    one_word = _pick(everyone, conditions.one_word_share, total, rng)
    cut = _pick(
        [i for i in everyone if i not in one_word and i not in last_in_scene],
        conditions.cut_by_next_share,
        total,
        rng,
    )
    shout = _pick(everyone, conditions.shout_share, total, rng)
    whisper = _pick([i for i in everyone if i not in shout], conditions.whisper_share, total, rng)
    jitter = _pick(everyone, conditions.jitter_share, total, rng)
    offscreen = _pick(everyone, conditions.offscreen_share, total, rng)
    with_company = [i for i in everyone if i not in offscreen and len(cast_of[i]) > 1]
    two = _pick(with_company, conditions.two_on_screen_share, total, rng)

    n_scenes = len(plans)
    bed_scenes = sorted(_pick(range(n_scenes), conditions.bed_scene_share, n_scenes, rng))
    music_count = round(conditions.music_share * len(bed_scenes))
    if 0 < conditions.music_share < 1 and len(bed_scenes) >= 2:
        music_count = min(len(bed_scenes) - 1, max(1, music_count))
    bed_order = [bed_scenes[i] for i in rng.permutation(len(bed_scenes))]
    snr_cycle = [conditions.snr_db[i] for i in rng.permutation(len(conditions.snr_db))]
    beds = {
        scene: ("music" if rank < music_count else "noise", snr_cycle[rank % len(snr_cycle)])
        for rank, scene in enumerate(bed_order)
    }
    reverb_scenes = _pick(range(n_scenes), conditions.reverb_scene_share, n_scenes, rng)

    backgrounds = ("room", "sky", "street", "classroom", "night", "plain")
    scenes: list[Scene] = []
    for scene_index, (scene_cast, _) in enumerate(plans):
        lines = []
        for i in (i for i in everyone if scene_of[i] == scene_index):
            speaker = speaker_of[i]
            others = [c for c in scene_cast if c != speaker]
            others_names = [names[c] for c in others]
            framing, partner = "single", None
            if i in offscreen:
                framing = "offscreen"
                # A listener's reaction shot, or an empty view of the place.
                if others and rng.random() < 0.7:
                    partner = others[int(rng.integers(len(others)))]
            elif i in two:
                framing, partner = "two", others[int(rng.integers(len(others)))]
            if i in one_word:
                text = one_word_line(rng, names=others_names)
            else:
                text = dialogue_line(rng, words=words_per_line, names=others_names)
            lines.append(
                ScriptLine(
                    character=speaker,
                    text=text,
                    one_word=i in one_word,
                    shout=i in shout,
                    whisper=i in whisper,
                    cut_by_next=i in cut,
                    jitter=i in jitter,
                    framing=framing,
                    partner=partner,
                )
            )
        bed, snr = beds.get(scene_index, (None, None))
        rt60 = None
        if scene_index in reverb_scenes:
            rt60 = round(float(rng.uniform(*conditions.rt60_s)), 2)
        scenes.append(
            Scene(
                characters=scene_cast,
                lines=tuple(lines),
                background=backgrounds[int(rng.integers(len(backgrounds)))],
                background_seed=int(rng.integers(2**31)),
                bed=bed,
                snr_db=snr,
                rt60_s=rt60,
            )
        )
    return scenes
