"""Prefect flows and tasks over the pipeline's stages.

Importing this package applies capsearch's Prefect settings (``flows.runtime.settings``)
before Prefect itself is imported, so keep this module free of Prefect imports.
"""
from flows.runtime.settings import apply_settings

apply_settings()
