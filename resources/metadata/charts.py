"""Charts as inline SVG: a report stays one self-contained file that any browser opens,
offline, with nothing to load and no plotting library to install."""

from html import escape

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d"]
ROW_HEIGHT, LABEL_WIDTH, BAR_WIDTH, VALUE_WIDTH = 22, 220, 420, 90


def stacked_bars(title: str, rows: list[tuple[str, dict[str, float]]], series: list[str], unit: str = "") -> str:
    """Horizontal stacked bars, one row per label, one colour per series, with a legend."""
    total = max((sum(values.get(s, 0) for s in series) for _, values in rows), default=0) or 1
    height = 40 + ROW_HEIGHT * len(rows) + 30
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<text x="0" y="16" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for i, (label, values) in enumerate(rows):
        y = 30 + i * ROW_HEIGHT
        parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 14}" text-anchor="end">{escape(label[:34])}</text>')
        x = float(LABEL_WIDTH)
        for j, name in enumerate(series):
            value = values.get(name, 0)
            if value <= 0:
                continue
            w = BAR_WIDTH * value / total
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{max(w, 1):.1f}" height="{ROW_HEIGHT - 6}" '
                f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(f"{label} · {name}: {_number(value)}{unit}")}</title></rect>'
            )
            x += w
        amount = sum(values.get(s, 0) for s in series)
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 14}">{_number(amount)}{escape(unit)}</text>')
    legend_y = 40 + ROW_HEIGHT * len(rows)
    x = LABEL_WIDTH
    for j, name in enumerate(series):
        parts.append(f'<rect x="{x}" y="{legend_y}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>')
        parts.append(f'<text x="{x + 14}" y="{legend_y + 9}">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def _number(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.4f}" if value < 1 else f"{value:,.2f}"
