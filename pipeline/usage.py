"""What a stage's requests to a model server cost: ``TokenUsage``, carried by a batch's result, a stage's outcome,
the store's stage runs and the run's summary. A leaf module: the stage classes and the stage runners' outcome
both use it, and neither imports the other for it."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class TokenUsage:
    """What a stage's requests to a model server cost (captioning through an endpoint): requests answered, tokens
    read and written, and their price when prices are set (``None``: no prices). Batches add up."""
    photos: int = 0            # photos the server answered (a caption, or an answer that was not one)
    requests: int = 0          # requests sent, retries included
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: "TokenUsage | None") -> None:
        if other is None:
            return
        self.photos += other.photos
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        if other.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + other.cost_usd

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TokenUsage | None":
        if not data:
            return None
        return cls(**{k: data[k] for k in ("photos", "requests", "prompt_tokens", "completion_tokens", "cost_usd")
                      if k in data})

    def as_dict(self, seconds: float | None = None) -> dict[str, Any]:
        """The counts, and with ``seconds`` (the time they took) photos and tokens per second."""
        out: dict[str, Any] = {**asdict(self), "tokens": self.tokens}
        if seconds is not None:
            out.update(photos_per_second=self.photos / seconds if seconds > 0 else None,
                       tokens_per_second=self.tokens / seconds if seconds > 0 else None)
        return out

    def describe(self, seconds: float | None = None) -> str:
        """``40 photos, 12,345 prompt + 890 completion tokens, $0.0021; 3.1 photos/s, 1,010 tokens/s``."""
        cost = "" if self.cost_usd is None else f", ${self.cost_usd:.4f}"
        text = f"{self.photos} photos, {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion tokens{cost}"
        if seconds:
            text += f"; {self.photos / seconds:.1f} photos/s, {self.tokens / seconds:,.0f} tokens/s"
        return text
