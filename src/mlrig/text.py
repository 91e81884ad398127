"""Small helpers for the text mlrig prints."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """A count and its noun, singular for one: `1 stage`, `17 stages`, `2 classes`.

    Args:
        count: how many.
        singular: the noun for one.
        plural: the noun for any other count (default: `singular` with an "s").
    """
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def natural_order(labels: Iterable[T]) -> list[T]:
    """Labels in the order a reader expects: by value when every one is a number (`2` before
    `10`, also when they are written as text), else alphabetically.

    Args:
        labels: class labels, as a model or a table holds them (numbers or text).
    """
    listed = list(labels)
    numbers = [number_or_none(label) for label in listed]
    if all(value is not None for value in numbers):
        pairs = sorted(zip(numbers, listed, strict=True), key=lambda pair: pair[0])
        return [label for _, label in pairs]
    return sorted(listed, key=str)


def number_or_none(label: object) -> float | None:
    if isinstance(label, bool):  # True/False are labels, not 1/0
        return None
    try:
        return float(str(label))
    except ValueError:
        return None
