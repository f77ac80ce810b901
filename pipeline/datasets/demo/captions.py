"""The five differently worded, unique captions of each demo image, from sentence templates."""
from __future__ import annotations

import random
from typing import Callable

from pipeline.datasets.demo.phrases import Phrases, capitalise
from pipeline.datasets.demo.scenes import Scene
from pipeline.datasets.demo.vocabulary import PHOTO_OF

CAPTIONS_PER_IMAGE = 5


def _t_basic(p: Phrases) -> str:
    return f"{capitalise(p.np())} {p.verb('s')} {p.place()} ."


def _t_position(p: Phrases) -> str:
    return f"{capitalise(p.np())} {p.verb('s')} {p.place()} {p.where()} ."


def _t_short(p: Phrases) -> str:
    return f"{capitalise(p.np('bare'))} {p.place(static=True)} ."


def _t_fragment(p: Phrases) -> str:
    return f"{capitalise(p.np())} {p.verb('ing')} {p.place()} ."


def _t_there(p: Phrases) -> str:
    return f"There {p.be()} {p.np('num')} {p.place(static=True)} ."


def _t_lead(p: Phrases) -> str:
    return f"{p.lead()} , {p.np()} {p.verb('s')} ."


def _t_the(p: Phrases) -> str:
    return (f"{capitalise(p.counted('def'))} {p.noun()} {p.be()} {p.predicate_colour()} and {p.verb('ing')} "
            f"{p.place()} .")


def _t_size(p: Phrases) -> str:
    return f"{capitalise(p.np(size=True))} {p.verb('ing')} {p.place()} ."


def _t_photo(p: Phrases) -> str:
    return f"{p.pick(PHOTO_OF)} {p.np()} {p.place(static=True)} ."


def _t_long(p: Phrases) -> str:
    text = f"{capitalise(p.np(size=p.rng.random() < 0.5))} {p.verb('s')} {p.place()} , {p.where()}"
    if p.s.others:
        text += f" , {p.rng.choice(('next to', 'not far from', 'near'))} {p.other()}"
    return text + " ."


def _t_with_other(p: Phrases) -> str:
    if p.rng.random() < 0.5:
        return f"{capitalise(p.np())} and {p.other()} {p.place(scene_wide=True)} ."
    return f"{capitalise(p.np())} {p.verb('s')} {p.place()} near {p.other()} ."


def _t_closeup(p: Phrases) -> str:
    return f"{p.pick(('Close-up of', 'A close view of', 'A close-up photo of'))} {p.np()} {p.place(static=True)} ."


def _t_far(p: Phrases) -> str:
    return f"{capitalise(p.np(size=True))} {p.rng.choice(('far away', 'in the distance'))} {p.place(static=True)} ."


_TEMPLATES: dict[str, Callable[[Phrases], str]] = {
    "basic": _t_basic, "position": _t_position, "short": _t_short, "fragment": _t_fragment, "there": _t_there,
    "lead": _t_lead, "the": _t_the, "size": _t_size, "photo": _t_photo, "long": _t_long,
    "with_other": _t_with_other, "closeup": _t_closeup, "far": _t_far,
}


def _templates_for(scene: Scene) -> list[str]:
    names = ["position", "short", "fragment", "there", "lead", "the", "photo", "long"]
    if scene.kind != "person":
        names.append("size")   # "a small man" reads oddly
    if scene.others:
        names.append("with_other")
    if scene.size == "large" and scene.count == 1:
        names.append("closeup")
    if scene.size == "small":
        names.append("far")
    return names


def write_captions(scene: Scene, seed: int, taken: set[str]) -> list[str]:
    """Five differently worded captions of a scene, none of them in ``taken`` (which is updated)."""
    rng = random.Random(f"capsearch-demo-captions:{seed}:{scene.image_id}")
    p = Phrases(scene, rng)
    captions: list[str] = []
    p.plain = True
    first = _t_basic(p)
    p.plain = False
    pool = _templates_for(scene)
    rng.shuffle(pool)
    order = ["basic"] + pool + ["basic", "fragment", "long", "position"] * 50
    for i, name in enumerate(order):
        if len(captions) == CAPTIONS_PER_IMAGE:
            break
        for _ in range(12):
            text = first if i == 0 else _TEMPLATES[name](p)
            if text.lower() not in taken:
                taken.add(text.lower())
                captions.append(text)
                break
            if i == 0:
                break
    if len(captions) < CAPTIONS_PER_IMAGE:
        raise RuntimeError(f"could not word {CAPTIONS_PER_IMAGE} unique captions for {scene.image_id}")
    return captions
