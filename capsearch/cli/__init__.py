"""The `capsearch` command line: a thin layer over flows/ and pipeline/."""
from capsearch.cli.app import app, main

__all__ = ["app", "main"]
