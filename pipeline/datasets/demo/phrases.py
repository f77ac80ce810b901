"""Truthful wordings of a demo scene's parts: subject, verb, place, position and a second object."""
from __future__ import annotations

import random

from pipeline.datasets.demo.scenes import Scene
from pipeline.datasets.demo.vocabulary import (
    BOAT_PLACES,
    COLOUR_WORDS,
    CORNERS,
    COUNTS,
    FLYING,
    KIND_VERBS,
    KINDS,
    MOVING,
    PAINTED,
    PERSON_GARMENT,
    PERSON_NOUNS,
    PLACES,
    POSITIONS,
    SIZE_WORDS,
    VERBS,
)


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def capitalise(text: str) -> str:
    """The text with its first letter in upper case."""
    return text[:1].upper() + text[1:]


class Phrases:
    """Truthful wordings of one scene; every call may pick other synonyms."""

    def __init__(self, scene: Scene, rng: random.Random):
        self.s = scene
        self.rng = rng
        self.plain = False    # plain names only (the first caption of each image)

    def pick(self, options, weights=None):
        if self.plain:
            return options[0]
        return self.rng.choices(options, weights=weights)[0] if weights else self.rng.choice(options)

    # nouns and colours -----------------------------------------------------
    def noun(self, n: int | None = None) -> str:
        n = self.s.count if n is None else n
        nouns = PERSON_NOUNS[self.s.variant] if self.s.kind == "person" else KINDS[self.s.kind].nouns
        if self.s.kind == "tree" and self.s.variant == "pine" and not self.plain and self.rng.random() < 0.5:
            nouns = (("pine tree", "pine trees"), ("fir tree", "fir trees"))
        weights = [6] + [2] * (len(nouns) - 1)
        sg, pl = self.pick(nouns, weights)
        return sg if n == 1 else pl

    def colour_word(self) -> str:
        words = COLOUR_WORDS[self.s.colour]
        if self.s.colour == "yellow" and self.s.kind not in ("dog", "horse"):
            words = ("yellow",)
        return self.pick(words, [4] + [1] * (len(words) - 1))

    def counted(self, det: str) -> str:
        """The determiner and count: 'a', 'the two', 'three', ... ('num': numbers only)."""
        n = self.s.count
        if det == "num":
            return "a" if n == 1 else COUNTS[n][0]
        if det == "def":
            return "the" if n == 1 else f"the {COUNTS[n][0]}"
        if det == "bare":
            return "" if n == 1 else COUNTS[n][0]
        if n == 1:
            return "one" if (not self.plain and self.rng.random() < 0.06) else "a"
        return self.pick(COUNTS[n])

    def np(self, det: str = "indef", size: bool = False) -> str:
        """The subject, e.g. 'two brown dogs', 'a man in a red shirt', 'a car painted blue'."""
        s, n = self.s, self.s.count
        colour = self.colour_word()
        sz = self.pick(SIZE_WORDS[s.size]) + " " if size and s.kind != "person" else ""
        if s.kind == "person":
            garment = PERSON_GARMENT[s.variant][0 if n == 1 else 1]
            mod = self.pick((f"in {_a(colour)} {colour} {garment}" if n == 1 else f"in {colour} {garment}",
                              f"wearing {colour}", f"dressed in {colour}", f"in {colour}"), [4, 2, 1, 1])
            head = f"{sz}{self.noun()} {mod}"
        else:
            style = "pre"
            spec = KINDS[s.kind]
            if not self.plain and self.rng.random() < 0.3 and (spec.colour_nouns or s.kind in PAINTED):
                style = "post"
            if style == "post" and spec.colour_nouns == "coat":
                coat = f"{_a(colour)} {colour} coat" if n == 1 else f"{colour} coats"
                head = f"{sz}{self.noun()} with {coat}"
            elif style == "post" and spec.colour_nouns:
                head = f"{sz}{self.noun()} with {colour} {spec.colour_nouns}"
            elif style == "post":
                head = f"{sz}{self.noun()} painted {colour}"
            else:
                head = f"{sz}{colour} {self.noun()}"
        lead = self.counted(det)
        if lead == "a":
            lead = _a(head)
        return f"{lead} {head}".strip()

    def predicate_colour(self) -> str:
        """'is brown' style: 'brown', 'wearing a red shirt'."""
        s = self.s
        colour = self.colour_word()
        if s.kind == "person":
            garment = PERSON_GARMENT[s.variant][0 if s.count == 1 else 1]
            worn = f"{_a(colour)} {colour} {garment}" if s.count == 1 else f"{colour} {garment}"
            return self.pick((f"wearing {worn}", f"dressed in {colour}"))
        if s.kind == "tree":
            return self.pick((colour, f"covered in {colour} leaves"))
        return colour

    # verbs and places ------------------------------------------------------
    def verb(self, form: str) -> str:
        s = self.s
        options = KIND_VERBS.get((s.kind, s.action), VERBS[s.action])
        sg, pl, ing = self.pick(options)
        return ing if form == "ing" else sg if s.count == 1 else pl

    def be(self) -> str:
        return "is" if self.s.count == 1 else "are"

    def place(self, static: bool = False, scene_wide: bool = False) -> str:
        """Where the subject is; ``scene_wide`` names the background alone (for two subjects)."""
        s = self.s
        if scene_wide:
            return self.pick(PLACES[s.background]["static"])
        if s.kind == "boat":
            return self.pick(BOAT_PLACES[s.background])
        table = PLACES[s.background]
        if s.action in FLYING:
            return self.pick(table["sky"])
        if s.action in MOVING and not static and (self.plain or self.rng.random() < 0.7):
            return self.pick(table["moving"])
        return self.pick(table["static"])

    def lead(self) -> str:
        return self.pick(PLACES[self.s.background]["lead"])

    def where(self) -> str:
        s = self.s
        h = {"centre": "middle"}.get(s.position, s.position)
        if s.vertical in CORNERS and s.position != "centre" and self.rng.random() < 0.4:
            return self.pick(CORNERS[s.vertical]).format(h=h)
        return self.pick(POSITIONS[s.position])

    def other(self) -> str:
        o = self.s.others[0]
        nouns = PERSON_NOUNS[o.variant] if o.kind == "person" else KINDS[o.kind].nouns
        noun = self.pick(nouns, [6] + [2] * (len(nouns) - 1))[0]
        if o.kind == "person":
            return f"{_a(noun)} {noun} in {o.colour}"
        return f"{_a(o.colour)} {o.colour} {noun}"
