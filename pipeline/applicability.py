"""Why a stage may not apply to a workspace: one line each, shared by every stage that depends on it.

A person's collection is not a benchmark: its uncaptioned photos are the targets, so there are no
held-out captions to make evaluation queries from, and a folder with no captions at all has no
neighbours' captions to show a captioner. Those stages are *not applicable* (``Stage.applicable``),
which is neither a failure nor done. Before anything is ingested every stage applies (there is simply
nothing to do yet).
"""
from __future__ import annotations

NO_CAPTIONED_PHOTO = ("no photo has a human caption, so there are no neighbours' captions to show or to choose "
                      "from (give some photos captions: `capsearch data folder PATH --captions FILE`)")
NO_HELD_OUT_CAPTIONS = ("the targets have no held-out human captions to make evaluation queries from (in a "
                        "collection the uncaptioned photos are the targets: they are searched, not evaluated)")
NO_HUMAN_CAPTION = "no photo has a human caption"


def no_captioned_photo(store) -> str | None:
    """Neighbour-based stages: the reference DB holds no captioned photo."""
    if store.count_images() == 0 or store.has_captions("reference"):
        return None
    return NO_CAPTIONED_PHOTO


def no_held_out_captions(store) -> str | None:
    """Evaluation stages: no target has human captions of its own."""
    if store.count_images() == 0 or store.has_captions("target"):
        return None
    return NO_HELD_OUT_CAPTIONS


def no_human_caption(store) -> str | None:
    """Stages over human captions: no photo has one."""
    if store.count_images() == 0 or store.has_captions():
        return None
    return NO_HUMAN_CAPTION
