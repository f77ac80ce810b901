"""Text for people: photo names shortened in the middle, so the part that tells photos apart stays."""
from __future__ import annotations

ELLIPSIS = "…"


def shorten_middle(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters, cut in the middle: the file name is kept whole when it fits
    (``explore_monuments/…/france_042.jpg``), otherwise the start and the end of the name are.

    Photo ids are relative paths; the folders at the start and the file name at the end both tell photos
    apart, and of the two the file name matters more."""
    if width < 1:
        return ""
    if len(name) <= width:
        return name
    head, sep, base = name.rpartition("/")
    if sep and len(base) + 2 <= width:
        room = width - len(base) - 2           # "<head start>…/<base>"
        return (head[:room] + ELLIPSIS + "/" + base) if room > 0 else ELLIPSIS + "/" + base
    if width <= 2:
        return name[-width:]
    keep_start = (width - 1) // 3              # the end of a file name (its number, its extension) tells more
    keep_end = width - 1 - keep_start
    return name[:keep_start] + ELLIPSIS + name[len(name) - keep_end:]
