"""Tests for the built-in synthetic scene dataset."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from lors_distill.core.scenes import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    SYNONYMS,
    Scene,
    SceneObject,
    caption_mentions,
    describe_scene,
    generate_scenes,
    render_scene,
    sample_scene,
)
from lors_distill.core.scenes.captions import _relations
from lors_distill.core.scenes.vocabulary import (
    _ALLOWED_COLOURS,
    _BG_PALETTE,
    _BG_PHRASES,
    _COLOUR_RGB,
    _POSITION_PHRASES,
    _RELATION_PHRASES,
)

_RC = {p: divmod(i, 3) for i, p in enumerate(POSITIONS)}
_BG_SET = set(BACKGROUNDS)


def _alternation(phrases: dict[str, tuple[str, ...]]) -> tuple[re.Pattern[str], dict[str, str]]:
    """Regex matching any phrase (longest first) and phrase -> canonical key."""
    lookup = {p: key for key, ps in phrases.items() for p in ps}
    ordered = sorted(lookup, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(p) for p in ordered) + r")\b")
    return pattern, lookup


_REL_RE, _REL_OF = _alternation(_RELATION_PHRASES)
_POS_RE, _POS_OF = _alternation(_POSITION_PHRASES)


def _relation_holds(rel: str, a: SceneObject, b: SceneObject) -> bool:
    """Independent, literal reading of "a <rel> b" on the 3x3 grid."""
    (ra, ca), (rb, cb) = _RC[a.position], _RC[b.position]
    return {
        "left of": ca < cb,
        "right of": ca > cb,
        "above": ra < rb,
        "below": ra > rb,
        "next to": abs(ra - rb) + abs(ca - cb) == 1,
    }[rel]


def _fits(obj: SceneObject, mentions: set[str]) -> bool:
    return mentions <= {obj.shape, obj.colour, obj.size}


def _scene_values(scene: Scene) -> set[str]:
    values = {scene.background}
    for o in scene.objects:
        values |= {o.shape, o.colour, o.size}
    return values


@pytest.fixture(scope="module")
def dataset() -> tuple[np.ndarray, list[list[str]], list[Scene]]:
    return generate_scenes(300, 16, seed=123, num_captions=5)


# ------------------------------------------------------------------ determinism & shapes


def test_same_seed_is_byte_identical() -> None:
    a_img, a_cap, a_sc = generate_scenes(20, 32, seed=7, num_captions=5)
    b_img, b_cap, b_sc = generate_scenes(20, 32, seed=7, num_captions=5)
    assert a_img.tobytes() == b_img.tobytes()
    assert a_cap == b_cap
    assert a_sc == b_sc


def test_different_seed_differs() -> None:
    a_img, a_cap, _ = generate_scenes(10, 32, seed=1, num_captions=5)
    b_img, b_cap, _ = generate_scenes(10, 32, seed=2, num_captions=5)
    assert not np.array_equal(a_img, b_img)
    assert a_cap != b_cap
    # and images inside one dataset differ from each other
    assert len({img.tobytes() for img in a_img}) == 10


def test_prefix_property() -> None:
    img10, cap10, sc10 = generate_scenes(10, 32, seed=5, num_captions=5)
    img5, cap5, sc5 = generate_scenes(5, 32, seed=5, num_captions=5)
    np.testing.assert_array_equal(img10[:5], img5)
    assert cap10[:5] == cap5
    assert sc10[:5] == sc5


def test_images_do_not_depend_on_num_captions() -> None:
    img5, _cap5, sc5 = generate_scenes(6, 32, seed=9, num_captions=5)
    img3, cap3, sc3 = generate_scenes(6, 32, seed=9, num_captions=3)
    np.testing.assert_array_equal(img5, img3)
    assert sc5 == sc3
    assert all(len(c) == 3 for c in cap3)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes_and_dtypes(size: int) -> None:
    images, captions, scenes = generate_scenes(4, size, seed=0, num_captions=5)
    assert images.shape == (4, size, size, 3)
    assert images.dtype == np.uint8
    assert len(captions) == len(scenes) == 4
    assert all(len(c) == 5 and all(isinstance(s, str) for s in c) for c in captions)
    single = render_scene(scenes[0], size, np.random.default_rng(0))
    assert single.shape == (size, size, 3)
    assert single.dtype == np.uint8


def test_empty_and_invalid_arguments() -> None:
    images, captions, scenes = generate_scenes(0, 32, seed=0, num_captions=5)
    assert images.shape == (0, 32, 32, 3)
    assert captions == []
    assert scenes == []
    with pytest.raises(ValueError, match="image_size"):
        generate_scenes(2, 8, seed=0, num_captions=5)
    with pytest.raises(ValueError, match="num_captions"):
        describe_scene(sample_scene(np.random.default_rng(0)), np.random.default_rng(0), 0)


def test_scene_validation() -> None:
    obj = SceneObject("circle", "red", "small", "top")
    with pytest.raises(ValueError, match="distinct grid cells"):
        Scene((obj, obj), "grey")
    with pytest.raises(ValueError, match="1-3 objects"):
        Scene((), "grey")
    with pytest.raises(ValueError, match="shape"):
        SceneObject("blob", "red", "small", "top")
    with pytest.raises(ValueError, match="background"):
        Scene((obj,), "plaid")


def test_sample_scene_respects_vocabulary_and_colour_clashes() -> None:
    rng = np.random.default_rng(0)
    counts = {1: 0, 2: 0, 3: 0}
    for _ in range(1000):
        scene = sample_scene(rng)
        counts[len(scene.objects)] += 1
        assert len({o.position for o in scene.objects}) == len(scene.objects)
        for o in scene.objects:
            assert o.colour in _ALLOWED_COLOURS[scene.background]
    assert all(c > 100 for c in counts.values())


def test_allowed_colours_are_far_from_background() -> None:
    for bg in BACKGROUNDS:
        allowed = _ALLOWED_COLOURS[bg]
        assert len(allowed) >= 6
        for colour in allowed:
            for ref in _BG_PALETTE[bg]:
                assert np.linalg.norm(np.subtract(_COLOUR_RGB[colour], ref)) >= 100


# ------------------------------------------------------------------ rendering


@pytest.mark.parametrize("size", [16, 32, 64])
def test_render_red_square_on_grey(size: int) -> None:
    scene = Scene((SceneObject("square", "red", "large", "center"),), "grey")
    img = render_scene(scene, size, np.random.default_rng(3)).astype(int)
    centre = img[size // 2, size // 2]
    assert np.linalg.norm(centre - np.array(_COLOUR_RGB["red"])) < 45
    for corner in (img[0, 0], img[0, -1], img[-1, 0], img[-1, -1]):
        assert np.linalg.norm(corner - np.array(_BG_PALETTE["grey"][0])) < 20
    # the object occupies a sizeable part of the centre cell but not the whole image
    red_like = np.linalg.norm(img - np.array(_COLOUR_RGB["red"]), axis=-1) < 60
    assert 0.04 < red_like.mean() < 0.2


def test_position_is_rendered_in_its_cell() -> None:
    scene = Scene((SceneObject("circle", "yellow", "large", "bottom right"),), "navy")
    img = render_scene(scene, 48, np.random.default_rng(0)).astype(int)
    yellow = np.linalg.norm(img - np.array(_COLOUR_RGB["yellow"]), axis=-1) < 60
    ys, xs = np.nonzero(yellow)
    assert len(ys) > 20
    assert ys.min() >= 30
    assert xs.min() >= 30


def test_object_colour_differs_from_background_on_every_background() -> None:
    rng = np.random.default_rng(11)
    for bg in BACKGROUNDS:
        for colour in _ALLOWED_COLOURS[bg]:
            scene = Scene((SceneObject("square", colour, "large", "center"),), bg)
            img = render_scene(scene, 32, rng).astype(int)
            centre = img[16, 16]
            assert np.linalg.norm(centre - np.array(_COLOUR_RGB[colour])) < 45, (bg, colour)
            corner = img[0, 0]
            assert np.linalg.norm(centre - corner) > 50, (bg, colour)


def test_same_scene_renders_with_jitter() -> None:
    scene = Scene((SceneObject("star", "blue", "medium", "left"),), "sand")
    a = render_scene(scene, 32, np.random.default_rng(1))
    b = render_scene(scene, 32, np.random.default_rng(2))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, render_scene(scene, 32, np.random.default_rng(1)))


# ------------------------------------------------------------------ relation logic


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("left", "right", {"left of"}),
        ("center", "right", {"left of", "next to"}),
        ("right", "center", {"right of", "next to"}),
        ("top", "bottom", {"above"}),
        ("center", "top", {"below", "next to"}),
        ("top left", "bottom right", {"left of", "above"}),
        ("top left", "center", {"left of", "above"}),
        ("top left", "bottom", {"above"}),
        ("bottom left", "top right", {"left of", "below"}),
        ("top right", "left", {"right of"}),
    ],
)
def test_relations_hand_built(a: str, b: str, expected: set[str]) -> None:
    assert set(_relations(a, b)) == expected
    oa, ob = SceneObject("circle", "red", "small", a), SceneObject("square", "blue", "small", b)
    for rel in expected:
        assert _relation_holds(rel, oa, ob)


def test_relation_captions_of_hand_built_scene_are_true() -> None:
    scene = Scene(
        (
            SceneObject("square", "blue", "large", "left"),
            SceneObject("triangle", "yellow", "small", "right"),
        ),
        "grey",
    )
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(60):
        for cap in describe_scene(scene, rng, num_captions=5):
            m = _REL_RE.search(cap.lower())
            if m is None:
                continue
            seen += 1
            rel = _REL_OF[m.group(1)]
            left = caption_mentions(cap[: m.start()]) - _BG_SET
            # the blue square is on the left, the yellow triangle on the right
            if left & {"blue", "square", "large"}:
                assert rel == "left of"
            else:
                assert left & {"yellow", "triangle", "small"}
                assert rel == "right of"
    assert seen > 10


# ------------------------------------------------------------------ captions are true


def test_every_mentioned_value_is_true(dataset) -> None:
    _, captions, scenes = dataset
    for caps, scene in zip(captions, scenes, strict=True):
        truth = _scene_values(scene)
        for cap in caps:
            mentions = caption_mentions(cap)
            assert mentions, cap
            assert mentions <= truth, (cap, scene)
            assert len(mentions & _BG_SET) <= 1
            assert not (mentions & _BG_SET) or scene.background in mentions


def test_relations_in_captions_are_true(dataset) -> None:
    _, captions, scenes = dataset
    checked = 0
    for caps, scene in zip(captions, scenes, strict=True):
        for cap in caps:
            text = cap.lower()
            found = list(_REL_RE.finditer(text))
            if not found:
                continue
            assert len(found) == 1, cap
            assert len(scene.objects) >= 2, cap
            m = found[0]
            rel = _REL_OF[m.group(1)]
            left = caption_mentions(text[: m.start()]) - _BG_SET
            right = caption_mentions(text[m.end() :]) - _BG_SET
            assert any(
                _fits(a, left) and _fits(b, right) and _relation_holds(rel, a, b)
                for a, b in itertools.permutations(scene.objects, 2)
            ), (cap, scene)
            checked += 1
    assert checked > 50


def test_positions_in_captions_are_true(dataset) -> None:
    _, captions, scenes = dataset
    checked = 0
    for caps, scene in zip(captions, scenes, strict=True):
        for cap in caps:
            text = cap.lower()
            prev = 0
            for m in _POS_RE.finditer(text):
                pos = _POS_OF[m.group(1)]
                described = caption_mentions(text[prev : m.start()]) - _BG_SET
                assert any(o.position == pos and _fits(o, described) for o in scene.objects), (
                    cap,
                    scene,
                )
                prev = m.end()
                checked += 1
    assert checked > 100


def test_counts_in_captions_are_true(dataset) -> None:
    _, captions, scenes = dataset
    checked = 0
    for caps, scene in zip(captions, scenes, strict=True):
        n = len(scene.objects)
        for cap in caps:
            toks = set(re.findall(r"[a-z]+", cap.lower()))
            if "three" in toks:
                assert n == 3, cap
            if toks & {"two", "pair"}:
                assert n == 2, cap
            if toks & {"one", "single", "lone", "only", "just"} or "nothing but" in cap.lower():
                assert n == 1, cap
            checked += bool(toks & {"one", "two", "three", "single", "pair", "lone"})
    assert checked > 100


def test_captions_distinct_varied_and_sized(dataset) -> None:
    _, captions, _ = dataset
    distinct_sets = []
    for caps in captions:
        assert len(caps) == 5
        assert len({c.lower().rstrip(".") for c in caps}) == 5
        sets = {frozenset(caption_mentions(c)) for c in caps}
        assert len(sets) > 1
        distinct_sets.append(len(sets))
        for c in caps:
            assert 3 <= len(c.split()) <= 20, c
    assert np.mean(distinct_sets) >= 3.5


def test_captions_cover_every_kind_of_content(dataset) -> None:
    _, captions, _ = dataset
    flat = [c for caps in captions for c in caps]
    n = len(flat)
    mention = [caption_mentions(c) for c in flat]

    def share(pred) -> float:
        return sum(bool(pred(c, m)) for c, m in zip(flat, mention, strict=True)) / n

    shares = {
        "background": share(lambda c, m: m & _BG_SET),
        "size": share(lambda c, m: m & set(SIZES)),
        "colour": share(lambda c, m: m & set(COLOURS)),
        "shape": share(lambda c, m: m & set(SHAPES)),
        "position": share(lambda c, m: _POS_RE.search(c.lower())),
        "relation": share(lambda c, m: _REL_RE.search(c.lower())),
        "one value only": share(lambda c, m: len(m) == 1),
    }
    for kind, value in shares.items():
        assert 0.03 < value < 0.95, (kind, value)


def test_describe_scene_many_captions() -> None:
    scene = Scene((SceneObject("heart", "pink", "medium", "top right"),), "grass")
    caps = describe_scene(scene, np.random.default_rng(0), num_captions=15)
    assert len(caps) == 15
    assert len({c.lower().rstrip(".") for c in caps}) == 15
    for c in caps:
        assert caption_mentions(c) <= {"heart", "pink", "medium", "grass"}


# ------------------------------------------------------------------ graded similarity


def test_graded_similarity() -> None:
    _, captions, scenes = generate_scenes(200, 16, seed=77, num_captions=5)
    values = [_scene_values(s) for s in scenes]
    pairs_obj = [{(o.shape, o.colour) for o in s.objects} for s in scenes]
    jaccards = set()
    shared_object_other_bg = 0
    partial = 0
    for i, j in itertools.combinations(range(len(scenes)), 2):
        inter, union = values[i] & values[j], values[i] | values[j]
        jaccards.add(round(len(inter) / len(union), 3))
        partial += 0 < len(inter) < len(union)
        if pairs_obj[i] & pairs_obj[j] and scenes[i].background != scenes[j].background:
            shared_object_other_bg += 1
    n_pairs = len(scenes) * (len(scenes) - 1) // 2
    assert shared_object_other_bg >= 20
    assert partial / n_pairs > 0.5
    assert len(jaccards) >= 10

    # captions of different images overlap partially too
    sets = [caption_mentions(caps[0]) for caps in captions]
    overlap = sum(bool(a & b) and a != b for a, b in itertools.combinations(sets, 2))
    assert overlap > 500

    flat = [c for caps in captions for c in caps]
    lengths = {len(c.split()) for c in flat}
    assert len(lengths) >= 8
    openings = {" ".join(c.lower().split()[:2]) for c in flat}
    assert len(openings) >= 30


# ------------------------------------------------------------------ caption_mentions


def test_caption_mentions_hand_written() -> None:
    assert caption_mentions("A crimson disc on a sky blue background") == {
        "red",
        "circle",
        "sky blue",
    }
    assert caption_mentions("a hollow circle next to a big box") == {"ring", "large", "square"}
    assert caption_mentions("Polka-dot backdrop with a jet-black plus sign.") == {
        "dotted",
        "black",
        "cross",
    }
    assert caption_mentions("Medium-sized GREEN triangle") == {"medium", "green", "triangle"}
    assert caption_mentions("a navy blue square") == {"navy", "square"}
    assert caption_mentions("a red dot on a dotted background") == {"red", "circle", "dotted"}
    # substrings of other words are not matches
    assert caption_mentions("a starry scene, redrawn with boxes in a ringside seat") == set()
    assert caption_mentions("") == set()


def test_synonyms_table_is_consistent() -> None:
    assert set(SYNONYMS) == set(SHAPES) | set(COLOURS) | set(SIZES) | set(BACKGROUNDS)
    assert len(SYNONYMS) == len(SHAPES) + len(COLOURS) + len(SIZES) + len(BACKGROUNDS)
    assert 6 <= len(SHAPES) <= 8
    assert 8 <= len(COLOURS) <= 10
    assert 6 <= len(BACKGROUNDS) <= 10
    for canonical, words in SYNONYMS.items():
        assert canonical in words
        for word in words:
            assert caption_mentions(word) == {canonical}, word
    for bg, phrases in _BG_PHRASES.items():
        for phrase in phrases:
            assert caption_mentions(phrase) == {bg}, phrase
    for table in (_POSITION_PHRASES, _RELATION_PHRASES):
        for phrases in table.values():
            for phrase in phrases:
                assert caption_mentions(phrase) == set(), phrase
