"""The workspace store (``Store``) and its errors; see ``pipeline.store.core``.

``from pipeline.store import Store`` is how every layer opens one; the rows it returns are in
``pipeline.store_rows``.
"""
from pipeline.errors import DiskFullError, StoreError
from pipeline.store.core import Store
from pipeline.store.schema import SCHEMA_VERSION

__all__ = ["DiskFullError", "SCHEMA_VERSION", "Store", "StoreError"]
