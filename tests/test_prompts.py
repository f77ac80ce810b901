"""Neighbour prompts: template loading, caption selection, trimming, safe substitution."""
from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.prompts import DEFAULT_TEMPLATE, build_prompt, central_caption, load_template

NEIGHBOURS = [
    ["A black dog runs through the snow.", "A dog running in snow", "a black dog runs through the snow"],
    ["Two children play on a red slide.", "Kids on a slide at the park."],
    ["A man rides a bike down a dirt road."],
]


def words(text: str) -> int:
    return len(text.split())


def listed(text: str) -> list[str]:
    return [line.split(". ", 1)[1] for line in text.splitlines() if line[:1].isdigit() and ". " in line]


def test_default_template_loads_with_placeholders_and_stable_id():
    text, template_id = load_template(None)
    assert "{captions}" in text and "{k}" in text
    assert load_template(str(DEFAULT_TEMPLATE)) == (text, template_id)
    assert len(template_id) == 16


def test_template_id_changes_with_the_text(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("Similar photos:\n{captions}\nDescribe this one.")
    b.write_text("Similar photos:\n{captions}\nDescribe this photo.")
    assert load_template(str(a))[1] != load_template(str(b))[1]


def test_template_without_captions_placeholder_names_the_file(tmp_path):
    bad = tmp_path / "my_prompt.txt"
    bad.write_text("Describe the photo in {k} words.")
    with pytest.raises(ConfigError, match="my_prompt.txt.*\\{captions\\}"):
        load_template(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_template(str(tmp_path / "missing.txt"))


def test_all_lists_every_caption_nearest_first_without_repeats():
    template, _ = load_template(None)
    res = build_prompt(template, NEIGHBOURS, per_neighbour="all")
    assert listed(res.text) == [
        "A black dog runs through the snow.", "A dog running in snow",
        "Two children play on a red slide.", "Kids on a slide at the park.",
        "A man rides a bike down a dirt road.",
    ]
    assert res.n_captions_used == 5 and not res.trimmed and res.warning is None
    assert "for 3 photos" in res.text and "{" not in res.text


def test_first_takes_one_caption_per_neighbour():
    res = build_prompt("{captions}", NEIGHBOURS, per_neighbour="first")
    assert listed(res.text) == [NEIGHBOURS[0][0], NEIGHBOURS[1][0], NEIGHBOURS[2][0]]


def test_central_takes_each_neighbours_most_typical_caption():
    group = [
        "A surfer on a wave.",
        "A man in a wetsuit surfs a big wave in the ocean.",
        "A surfer in a black wetsuit rides a wave in the ocean.",
        "Someone enjoying the sea.",
    ]
    assert central_caption(group) == "A surfer in a black wetsuit rides a wave in the ocean."
    res = build_prompt("Captions:\n{captions}", [group, ["A cat sleeps."]], per_neighbour="central")
    assert listed(res.text) == ["A surfer in a black wetsuit rides a wave in the ocean.", "A cat sleeps."]
    assert central_caption(["only one"]) == "only one" and central_caption(["", " "]) is None


def test_braces_in_user_templates_and_captions_are_kept(tmp_path):
    path = tmp_path / "json_prompt.txt"
    path.write_text('Reply as {"caption": "..."} using {k} neighbours:\n{captions}\n{unknown} {0}')
    template, _ = load_template(str(path))
    res = build_prompt(template, [["A sign reads {k} and {captions}."]])
    assert res.text == (
        'Reply as {"caption": "..."} using 1 neighbours:\n1. A sign reads {k} and {captions}.\n{unknown} {0}'
    )


def test_over_long_prompts_drop_the_farthest_neighbours_first():
    template = "Similar photos:\n{captions}\nWrite one caption."
    full = build_prompt(template, NEIGHBOURS)
    budget = words(full.text) - 3
    res = build_prompt(template, NEIGHBOURS, max_tokens=budget, count_tokens=words)
    assert res.trimmed and res.warning and "dropped" in res.warning
    assert words(res.text) <= budget
    assert listed(res.text) == listed(full.text)[: res.n_captions_used]
    assert res.n_captions_used == 4
    assert build_prompt(template, NEIGHBOURS, max_tokens=10_000, count_tokens=words) == full


def test_a_single_caption_too_long_is_truncated_by_words():
    template = "Similar: {captions} Now describe."
    long_caption = " ".join(f"w{i}" for i in range(40))
    res = build_prompt(template, [[long_caption], ["short one"]], max_tokens=12, count_tokens=words)
    assert res.trimmed and res.n_captions_used == 1 and words(res.text) == 12
    assert res.text.startswith("Similar: 1. w0 w1 w2") and "short one" not in res.text
    assert "cut to" in res.warning


def test_template_alone_over_budget_is_reported():
    res = build_prompt("one two three four {captions}", NEIGHBOURS, max_tokens=3, count_tokens=words)
    assert res.trimmed and res.n_captions_used == 0 and "template alone" in res.warning


def test_no_captions_gives_a_warning_and_max_tokens_needs_a_counter():
    res = build_prompt("{captions}", [[], ["  "]])
    assert res.n_captions_used == 0 and res.warning
    with pytest.raises(ValueError, match="count_tokens"):
        build_prompt("{captions}", NEIGHBOURS, max_tokens=5)
    with pytest.raises(ConfigError, match="per_neighbour"):
        build_prompt("{captions}", NEIGHBOURS, per_neighbour="best")
    with pytest.raises(ConfigError, match="captions"):
        build_prompt("no placeholder", NEIGHBOURS)
