"""Widgets: they show data they are given and post messages; no store access, no business logic."""
