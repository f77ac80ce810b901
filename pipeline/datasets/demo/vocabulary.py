"""The demo world's vocabulary: kinds of object, colours, backgrounds and the word tables captions draw on."""
from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "red": (200, 32, 36), "blue": (36, 78, 205), "green": (46, 150, 52), "yellow": (242, 206, 40),
    "white": (243, 243, 239), "black": (28, 28, 30), "brown": (122, 76, 40), "orange": (242, 132, 28),
    "pink": (240, 132, 178), "purple": (128, 56, 165), "grey": (132, 132, 137),
}
KIND_COLOUR_RGB: dict[tuple[str, str], RGB] = {("dog", "yellow"): (222, 182, 92), ("horse", "brown"): (130, 80, 45)}

COLOUR_WORDS: dict[str, tuple[str, ...]] = {c: (c,) for c in COLOURS}
COLOUR_WORDS["grey"] = ("grey", "gray")
COLOUR_WORDS["yellow"] = ("yellow", "golden")

BACKGROUNDS = ("grass", "snow", "beach", "street", "night", "lake", "forest", "indoor")
# Object colours that would melt into a background are not used as the main object's colour there.
CLASHES = {
    "grass": {"green"}, "snow": {"white"}, "beach": {"yellow"}, "street": {"grey"},
    "night": {"black", "blue"}, "lake": {"blue"}, "forest": {"green", "brown"}, "indoor": {"brown"},
}


@dataclass(frozen=True)
class KindSpec:
    colours: tuple[str, ...]
    backgrounds: tuple[str, ...]
    actions: tuple[str, ...]
    nouns: tuple[tuple[str, str], ...]      # (singular, plural); the first one is the plain name
    colour_nouns: str = ""                  # "fur" -> "a dog with brown fur"


_ALL = BACKGROUNDS
_OUT = tuple(b for b in BACKGROUNDS if b != "indoor")
KINDS: dict[str, KindSpec] = {
    "dog": KindSpec(("brown", "black", "white", "yellow", "grey"), _ALL, ("stand", "run", "jump", "sit"),
                    (("dog", "dogs"), ("puppy", "puppies"), ("pup", "pups")), "fur"),
    "cat": KindSpec(("black", "white", "orange", "grey", "brown"), _ALL, ("sit", "stand", "walk"),
                    (("cat", "cats"), ("kitten", "kittens"), ("kitty", "kitties")), "fur"),
    "horse": KindSpec(("brown", "black", "white", "grey"), _OUT, ("stand", "run"),
                      (("horse", "horses"), ("pony", "ponies")), "coat"),
    "bird": KindSpec(("red", "blue", "yellow", "black", "white"), _ALL, ("fly", "perch"),
                     (("bird", "birds"), ("songbird", "songbirds")), "feathers"),
    "person": KindSpec(("red", "blue", "green", "yellow", "white", "black", "orange", "pink", "purple"), _ALL,
                       ("stand", "walk", "run"), (("person", "people"),)),
    "ball": KindSpec(("red", "blue", "green", "yellow", "white", "orange", "pink", "purple"), _ALL, ("air", "ground"),
                     (("ball", "balls"), ("toy ball", "toy balls"))),
    "car": KindSpec(("red", "blue", "green", "yellow", "white", "black", "orange", "grey", "purple"),
                    ("grass", "snow", "beach", "street", "night", "lake", "forest"), ("drive", "park"),
                    (("car", "cars"), ("automobile", "automobiles"), ("vehicle", "vehicles"))),
    "boat": KindSpec(("red", "blue", "white", "yellow", "orange", "green"), ("lake", "beach"), ("sail", "beached"),
                     (("boat", "boats"), ("sailboat", "sailboats"), ("sailing boat", "sailing boats"))),
    "tree": KindSpec(("green", "orange", "yellow", "red", "pink"), _OUT, ("still",), (("tree", "trees"),), "leaves"),
    "house": KindSpec(("red", "blue", "white", "yellow", "green", "pink", "grey", "brown"), _OUT, ("still",),
                      (("house", "houses"), ("home", "homes"), ("cottage", "cottages"))),
    "kite": KindSpec(("red", "blue", "green", "yellow", "orange", "pink", "purple"),
                     ("grass", "snow", "beach", "street", "night", "lake"), ("fly",), (("kite", "kites"),)),
    "flower": KindSpec(("red", "yellow", "pink", "purple", "white", "orange", "blue"),
                       ("grass", "beach", "street", "night", "lake", "forest", "indoor"), ("bloom",),
                       (("flower", "flowers"), ("blossom", "blossoms")), "petals"),
}
PERSON_NOUNS = {"man": (("man", "men"), ("guy", "guys"), ("person", "people")),
                "woman": (("woman", "women"), ("lady", "ladies"), ("person", "people"))}
PERSON_GARMENT = {"man": ("shirt", "shirts"), "woman": ("dress", "dresses")}
PAINTED = {"car", "house", "boat"}

KIND_WORDS: dict[str, tuple[str, ...]] = {
    kind: tuple(sorted({w for pair in spec.nouns for w in pair})) for kind, spec in KINDS.items()
}
KIND_WORDS["person"] = tuple(sorted({w for nouns in PERSON_NOUNS.values() for pair in nouns for w in pair}))

FLYING = {"fly", "air"}
MOVING = {"run", "jump", "walk", "drive", "fly", "sail", "air"}

# (third person singular, plural, participle) per kind and action.
VERBS: dict[str, list[tuple[str, str, str]]] = {
    "stand": [("stands", "stand", "standing"), ("waits", "wait", "waiting")],
    "run": [("runs", "run", "running"), ("plays", "play", "playing"), ("races", "race", "racing"),
            ("dashes", "dash", "dashing")],
    "jump": [("jumps", "jump", "jumping"), ("leaps", "leap", "leaping"), ("plays", "play", "playing")],
    "sit": [("sits", "sit", "sitting"), ("rests", "rest", "resting")],
    "walk": [("walks", "walk", "walking"), ("strolls", "stroll", "strolling")],
    "fly": [("flies", "fly", "flying"), ("soars", "soar", "soaring"), ("glides", "glide", "gliding")],
    "perch": [("perches", "perch", "perching"), ("sits", "sit", "sitting"), ("stands", "stand", "standing")],
    "air": [("flies through the air", "fly through the air", "flying through the air"),
            ("bounces", "bounce", "bouncing"), ("is in mid-air", "are in mid-air", "in mid-air")],
    "ground": [("lies", "lie", "lying"), ("rests", "rest", "resting"), ("sits", "sit", "sitting")],
    "drive": [("drives", "drive", "driving"), ("speeds", "speed", "speeding"), ("moves", "move", "moving")],
    "park": [("is parked", "are parked", "parked"), ("sits", "sit", "sitting"), ("waits", "wait", "waiting")],
    "sail": [("sails", "sail", "sailing"), ("floats", "float", "floating"), ("drifts", "drift", "drifting")],
    "beached": [("rests", "rest", "resting"), ("lies", "lie", "lying"), ("sits", "sit", "sitting")],
    "still": [("stands", "stand", "standing"), ("sits", "sit", "sitting")],
    "bloom": [("blooms", "bloom", "blooming"), ("grows", "grow", "growing")],
}
KIND_VERBS: dict[tuple[str, str], list[tuple[str, str, str]]] = {
    ("horse", "run"): [("gallops", "gallop", "galloping"), ("runs", "run", "running")],
    ("person", "run"): [("runs", "run", "running"), ("jogs", "jog", "jogging")],
    ("person", "stand"): [("stands", "stand", "standing"), ("poses", "pose", "posing"), ("waits", "wait", "waiting")],
    ("cat", "walk"): [("walks", "walk", "walking"), ("prowls", "prowl", "prowling")],
    ("tree", "still"): [("stands", "stand", "standing"), ("grows", "grow", "growing")],
    ("kite", "fly"): [("flies", "fly", "flying"), ("soars", "soar", "soaring"), ("floats", "float", "floating")],
    ("dog", "run"): [("runs", "run", "running"), ("plays", "play", "playing"), ("races", "race", "racing"),
                     ("dashes", "dash", "dashing"), ("romps", "romp", "romping")],
}

PLACES: dict[str, dict[str, tuple[str, ...]]] = {
    "grass": {"static": ("on the grass", "in a grassy field", "on a green lawn", "in a field of grass", "in the park"),
              "moving": ("across the grass", "through a grassy field", "across a green lawn", "through the grass"),
              "sky": ("over a grassy field", "above the grass", "over the field", "above a green meadow"),
              "lead": ("On the grass", "In a grassy field", "Out on the lawn", "In a green meadow")},
    "snow": {"static": ("in the snow", "on a snowy hill", "in a snowy field", "on the snow"),
             "moving": ("through the snow", "across the snow", "through a snowy field", "across a snowy field"),
             "sky": ("over the snow", "above a snowy field", "over the snowy hills"),
             "lead": ("In the snow", "On a snowy day", "Out in the snow", "In a snowy field")},
    "beach": {"static": ("on the beach", "on the sand", "at the beach", "by the sea", "at the seashore"),
              "moving": ("along the beach", "across the sand", "along the shore", "on the beach"),
              "sky": ("over the beach", "above the sea", "over the sand", "above the shore"),
              "lead": ("At the beach", "On a sandy beach", "By the ocean", "At the seaside")},
    "street": {"static": ("on the street", "on a city street", "in the road", "in town", "on the road"),
               "moving": ("down the street", "along a city street", "across the road", "along the road"),
               "sky": ("above the street", "over a city street", "above the road"),
               "lead": ("On a city street", "In town", "Out on the street", "On the road")},
    "night": {"static": ("at night", "under the night sky", "under the stars", "in the dark", "beneath a starry sky"),
              "moving": ("through the night", "under the stars", "in the dark", "at night"),
              "sky": ("in the night sky", "across the night sky", "under the stars", "against the dark sky"),
              "lead": ("At night", "Under a starry sky", "In the dark of night", "Beneath the stars")},
    "lake": {"static": ("by the lake", "at the lake", "near the water", "at the edge of a lake", "by the water"),
             "moving": ("along the lake shore", "beside the lake", "by the water", "along the water"),
             "sky": ("over the lake", "above the water", "over a calm lake"),
             "lead": ("By the lake", "At the lake", "On a lakeshore", "Beside a lake")},
    "forest": {"static": ("in the forest", "in the woods", "among the trees", "on a forest path"),
               "moving": ("through the forest", "through the woods", "along a forest path", "among the trees"),
               "sky": ("above the forest", "in the forest", "among the trees"),
               "lead": ("In the woods", "Deep in the forest", "Among tall trees", "In a forest")},
    "indoor": {"static": ("in a room", "indoors", "inside a house", "in a living room", "on the floor of a room"),
               "moving": ("across the room", "across the floor", "through the living room", "indoors"),
               "sky": ("in the room", "inside a room", "in a living room", "indoors"),
               "lead": ("Indoors", "Inside a house", "In a living room", "In a room")},
}
BOAT_PLACES = {
    "lake": ("on the lake", "on the water", "on a calm lake", "out on the lake"),
    "beach": ("on the beach", "on the sand", "on the shore", "at the beach"),
}

POSITIONS = {
    "left": ("on the left", "on the left side", "on the left side of the picture", "to the left of the frame",
             "at the left of the photo"),
    "centre": ("in the middle", "in the centre of the picture", "in the middle of the frame",
               "at the centre of the photo"),
    "right": ("on the right", "on the right side", "on the right side of the picture", "to the right of the frame",
              "at the right of the photo"),
}
CORNERS = {"top": ("in the upper {h} part of the picture", "at the top {h} of the frame", "high up on the {h}"),
           "bottom": ("in the lower {h} part of the picture", "at the bottom {h} of the frame", "low down on the {h}")}
SIZE_WORDS = {"large": ("large", "big"), "small": ("small", "little", "tiny")}
PHOTO_OF = ("A photo of", "A picture of", "An image of", "A snapshot of")
COUNTS = {2: ("two", "two", "a pair of", "a couple of"), 3: ("three", "three", "a group of three")}
