import colorsys
import hashlib
import itertools

import numpy as np
import PIL
import pytest
from PIL import Image

from bench.drawing import (
    ACCESSORIES,
    BACKGROUND_KINDS,
    FACE_SHAPES,
    HAIR_STYLES,
    OUTFIT_STYLES,
    Background,
    Look,
    Placement,
    face_box,
    figure_geometry,
    random_looks,
    render_frame,
    render_title_card,
)
from bench.drawing_characters import character_sprite
from bench.drawing_scenes import background_image

W, H = 640, 360
PLAIN = Background("plain", 1)


def _look(**changes) -> Look:
    fields = dict(
        hair_rgb=(220, 60, 90),
        hair_style="bob",
        eye_rgb=(40, 120, 220),
        skin_rgb=(252, 221, 196),
        face_shape="oval",
        outfit_rgb=(40, 60, 120),
        outfit_style="uniform",
    )
    fields.update(changes)
    return Look(**fields)


def _digest(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def _changed(image: Image.Image, scale: float = 1.0, background: Background = PLAIN) -> np.ndarray:
    """(height, width) bool: where the frame differs from its bare background.

    The reference puts a character far off screen, so that the close-up crop of the backdrop
    is the same as in the frame.
    """
    offscreen = [Placement(_look(), -5.0, scale)]
    bare = render_frame(image.width, image.height, background, offscreen)
    bare = np.asarray(bare, np.int16)
    return np.abs(np.asarray(image, np.int16) - bare).sum(axis=2) > 30


def _hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]


def test_render_is_deterministic_even_without_caches():
    looks = random_looks(3, np.random.default_rng(7))
    placements = [
        Placement(looks[0], 0.25, 1.0, mouth_open=True, facing="right"),
        Placement(looks[1], 0.75, 1.0, facing="left"),
        Placement(looks[2], 0.5, 0.6),
    ]
    first = _digest(render_frame(W, H, Background("street", 3), placements))
    character_sprite.cache_clear()
    background_image.cache_clear()
    second = _digest(render_frame(W, H, Background("street", 3), placements))
    assert first == second


@pytest.mark.parametrize("size", [(1280, 720), (640, 360), (321, 181)])
def test_frame_and_title_card_have_the_requested_size_and_mode(size):
    frame = render_frame(*size, Background("room", 2), [Placement(_look(), 0.5, 1.0)])
    card = render_title_card(*size, "Episode 3: The Long Rain", seed=4)
    assert (frame.size, frame.mode) == (size, "RGB")
    assert (card.size, card.mode) == (size, "RGB")


def test_empty_placements_render_only_the_background():
    background = Background("classroom", 5)
    empty = render_frame(W, H, background, [])
    assert _digest(empty) == _digest(background_image(background, W, H))
    occupied = render_frame(W, H, background, [Placement(_look(), 0.5, 1.0)])
    assert _changed(occupied, background=background).mean() > 0.05


@pytest.mark.parametrize("x", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("scale", [0.6, 1.0, 1.8])
def test_character_pixels_are_centred_on_the_placement_x(x, scale):
    frame = render_frame(W, H, PLAIN, [Placement(_look(), x, scale)])
    column_energy = _changed(frame, scale).sum(axis=0).astype(float)
    centroid = (column_energy * np.arange(W)).sum() / column_energy.sum()
    assert abs(centroid - x * W) < 0.03 * W
    unit, _ = figure_geometry(H, scale)
    outside = np.abs(np.arange(W) - x * W) > 1.4 * unit
    assert column_energy[outside].sum() == 0


def test_closer_shots_make_the_character_bigger():
    areas = [
        _changed(render_frame(W, H, PLAIN, [Placement(_look(), 0.5, scale)]), scale).sum()
        for scale in (0.6, 1.0, 1.8)
    ]
    assert areas[0] < areas[1] < areas[2]


def test_two_characters_are_both_visible():
    left, right = random_looks(2, np.random.default_rng(3))
    frame = render_frame(
        W,
        H,
        PLAIN,
        [Placement(left, 0.25, 1.0, facing="right"), Placement(right, 0.75, 1.0, facing="left")],
    )
    pixels = np.asarray(frame)
    for look, x in ((left, 0.25), (right, 0.75)):
        box = face_box(W, H, Placement(look, x, 1.0))
        top_of_head = pixels[box[1] - 5 : box[1] + 5, box[0] + 20 : box[2] - 20].reshape(-1, 3)
        # The hair at the top of each head is that character's own hair colour.
        distances = [
            np.abs(top_of_head.mean(axis=0) - np.array(other.hair_rgb)).sum()
            for other in (left, right)
        ]
        assert distances[(left, right).index(look)] == min(distances)


@pytest.mark.parametrize("style", HAIR_STYLES)
def test_hair_region_shows_the_looks_hair_colour(style):
    red, blue = _look(hair_style=style), _look(hair_style=style, hair_rgb=(60, 90, 230))
    means = []
    for look in (red, blue):
        frame = render_frame(W, H, PLAIN, [Placement(look, 0.5, 1.8)])
        left, top, right, _ = face_box(W, H, Placement(look, 0.5, 1.8))
        crop = np.asarray(frame)[top : top + 12, left + 30 : right - 30].reshape(-1, 3)
        means.append(crop.mean(axis=0))
    for mean, look in zip(means, (red, blue), strict=True):
        assert np.abs(mean - np.array(look.hair_rgb)).max() < 60
    assert np.abs(means[0] - means[1]).sum() > 150


@pytest.mark.parametrize(
    "change",
    [
        {"eye_rgb": (30, 200, 60)},
        {"face_shape": "sharp"},
        {"outfit_style": "armor"},
        {"outfit_rgb": (200, 180, 40)},
        {"accessory": "glasses"},
        {"hair_style": "twintails"},
        {"skin_rgb": (180, 126, 92)},
    ],
)
def test_every_look_field_changes_the_picture(change):
    base = render_frame(W, H, PLAIN, [Placement(_look(), 0.5, 1.0)])
    changed = render_frame(W, H, PLAIN, [Placement(_look(**change), 0.5, 1.0)])
    difference = np.abs(np.asarray(base, np.int16) - np.asarray(changed, np.int16)).sum(axis=2)
    assert (difference > 30).sum() > 100


def test_open_mouth_changes_only_the_mouth():
    closed = render_frame(W, H, PLAIN, [Placement(_look(), 0.5, 1.8)])
    opened = render_frame(W, H, PLAIN, [Placement(_look(), 0.5, 1.8, mouth_open=True)])
    rows, cols = np.nonzero(
        np.abs(np.asarray(closed, np.int16) - np.asarray(opened, np.int16)).sum(axis=2)
    )
    assert rows.size > 50
    unit, centre_y = figure_geometry(H, 1.8)
    assert centre_y + 0.3 * unit < rows.min() and rows.max() < centre_y + 0.56 * unit
    assert W / 2 - 0.15 * unit < cols.min() and cols.max() < W / 2 + 0.15 * unit


def test_facing_left_mirrors_facing_right():
    look = _look(hair_style="spiky", accessory=None)
    right = render_frame(W, H, PLAIN, [Placement(look, 0.5, 1.0, facing="right")])
    left = render_frame(W, H, PLAIN, [Placement(look, 0.5, 1.0, facing="left")])
    front = render_frame(W, H, PLAIN, [Placement(look, 0.5, 1.0)])
    assert _digest(right) != _digest(front)
    mirrored = _changed(left)[:, ::-1]
    assert (mirrored ^ _changed(right)).mean() < 0.005


@pytest.mark.parametrize("count", range(15))
def test_random_looks_are_mutually_distinct(count):
    looks = random_looks(count, np.random.default_rng(count))
    assert len(looks) == count
    assert len({(look.hair_rgb, look.hair_style) for look in looks}) == count
    assert len({look.hair_rgb for look in looks}) == count
    assert len({look.hair_style for look in looks}) == min(count, len(HAIR_STYLES))
    for a, b in itertools.combinations(looks, 2):
        gap = abs(_hue(a.hair_rgb) - _hue(b.hair_rgb))
        assert min(gap, 1 - gap) > 0.5 / count
        if a.hair_style == b.hair_style:
            assert min(gap, 1 - gap) > 2.5 / count
    for look in looks:
        assert look.hair_style in HAIR_STYLES and look.face_shape in FACE_SHAPES
        assert look.outfit_style in OUTFIT_STYLES and look.accessory in (*ACCESSORIES, None)


def test_random_looks_follow_the_generator():
    assert random_looks(6, np.random.default_rng(1)) == random_looks(6, np.random.default_rng(1))
    assert random_looks(6, np.random.default_rng(1)) != random_looks(6, np.random.default_rng(2))


def test_backgrounds_differ_by_kind_and_seed():
    digests = {_digest(background_image(Background(k, 1), 320, 180)) for k in BACKGROUND_KINDS}
    assert len(digests) == len(BACKGROUND_KINDS)
    for kind in BACKGROUND_KINDS:
        one = background_image(Background(kind, 1), 320, 180)
        two = background_image(Background(kind, 2), 320, 180)
        assert _digest(one) != _digest(two)


def test_close_ups_crop_into_the_background():
    background = Background("room", 8)
    wide = render_frame(W, H, background, [Placement(_look(), -5.0, 0.6)])
    close = render_frame(W, H, background, [Placement(_look(), -5.0, 1.8)])
    assert _digest(wide) == _digest(render_frame(W, H, background, []))
    assert _digest(close) != _digest(wide)


def test_title_card_draws_its_text():
    with_text = np.asarray(render_title_card(W, H, "Chapter Two", seed=1), np.int16)
    without = np.asarray(render_title_card(W, H, "", seed=1), np.int16)
    assert (np.abs(with_text - without).sum(axis=2) > 60).sum() > 500
    assert _digest(render_title_card(W, H, "Chapter Two", seed=1)) == _digest(
        render_title_card(W, H, "Chapter Two", seed=1)
    )


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: _look(hair_style="afro"), "hair_style"),
        (lambda: _look(face_shape="square"), "face_shape"),
        (lambda: _look(outfit_style="cape"), "outfit_style"),
        (lambda: _look(accessory="crown"), "accessory"),
        (lambda: _look(hair_rgb=(300, 0, 0)), "hair_rgb"),
        (lambda: Placement(_look(), 0.5, 1.0, facing="up"), "facing"),
        (lambda: Placement(_look(), 0.5, 0.0), "scale"),
        (lambda: Background("beach", 1), "kind"),
        (lambda: random_looks(-1, np.random.default_rng(0)), "count"),
        (lambda: render_frame(0, 360, PLAIN, []), "size"),
    ],
)
def test_bad_input_is_rejected_with_the_offending_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_look_colours_given_as_lists_stay_hashable():
    look = _look(hair_rgb=[220, 60, 90])
    assert look == _look()
    assert hash(look) == hash(_look())


@pytest.mark.skipif(
    int(PIL.__version__.split(".")[0]) >= 12,
    reason="animeface 2.0.3 reads Pillow's internal image struct and finds nothing on Pillow>=12",
)
def test_animeface_finds_the_drawn_faces():
    animeface = pytest.importorskip("animeface")
    looks = random_looks(6, np.random.default_rng(11))
    found = 0
    for look in looks:
        placement = Placement(look, 0.5, 1.0)
        left, top, right, bottom = face_box(W, H, placement)
        for face in animeface.detect(render_frame(W, H, Background("room", 1), [placement])):
            box = face.face.pos
            centre_x, centre_y = box.x + box.width / 2, box.y + box.height / 2
            found += left < centre_x < right and top < centre_y < bottom
    assert found >= 5
