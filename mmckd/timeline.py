"""A PNG of sentiment over time for a segmented media file (``mmckd predict --segments --timeline FILE.png``).

Each segment is a bar from its start to its end at the height of its score (green positive, red negative),
with a snippet of its transcript beside it; segments without a score are shaded grey with the reason.
Drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

POSITIVE, NEGATIVE, NEUTRAL, NONE = "#2e8b57", "#c0392b", "#7f8c8d", "#d5d8dc"


def _snippet(text: str | None, seconds: float, limit: int = 120) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    width = max(14, int(seconds * 6))  # about as wide as the bar at the figure's scale
    lines = textwrap.wrap(f"“{text}”", width=width)
    return "\n".join(lines[:5]) + ("…" if len(lines) > 5 else "")


def draw_timeline(results: Sequence, path: str | Path, title: str | None = None) -> Path:
    """Draw SegmentResult-like objects (start, end, score, transcript, network, error) into a PNG at path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    end = max((r.end for r in results), default=1.0) or 1.0
    fig_w = min(40.0, max(10.0, end / 2.5))
    fig, ax = plt.subplots(figsize=(fig_w, 5.2), dpi=110)
    ax.axhline(0, color="#555", lw=0.8)
    for k, r in enumerate(results):
        mid = (r.start + r.end) / 2
        if r.score is None:
            ax.axvspan(r.start, r.end, ymin=0.42, ymax=0.58, color=NONE, alpha=0.8)
            ax.text(mid, 0, "no score", ha="center", va="center", fontsize=7, color="#444")
            continue
        color = POSITIVE if r.score > 0 else NEGATIVE if r.score < 0 else NEUTRAL
        ax.fill_between([r.start, r.end], 0, r.score, color=color, alpha=0.25, lw=0)
        ax.plot([r.start, r.end], [r.score, r.score], color=color, lw=3, solid_capstyle="butt")
        ax.text(
            mid,
            r.score + (0.12 if r.score >= 0 else -0.12),
            f"{r.score:+.2f}",
            ha="center",
            va="bottom" if r.score >= 0 else "top",
            fontsize=8,
            color=color,
            fontweight="bold",
        )
        snippet = _snippet(r.transcript, r.end - r.start)
        if snippet:
            # snippets on the other side of the axis from the bar, alternating height so neighbours do not collide
            y = (-0.35 if r.score >= 0 else 0.35) + (-0.9 if r.score >= 0 else 0.9) * (k % 2)
            ax.text(
                mid,
                y,
                snippet,
                ha="center",
                va="top" if r.score >= 0 else "bottom",
                fontsize=7,
                color="#333",
                style="italic",
            )
    for r in results:
        ax.axvline(r.start, color="#bbb", lw=0.5, ls=":")
    ax.set_xlim(0, end)
    ax.set_ylim(-3.3, 3.3)
    ax.set_yticks(range(-3, 4))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("sentiment score")
    networks = sorted({r.network for r in results if r.network})
    scored = [r for r in results if r.score is not None]
    mean = (
        sum(r.score * (r.end - r.start) for r in scored) / max(1e-9, sum(r.end - r.start for r in scored))
        if scored
        else None
    )
    sub = (
        f"{len(results)} segments"
        + (f", network {', '.join(networks)}" if networks else "")
        + (f", duration-weighted mean {mean:+.2f}" if mean is not None else "")
    )
    ax.set_title(f"{title}\n{sub}" if title else sub, fontsize=10)
    ax.grid(axis="y", color="#eee")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
