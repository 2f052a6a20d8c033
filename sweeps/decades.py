"""Which configurations hold each decade of a front: `fronts.md`, written by `qrlora-sweep report`.

A front of configuration means spans several decades of trainable parameters (QR-LoRA's 10^3, LoRA's
10^4, full fine-tuning's 10^7). Someone choosing a method under a parameter budget reads it one decade at
a time: who is on the front there, and, where the front skips a decade, the best that decade has.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .pareto import pareto_front

SUPERSCRIPTS = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


@dataclass(frozen=True)
class Point:
    """One configuration of a front: its label, trainable parameters (the front's x) and mean score with
    its 95% interval (None where it has none), all in the score's own units."""

    label: str
    params: float
    mean: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Decade:
    exponent: int            # 10^exponent <= params < 10^(exponent + 1)
    on_front: list[Point]    # by parameters ascending
    best_off_front: Point | None  # the decade's best mean when none of its configurations is on the front


def decade_of(params: float) -> int:
    """k with 10^k <= params < 10^(k + 1); a count below 1 is in decade 0."""
    return int(math.floor(math.log10(params))) if params >= 1 else 0


def by_decade(points: list[Point]) -> list[Decade]:
    """The decades that hold a configuration, ascending, each with its members on the front of all the
    points' means (`pareto.pareto_front`: no other point has a higher mean at no more parameters)."""
    front = set(pareto_front([point.mean for point in points], [point.params for point in points]))
    decades = []
    for exponent in sorted({decade_of(point.params) for point in points}):
        members = [index for index, point in enumerate(points) if decade_of(point.params) == exponent]
        on_front = sorted((points[index] for index in members if index in front), key=lambda point: point.params)
        best = None if on_front else max((points[index] for index in members), key=lambda point: point.mean)
        decades.append(Decade(exponent, on_front, best))
    return decades


def decade_text(exponent: int) -> str:
    """`10³–10⁴`."""
    return f"10{str(exponent).translate(SUPERSCRIPTS)}–10{str(exponent + 1).translate(SUPERSCRIPTS)}"


def point_text(point: Point) -> str:
    """`QR-LoRA τ 0.5: 1,969, 79.1 [76.6, 81.7]`: scores x100, one decimal, as the table prints them."""
    interval = f" [{100 * point.low:.1f}, {100 * point.high:.1f}]" if point.low is not None else ""
    return f"{point.label}: {point.params:,.0f}, {100 * point.mean:.1f}{interval}"


def markdown(fronts: list[tuple[str, list[Point]]], caption: str) -> str:
    """One row per front and decade: who is on the front there; where nobody is, the decade's best."""
    header = ["front", "trainable params", "on the front: params, mean [95% CI]", "best of a decade off the front"]
    lines = [caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, points in fronts:
        for decade in by_decade(points):
            cells = [name, decade_text(decade.exponent),
                     "; ".join(map(point_text, decade.on_front)) or "none",
                     point_text(decade.best_off_front) if decade.best_off_front else "-"]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
