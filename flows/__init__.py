"""Prefect flows and tasks over the pipeline's stages; ``flows.runtime`` holds the processes and servers around them.

Importing this package (or any module of it) changes nothing: the entry points apply capsearch's Prefect
settings (``flows.runtime.settings.apply_settings``) before Prefect is imported.
"""
