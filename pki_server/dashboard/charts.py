"""Charts as SVG made on the server: no JavaScript, no build step, nothing fetched from elsewhere.

Everything the SVG says (labels, titles) is escaped. Colours and fonts come from dashboard.css
through class names, since the Content-Security-Policy refuses ``style`` attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

#: The viewBox; the SVG scales to its container's width (dashboard.css), so this is its aspect ratio.
WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 28, 36  # margins around the plot area, in SVG units


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar (shown for some bars only when there are many)
    value: int
    tooltip: str  # the bar's <title>


def nice_maximum(value: int) -> int:
    """The top of the value axis: at least 1, rounded up to 1, 2 or 5 times a power of ten."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def bar_chart(bars: Sequence[Bar], *, title: str, label_every: int = 1) -> SafeString:
    """A vertical bar chart with a title, a value axis (0 and its maximum) and labels under the bars."""
    top = nice_maximum(max((bar.value for bar in bars), default=0))
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / max(len(bars), 1)
    bar_width = max(slot * 0.7, 1.0)
    baseline = TOP + plot_height

    rects = []
    labels = []
    for index, bar in enumerate(bars):
        height = plot_height * bar.value / top
        x = LEFT + index * slot + (slot - bar_width) / 2
        rects.append((f"{x:.1f}", f"{baseline - height:.1f}", f"{bar_width:.1f}", f"{height:.1f}", bar.value,
                      bar.tooltip))
        if index % label_every == 0 or index == len(bars) - 1:
            labels.append((f"{x + bar_width / 2:.1f}", f"{baseline + 16}", bar.label))

    return format_html(
        '<svg class="chart" role="img" viewBox="0 0 {w} {h}" width="100%" preserveAspectRatio="xMidYMid meet" '
        'xmlns="http://www.w3.org/2000/svg" '
        'aria-label="{title}"><title>{title}</title>'
        '<text class="chart-title" x="{left}" y="16">{title}</text>'
        '<line class="chart-axis" x1="{left}" y1="{top}" x2="{left}" y2="{base}"></line>'
        '<line class="chart-axis" x1="{left}" y1="{base}" x2="{right}" y2="{base}"></line>'
        '<text class="chart-tick" x="{tick_x}" y="{top_y}" text-anchor="end">{maximum}</text>'
        '<text class="chart-tick" x="{tick_x}" y="{base}" text-anchor="end">0</text>'
        "{bars}{labels}</svg>",
        w=WIDTH, h=HEIGHT, title=title, left=LEFT, top=TOP, base=baseline, right=WIDTH - RIGHT,
        tick_x=LEFT - 6, top_y=TOP + 4, maximum=top,
        bars=format_html_join(
            "", '<rect class="chart-bar" x="{}" y="{}" width="{}" height="{}" data-value="{}">'
                '<title>{}</title></rect>', rects,
        ),
        labels=format_html_join(
            "", '<text class="chart-label" x="{}" y="{}" text-anchor="middle">{}</text>', labels,
        ),
    )


def issuance_chart(per_day: Sequence[tuple[date, int]]) -> SafeString:
    """Certificates issued per day: one bar a day, dates under every fifth bar and the last."""
    bars = [
        Bar(label=f"{day:%b %d}", value=count,
            tooltip=f"{day:%Y-%m-%d}: {count} certificate{'' if count == 1 else 's'}")
        for day, count in per_day
    ]
    return bar_chart(bars, title=f"Certificates issued per day, last {len(bars)} days", label_every=5)
