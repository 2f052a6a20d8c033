"""`sweeps.decades`: a front read decade by decade, against a hand-worked example."""
import pytest

from sweeps.decades import Point, by_decade, decade_of, decade_text, markdown

POINTS = [
    Point("uni", 256, 0.70, 0.68, 0.72),      # decade 2, on the front (the cheapest)
    Point("qr 0.5", 1_200, 0.80, 0.78, 0.82),  # decade 3, on the front
    Point("vera", 5_120, 0.78),                # decade 3, below qr 0.5 at more parameters: off
    Point("lora 1", 6_144, 0.82, 0.80, 0.84),  # decade 3, on the front
    Point("dora", 15_360, 0.81),               # decade 4, below lora 1: off; the decade's best
    Point("c3a", 18_432, 0.79),                # decade 4, off
    Point("full", 22_713_216, 0.825),          # decade 7, on the front (the highest mean)
]


def test_each_decade_lists_its_front_members_or_its_best():
    decades = by_decade(POINTS)
    assert [decade.exponent for decade in decades] == [2, 3, 4, 7]
    assert [[point.label for point in decade.on_front] for decade in decades] == [
        ["uni"], ["qr 0.5", "lora 1"], [], ["full"]]
    assert [decade.best_off_front and decade.best_off_front.label for decade in decades] == [None, None, "dora", None]


def test_decade_bounds_and_text():
    assert [decade_of(count) for count in (0.5, 1, 9, 10, 999, 1_000, 22_713_216)] == [0, 0, 0, 1, 2, 3, 7]
    assert decade_text(3) == "10³–10⁴" and decade_text(7) == "10⁷–10⁸"


def test_markdown_rows_per_front_and_decade():
    text = markdown([("sst2/cold", POINTS), ("sst2/warm3", POINTS[:2])], "caption")
    rows = [line for line in text.splitlines() if line.startswith("| sst2")]
    assert rows[1] == "| sst2/cold | 10³–10⁴ | qr 0.5: 1,200, 80.0 [78.0, 82.0]; lora 1: 6,144, 82.0 [80.0, 84.0] | - |"
    assert rows[2] == "| sst2/cold | 10⁴–10⁵ | none | dora: 15,360, 81.0 |"
    assert len(rows) == 6 and rows[4].startswith("| sst2/warm3 | 10²–10³ | uni: 256, 70.0 [68.0, 72.0] |")
    assert text.startswith("caption\n")


def test_a_non_finite_mean_is_refused():
    with pytest.raises(ValueError, match="finite"):
        by_decade([Point("nan", 100, float("nan"))])
