"""A text box that says when typing has paused, so a screen filters or searches once per pause, not per key."""
from __future__ import annotations

from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input


class DebouncedInput(Input):
    """An ``Input`` that posts ``Settled`` ``delay`` seconds after the last change, and at once on enter
    (``submitted``; ``Submitted`` is posted as usual, after it)."""

    class Settled(Message):
        """Typing paused, or enter was pressed (``submitted``): ``value`` is what the box holds."""

        def __init__(self, box: DebouncedInput, value: str, submitted: bool = False) -> None:
            super().__init__()
            self.box = box
            self.value = value
            self.submitted = submitted

        @property
        def control(self) -> DebouncedInput:
            return self.box

    def __init__(self, *args, delay: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay
        self._timer: Timer | None = None

    def settle_now(self, submitted: bool = False) -> None:
        """Post ``Settled`` now instead of after the pause (enter, or a value set by the program)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.post_message(self.Settled(self, self.value, submitted))

    def _on_input_changed(self, event: Input.Changed) -> None:
        if event.input is not self:
            return
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(self.delay, self.settle_now)

    async def action_submit(self) -> None:
        self.settle_now(submitted=True)
        await super().action_submit()
