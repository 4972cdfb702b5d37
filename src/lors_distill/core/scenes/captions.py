"""Captions of a scene from varied templates (each true of it), and which vocabulary a caption
mentions."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from lors_distill.core.scenes.layout import Scene, SceneObject, _pick
from lors_distill.core.scenes.vocabulary import (
    _BG_PHRASES,
    _COUNT_WORDS,
    _GENERIC_NOUNS,
    _POS_RC,
    _POSITION_PHRASES,
    _RELATION_PHRASES,
    SYNONYMS,
)

# --------------------------------------------------------------------------------------------
# Caption matching
# --------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[a-z]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def _build_phrase_table() -> dict[tuple[str, ...], str]:
    table: dict[tuple[str, ...], str] = {}
    for canonical, words in SYNONYMS.items():
        for word in words:
            key = tuple(_tokens(word))
            if key in table and table[key] != canonical:
                raise ValueError(f"synonym {word!r} is ambiguous")
            table[key] = canonical
    return table


_PHRASE_TABLE = _build_phrase_table()
_MAX_PHRASE = max(len(k) for k in _PHRASE_TABLE)


def caption_mentions(caption: str) -> set[str]:
    """Canonical attribute values (shapes, colours, sizes, backgrounds) a caption mentions.

    Matching is on whole words (case-insensitive, punctuation and hyphens split words),
    longest synonym first, and matched words are consumed: ``"a hollow circle on a sky blue
    background"`` gives ``{"ring", "sky blue"}``, not ``"circle"`` or ``"blue"``.

    Args:
        caption: any text.

    Returns:
        Set of keys of :data:`SYNONYMS` mentioned by the caption.
    """
    toks = _tokens(caption)
    found: set[str] = set()
    i = 0
    while i < len(toks):
        for length in range(min(_MAX_PHRASE, len(toks) - i), 0, -1):
            canonical = _PHRASE_TABLE.get(tuple(toks[i : i + length]))
            if canonical is not None:
                found.add(canonical)
                i += length
                break
        else:
            i += 1
    return found


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def _relations(a_position: str, b_position: str) -> tuple[str, ...]:
    """Canonical relations R such that "A R B" is true for objects at these grid cells.

    Horizontal relations ("left of"/"right of") need the column offset to be at least the row
    offset, vertical ones ("above"/"below") the converse (diagonals get both); "next to" means
    edge-adjacent cells.
    """
    ra, ca = _POS_RC[a_position]
    rb, cb = _POS_RC[b_position]
    dr, dc = rb - ra, cb - ca
    rels: list[str] = []
    if dc != 0 and abs(dc) >= abs(dr):
        rels.append("left of" if dc > 0 else "right of")
    if dr != 0 and abs(dr) >= abs(dc):
        rels.append("above" if dr > 0 else "below")
    if abs(dr) + abs(dc) == 1:
        rels.append("next to")
    return tuple(rels)


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _np(
    obj: SceneObject,
    rng: np.random.Generator,
    *,
    size: bool,
    colour: bool,
    shape: bool,
    article: bool = True,
) -> str:
    """Noun phrase for an object mentioning only the requested attributes."""
    words = []
    if size:
        words.append(_pick(rng, SYNONYMS[obj.size]))
    if colour:
        words.append(_pick(rng, SYNONYMS[obj.colour]))
    words.append(_pick(rng, SYNONYMS[obj.shape]) if shape else _pick(rng, _GENERIC_NOUNS))
    phrase = " ".join(words)
    return _with_article(phrase) if article else phrase


def _random_np(obj: SceneObject, rng: np.random.Generator, *, article: bool = True) -> str:
    """Noun phrase with a random subset of attributes (always colour or shape)."""
    size = bool(rng.random() < 0.45)
    colour = bool(rng.random() < 0.75)
    shape = bool(rng.random() < 0.8) or not colour
    return _np(obj, rng, size=size, colour=colour, shape=shape, article=article)


def _full_np(obj: SceneObject, rng: np.random.Generator) -> str:
    return _np(obj, rng, size=True, colour=True, shape=True)


def _bg(scene: Scene, rng: np.random.Generator) -> str:
    return _pick(rng, _BG_PHRASES[scene.background])


def _pos(obj: SceneObject, rng: np.random.Generator) -> str:
    return _pick(rng, _POSITION_PHRASES[obj.position])


def _obj(scene: Scene, rng: np.random.Generator) -> SceneObject:
    return scene.objects[int(rng.integers(len(scene.objects)))]


def _join(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _count_phrase(n: int, rng: np.random.Generator) -> str:
    noun = _pick(rng, _GENERIC_NOUNS)
    return f"{_pick(rng, _COUNT_WORDS[n])} {noun}" + ("s" if n > 1 else "")


def _t_full(scene: Scene, rng: np.random.Generator) -> str:
    prep = _pick(rng, ("on", "against", "in front of"))
    return f"{_full_np(_obj(scene, rng), rng)} {prep} {_bg(scene, rng)}"


def _t_there_is(scene: Scene, rng: np.random.Generator) -> str:
    obj = _obj(scene, rng)
    a = _random_np(obj, rng)
    form = int(rng.integers(3))
    if form == 0:
        return f"there is {a} {_pos(obj, rng)}"
    if form == 1:
        return f"{a} can be seen {_pos(obj, rng)}"
    return f"{a} is {_pos(obj, rng)}"


def _t_minimal(scene: Scene, rng: np.random.Generator) -> str:
    obj = _obj(scene, rng)
    with_colour = bool(rng.random() < 0.5)
    a = _np(obj, rng, size=False, colour=with_colour, shape=True)
    lead = _pick(rng, ("an image with", "a picture of", "a photo showing", "a drawing of"))
    return f"{lead} {a}"


def _t_backdrop(scene: Scene, rng: np.random.Generator) -> str:
    if rng.random() < 0.6:
        return f"{_bg(scene, rng)} with {_random_np(_obj(scene, rng), rng)}"
    n = len(scene.objects)
    return f"{_count_phrase(n, rng)} on {_bg(scene, rng)}"


def _t_count_list(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    nps = [_random_np(o, rng) for o in scene.objects]
    order = rng.permutation(n)
    listed = _join([nps[int(i)] for i in order])
    if n == 1:
        return _pick(rng, (f"just one {_pick(rng, _GENERIC_NOUNS)}, {listed}", f"only {listed}"))
    return f"{_count_phrase(n, rng)}: {listed}"


def _t_relation(scene: Scene, rng: np.random.Generator) -> str | None:
    n = len(scene.objects)
    if n < 2:
        return None
    i, j = (int(v) for v in rng.choice(n, size=2, replace=False))
    a, b = scene.objects[i], scene.objects[j]
    rel = _pick(rng, _relations(a.position, b.position))
    form = int(rng.integers(4))
    phrases = _RELATION_PHRASES[rel]
    if form != 1:  # "A higher than B" reads badly without a verb
        phrases = tuple(p for p in phrases if not p.endswith(" than"))
    phrase = _pick(rng, phrases)
    if form == 0:
        return f"{_random_np(a, rng)} {phrase} {_random_np(b, rng)}"
    if form == 1:
        na, nb = _random_np(a, rng, article=False), _random_np(b, rng, article=False)
        return f"the {na} is {phrase} the {nb}"
    if form == 2 and n == 2:
        return f"{_count_phrase(2, rng)}: {_random_np(a, rng)} {phrase} {_random_np(b, rng)}"
    return f"{_random_np(a, rng)} {phrase} {_random_np(b, rng)} on {_bg(scene, rng)}"


def _t_position(scene: Scene, rng: np.random.Generator) -> str:
    obj = _obj(scene, rng)
    a = _np(obj, rng, size=False, colour=bool(rng.random() < 0.5), shape=True)
    return f"{a} {_pos(obj, rng)}"


def _t_sizes(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    if n == 1:
        a = _np(scene.objects[0], rng, size=True, colour=False, shape=True, article=False)
        return _pick(rng, (f"a lone {a}", f"just a {a} on its own", f"nothing but a {a}"))
    k = 2 if n == 2 or rng.random() < 0.5 else 3
    idx = sorted(int(v) for v in rng.choice(n, size=k, replace=False))
    return _join([_np(scene.objects[i], rng, size=True, colour=False, shape=True) for i in idx])


def _t_colours(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    names: list[str] = []
    for o in scene.objects:
        if o.colour not in names:
            names.append(o.colour)
    words = [_pick(rng, SYNONYMS[c]) for c in names]
    suffix = f" on {_bg(scene, rng)}" if rng.random() < 0.5 else ""
    noun = _pick(rng, _GENERIC_NOUNS)
    if n == 1:
        return _pick(rng, (f"something {words[0]}", f"a lone {words[0]} {noun}")) + suffix
    if len(names) == 1:
        return f"{_pick(rng, _COUNT_WORDS[n])} {words[0]} {noun}s{suffix}"
    if rng.random() < 0.5:
        return f"{_join(words)} {noun}s{suffix}"
    return f"{noun}s in {_join(words)}{suffix}"


def _t_long(scene: Scene, rng: np.random.Generator) -> str:
    objs = list(scene.objects)
    if len(objs) == 3:
        objs = [objs[int(i)] for i in sorted(rng.choice(3, size=2, replace=False))]
    parts = [
        f"{_np(o, rng, size=bool(rng.random() < 0.5), colour=True, shape=True)} {_pos(o, rng)}"
        for o in objs
    ]
    text = " and ".join(parts)
    if rng.random() < 0.5:
        text += f", on {_bg(scene, rng)}"
    return text


_Template = Callable[[Scene, np.random.Generator], "str | None"]
_TEMPLATES: tuple[_Template, ...] = (
    _t_full,
    _t_there_is,
    _t_minimal,
    _t_backdrop,
    _t_count_list,
    _t_relation,
    _t_position,
    _t_sizes,
    _t_colours,
    _t_long,
)

_MIN_WORDS, _MAX_WORDS = 3, 20


def _finish(text: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.25:
        text += "."
    return text


def describe_scene(scene: Scene, rng: np.random.Generator, num_captions: int) -> list[str]:
    """Write distinct, true, human-style captions for a scene.

    Captions come from varied templates (templates are used without repetition as long as
    possible) and synonyms; each mentions a subset of the scene (one or more objects, sizes,
    colours, positions, a relation between two objects, the object count, the background).
    Every caption has 3-20 words and at least one attribute value (see :func:`caption_mentions`);
    the captions of one scene are pairwise distinct and do not all mention the same values.

    Args:
        scene: the scene to describe.
        rng: source of randomness.
        num_captions: number of captions, >= 1.

    Returns:
        List of ``num_captions`` strings.
    """
    if num_captions < 1:
        raise ValueError(f"num_captions must be >= 1, got {num_captions}")
    captions: list[str] = []
    seen: set[str] = set()
    mention_sets: list[frozenset[str]] = []
    queue: list[int] = []
    for _ in range(200 * num_captions):
        if len(captions) == num_captions:
            break
        if not queue:
            queue = [int(i) for i in rng.permutation(len(_TEMPLATES))]
        text = _TEMPLATES[queue.pop()](scene, rng)
        if text is None:
            continue
        n_words = len(text.split())
        if not _MIN_WORDS <= n_words <= _MAX_WORDS:
            continue
        key = text.lower()
        mentions = frozenset(caption_mentions(text))
        if key in seen or not mentions:
            continue
        last = len(captions) == num_captions - 1
        if last and num_captions > 1 and all(m == mentions for m in mention_sets):
            continue
        seen.add(key)
        mention_sets.append(mentions)
        captions.append(_finish(text, rng))
    if len(captions) != num_captions:  # pragma: no cover - vocabulary is far larger than needed
        raise RuntimeError(f"could not write {num_captions} distinct captions for {scene}")
    return captions
