"""The dashboard's server-rendered SVG charts: well-formed markup, both series and
the threshold where they belong, non-finite or missing data left out, and every
label escaped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from consumers.dashboard.chart import (
    HEIGHT,
    PAD_BOTTOM,
    PAD_LEFT,
    PAD_RIGHT,
    PAD_TOP,
    WIDTH,
    Series,
    bar_chart,
    line_chart,
)

CANARY = Series("canary", "canary", ((0, 0.01), (60, 0.02), (120, 0.03)))
BASELINE = Series("baseline (stable)", "baseline", ((0, 0.01), (60, 0.01), (120, 0.015)))
HOSTILE = '</title><script>alert("x")</script><g onload=\'y\' a="&amp;'

LEFT, RIGHT = PAD_LEFT, WIDTH - PAD_RIGHT
TOP, BOTTOM = PAD_TOP, HEIGHT - PAD_BOTTOM


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on markup that is not well-formed
    assert root.tag == "svg"
    return root


def classes(element: ET.Element) -> list[str]:
    return element.get("class", "").split()


def find(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(tag) if cls in classes(e)]


def points(polyline: ET.Element) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (p.split(",") for p in polyline.get("points", "").split())]


def texts(root: ET.Element) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter("text")]


# --- line chart ---------------------------------------------------------------------


def test_both_series_are_drawn_with_their_role_and_a_dot_per_point() -> None:
    root = parse(line_chart("error_rate", [CANARY, BASELINE], x_label="seconds"))
    [canary] = find(root, "polyline", "series-canary")
    [baseline] = find(root, "polyline", "series-baseline")
    assert canary.get("data-series") == "canary"
    assert baseline.get("data-series") == "baseline (stable)"
    assert len(points(canary)) == 3
    assert len(points(baseline)) == 3
    assert len(find(root, "circle", "series-canary")) == 3
    assert len(find(root, "circle", "series-baseline")) == 3
    assert {"canary", "baseline (stable)"} <= set(texts(root))  # the legend
    assert "seconds" in texts(root)
    assert root.findtext("title") == "error_rate"
    assert root.get("aria-label") == "error_rate"


def test_every_point_lies_inside_the_plot_area() -> None:
    root = parse(line_chart("t", [CANARY, BASELINE], threshold=0.05))
    for polyline in root.iter("polyline"):
        for x, y in points(polyline):
            assert LEFT <= x <= RIGHT
            assert TOP <= y <= BOTTOM


def test_x_spans_the_plot_and_a_larger_value_is_drawn_higher() -> None:
    root = parse(line_chart("t", [CANARY]))
    [(x0, y0), (_, y1), (x2, y2)] = points(find(root, "polyline", "series-canary")[0])
    assert (x0, x2) == (LEFT, RIGHT)
    assert y0 > y1 > y2  # SVG's y grows downwards
    assert y2 == TOP  # the largest value is the top of the axis


def test_the_y_axis_starts_at_zero_for_positive_data() -> None:
    root = parse(line_chart("t", [Series("s", "canary", ((0, 0.0), (1, 5.0)))]))
    [(_, zero), (_, top)] = points(find(root, "polyline", "series-canary")[0])
    assert zero == BOTTOM
    assert top == TOP
    assert [t for t in texts(root) if t in ("0", "2.5", "5")] == ["0", "2.5", "5"]  # the ticks


def test_the_threshold_line_is_drawn_at_its_value() -> None:
    at_threshold = Series("s", "canary", ((0, 0.0), (1, 0.02), (2, 0.04)))
    root = parse(line_chart("t", [at_threshold], threshold=0.02))
    [line] = find(root, "line", "threshold")
    _, middle, _ = points(find(root, "polyline", "series-canary")[0])
    assert float(line.get("y1", "")) == float(line.get("y2", "")) == middle[1]
    assert (float(line.get("x1", "")), float(line.get("x2", ""))) == (LEFT, RIGHT)
    assert line.findtext("title") == "threshold 0.02"


def test_a_threshold_above_the_data_stretches_the_axis_to_show_it() -> None:
    root = parse(line_chart("t", [CANARY], threshold=1.0))
    [line] = find(root, "line", "threshold")
    assert float(line.get("y1", "")) == TOP
    assert all(y > TOP for _, y in points(find(root, "polyline", "series-canary")[0]))


@pytest.mark.parametrize("threshold", [None, math.nan, math.inf, -math.inf])
def test_no_threshold_line_without_a_finite_threshold(threshold: float | None) -> None:
    root = parse(line_chart("t", [CANARY], threshold=threshold))
    assert find(root, "line", "threshold") == []
    assert len(find(root, "polyline", "series-canary")) == 1


@pytest.mark.parametrize(
    "series",
    [
        [],
        [Series("canary", "canary", ())],
        [Series("canary", "canary", ((math.nan, 1.0), (1.0, math.inf), (2.0, -math.inf)))],
    ],
    ids=["no-series", "no-points", "only-non-finite"],
)
def test_without_finite_data_the_chart_says_so(series: list[Series]) -> None:
    root = parse(line_chart("latency p99", series, threshold=0.5))
    assert root.findall("polyline") == []
    assert find(root, "text", "chart-empty")[0].text == "latency p99: no data"


def test_non_finite_points_are_left_out_and_the_rest_drawn() -> None:
    gappy = Series("canary", "canary", ((0, 1.0), (1, math.nan), (2, math.inf), (math.nan, 3.0), (3, 2.0)))
    svg = line_chart("t", [gappy])
    root = parse(svg)
    assert len(points(find(root, "polyline", "series-canary")[0])) == 2
    assert len(find(root, "circle", "series-canary")) == 2
    assert "nan" not in svg.lower()
    assert "inf" not in svg.lower()


def test_a_series_without_points_is_in_the_legend_but_not_drawn() -> None:
    root = parse(line_chart("t", [CANARY, Series("baseline", "baseline", ())]))
    assert find(root, "polyline", "series-baseline") == []
    assert len(find(root, "rect", "series-baseline")) == 1
    assert "baseline" in texts(root)


@pytest.mark.parametrize(
    "pts",
    [((5, 2.0),), ((5, 2.0), (5, 3.0)), ((0, 0.0), (1, 0.0)), ((0, -2.0), (1, -2.0))],
    ids=["one-point", "one-x", "all-zero", "all-negative-equal"],
)
def test_a_flat_or_single_point_series_is_drawn_without_dividing_by_zero(
    pts: tuple[tuple[float, float], ...],
) -> None:
    svg = line_chart("t", [Series("s", "canary", pts)])
    root = parse(svg)
    drawn = points(find(root, "polyline", "series-canary")[0])
    assert len(drawn) == len(pts)
    assert all(LEFT <= x <= RIGHT and TOP <= y <= BOTTOM for x, y in drawn)
    assert "nan" not in svg.lower()


def test_a_single_x_is_centred() -> None:
    root = parse(line_chart("t", [Series("s", "canary", ((5, 2.0),))]))
    [(x, _)] = points(find(root, "polyline", "series-canary")[0])
    assert x == pytest.approx((LEFT + RIGHT) / 2, abs=0.05)


def test_negative_values_are_drawn_below_zero() -> None:
    root = parse(line_chart("t", [Series("s", "canary", ((0, -1.0), (1, 0.0), (2, 1.0)))]))
    [(_, low), (_, zero), (_, high)] = points(find(root, "polyline", "series-canary")[0])
    assert low == BOTTOM
    assert high == TOP
    assert low > zero > high


@pytest.mark.parametrize(
    ("value", "tick"), [(1234.0, "1.23e+03"), (0.001, "1.00e-03"), (0.25, "0.25"), (12.0, "12")]
)
def test_tick_labels_are_short(value: float, tick: str) -> None:
    root = parse(line_chart("t", [Series("s", "canary", ((0, value), (1, value)))]))
    assert tick in [e.text for e in find(root, "text", "tick")]


def test_labels_are_escaped_and_cannot_inject_markup() -> None:
    hostile = Series(HOSTILE, f'canary" onclick="{HOSTILE}', ((0, 1.0), (1, 2.0)))
    svg = line_chart(HOSTILE, [hostile], x_label=HOSTILE, threshold=1.5)
    root = parse(svg)
    assert list(root.iter("script")) == []
    assert [e for e in root.iter() if "onload" in e.attrib or "onclick" in e.attrib] == []
    assert root.get("aria-label") == HOSTILE
    assert root.findtext("title") == HOSTILE
    [polyline] = root.iter("polyline")
    assert polyline.get("data-series") == HOSTILE
    assert polyline.findtext("title") == HOSTILE
    assert texts(root).count(HOSTILE) == 3  # chart title, x label, legend


# --- bar chart ----------------------------------------------------------------------


def widths(root: ET.Element) -> list[float]:
    return [float(r.get("width", "")) for r in find(root, "rect", "bar")]


def view_height(root: ET.Element) -> float:
    return float(root.get("viewBox", "").split()[3])


def test_bars_are_scaled_to_the_largest_value() -> None:
    root = parse(bar_chart("lead time", [("web", 4.0), ("api", 2.0), ("db", 1.0)], unit=" h"))
    big, half, quarter = widths(root)
    assert half == pytest.approx(big / 2, abs=0.1)
    assert quarter == pytest.approx(big / 4, abs=0.1)
    assert {"web", "api", "db", "4 h", "2 h", "1 h"} <= set(texts(root))


def test_a_bar_without_a_finite_value_is_a_dash() -> None:
    bars = [("web", 3.0), ("api", None), ("db", math.nan), ("queue", math.inf)]
    svg = bar_chart("t", bars)
    root = parse(svg)
    assert len(widths(root)) == 1
    assert texts(root).count("-") == 3
    assert "nan" not in svg.lower()
    assert "inf" not in svg.lower()


def test_zero_bars_are_drawn_one_pixel_wide() -> None:
    root = parse(bar_chart("t", [("web", 0.0), ("api", 0.0)]))
    assert widths(root) == [1.0, 1.0]


def test_no_bars_says_no_data() -> None:
    root = parse(bar_chart("failures", []))
    assert find(root, "rect", "bar") == []
    assert find(root, "text", "chart-empty")[0].text == "failures: no data"


def test_the_chart_grows_a_row_per_bar() -> None:
    one = parse(bar_chart("t", [("a", 1.0)]))
    three = parse(bar_chart("t", [("a", 1.0), ("b", 2.0), ("c", 3.0)]))
    assert view_height(three) - view_height(one) == 2 * 22


def test_values_are_written_with_the_given_format() -> None:
    root = parse(bar_chart("t", [("web", 0.125)], fmt=lambda v: f"{v:.0%}"))
    assert "12%" in texts(root)


def test_bar_labels_values_and_units_are_escaped() -> None:
    svg = bar_chart(HOSTILE, [(HOSTILE, 1.0), (HOSTILE, None)], unit="<b>", fmt=lambda v: "&<")
    root = parse(svg)
    assert list(root.iter("script")) == []
    assert list(root.iter("b")) == []
    assert texts(root).count(HOSTILE) == 3  # title and both labels
    assert "&<<b>" in texts(root)
    assert root.get("aria-label") == HOSTILE
