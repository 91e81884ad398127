"""Small helpers for the text mlrig prints."""

from __future__ import annotations


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """A count and its noun, singular for one: `1 stage`, `17 stages`, `2 classes`.

    Args:
        count: how many.
        singular: the noun for one.
        plural: the noun for any other count (default: `singular` with an "s").
    """
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
