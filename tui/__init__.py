"""The capsearch terminal UI (Textual): ``capsearch tui`` or ``python -m tui``; see ``tui.app.CapsearchApp``."""
