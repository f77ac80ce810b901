"""Data set loaders: Flickr8k (local folder), any photo folder, and the generated demo world."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import DataConfig
from pipeline.datasets.base import Collection, CollectionItem
from pipeline.errors import DataError

__all__ = ["Collection", "CollectionItem", "load_collection"]


def load_collection(data: DataConfig, root: Path | str, progress=None, *, generate: bool = True) -> Collection:
    """Read the configured data set. The demo world is generated first when it is not there yet
    (with ``generate=False`` a missing demo world is an error instead: reading status must stay cheap)."""
    from pipeline.datasets.flickr8k import load_flickr8k
    from pipeline.datasets.folder import load_folder

    if data.source != "folder" and isinstance(root, str):
        raise DataError(f"data.source = '{data.source}' reads a local folder, not {root}; use `capsearch data folder URL`")
    if data.source == "demo":
        from pipeline.datasets.demo import demo_world_matches, generate_demo_world

        if not demo_world_matches(root, data.demo_images, data.demo_seed):
            if not generate:
                raise DataError(f"the demo world is not generated yet at {root}: run `capsearch data demo` "
                                "(or any run, which generates it first)")
            generate_demo_world(root, n_images=data.demo_images, seed=data.demo_seed, progress=progress)
        return load_flickr8k(root, name="demo")
    if data.source == "flickr8k":
        return load_flickr8k(root)
    if data.source == "folder":
        return load_folder(root, data.captions or None)
    raise DataError(f"unknown data source '{data.source}'")
