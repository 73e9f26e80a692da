"""The pictures of `mils report`: input thumbnails (Pillow) and score plots (matplotlib).

Each picture comes back as a `data:` URI, so the page holds it inline. Both libraries are
the `report` extra and are imported only when a report is drawn (`import mils.cli` stays
free of them). Sizes are kept small on purpose, since a page holds up to hundreds of them:
thumbnails are JPEG of at most `THUMB_PX` px a side, per-sample plots about 260 x 120 px
PNG, reduced to a small palette (a line plot has few colours; it roughly halves the bytes).

matplotlib is used through `Figure` objects only (no pyplot): no global state, no GUI
backend, nothing left open between calls.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mils.adapters.media import IMAGE_EXTENSIONS
from mils.engine import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["THUMB_PX", "Preview", "SamplePlotter", "overview_plot", "thumbnail"]

THUMB_PX = 128
"""Longest side of an input thumbnail, in pixels."""
_JPEG_QUALITY = 80
_PLOT_COLOURS = 48
_LINE = "#2060c0"
_NEEDS = (
    "mils report draws with matplotlib and Pillow: pip install 'mils[report]' "
    "(scripts/setup.sh installs it)"
)


def check_installed() -> None:
    """Raise ConfigError naming the extra when matplotlib or Pillow is missing."""
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ImportError:
        raise ConfigError(_NEEDS) from None


@dataclass(frozen=True, slots=True)
class Preview:
    """A thumbnail of one input, or why there is none."""

    uri: str | None
    """`data:image/jpeg;base64,...`, or None."""
    note: str | None
    """Why there is no thumbnail ("file missing"), or None."""
    width: int = 0
    """Width to show it at: an image smaller than the thumbnail size is shown enlarged."""
    height: int = 0
    enlarged: bool = False


def thumbnail(source: str, side: int = THUMB_PX) -> Preview:
    """A JPEG thumbnail of the image file `source`, or a note saying why there is none.

    Files are read as they are now: one deleted or moved since the run is reported missing.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(source)
    if not path.is_file():
        return Preview(None, "missing: no file at this path now")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return Preview(None, f"not previewed ({path.suffix or 'no extension'})")
    try:
        with Image.open(path) as image:
            image.draft("RGB", (2 * side, 2 * side))  # JPEG: decode at a reduced size
            small = ImageOps.exif_transpose(image)
            small.thumbnail((side, side))
            rgb = _on_white(small)
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        return Preview(None, f"cannot be read as an image ({type(exc).__name__})")
    data = io.BytesIO()
    rgb.save(data, format="JPEG", quality=_JPEG_QUALITY, optimize=True)
    scale = max(1.0, side / max(rgb.size))  # a 64 px scene is shown at 128 px, not stored so
    return Preview(
        _uri("image/jpeg", data.getvalue()),
        None,
        round(rgb.width * scale),
        round(rgb.height * scale),
        enlarged=scale > 1,
    )


def _on_white(image: Any) -> Any:
    """RGB for JPEG: a transparent image (PNG, GIF) over white, as a viewer shows it."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def _uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _png(figure: Figure, colours: int = _PLOT_COLOURS) -> str:
    """The figure as a palette PNG data: URI."""
    from PIL import Image

    drawn = io.BytesIO()
    figure.savefig(drawn, format="png")  # a Figure without pyplot draws with Agg
    with Image.open(drawn) as rgba:
        small = rgba.convert("RGB").quantize(colors=colours)
    data = io.BytesIO()
    small.save(data, format="PNG", optimize=True)
    return _uri("image/png", data.getvalue())


class SamplePlotter:
    """Draws the best score of one sample by step; one figure reused for every sample."""

    def __init__(self) -> None:
        from matplotlib.figure import Figure

        self._figure = Figure(figsize=(2.6, 1.2), dpi=100)
        self._axes = self._figure.add_axes((0.2, 0.24, 0.76, 0.7))

    def plot(self, scores: Mapping[int, float]) -> str:
        """A PNG data: URI of `scores` (step -> best score after it)."""
        axes = self._axes
        axes.clear()
        steps = sorted(scores)
        axes.plot(steps, [scores[s] for s in steps], color=_LINE, marker="o", markersize=3)
        _style(axes, fontsize=7)
        axes.set_xlabel("step", fontsize=7, labelpad=1)
        if len(steps) == 1:
            axes.set_xlim(steps[0] - 1, steps[0] + 1)
        _integer_steps(axes)
        return _png(self._figure)


def _integer_steps(axes: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _style(axes: Axes, *, fontsize: float) -> None:
    axes.tick_params(labelsize=fontsize, length=2, pad=1)
    axes.grid(alpha=0.3, linewidth=0.5)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


def overview_plot(
    by_step: Mapping[int, Sequence[float]],
    step_times: Sequence[float],
    limit: Sequence[tuple[float, int]],
) -> str:
    """The run at a glance, one panel each: the best scores by step over the samples, steps
    committed over time (when their times are known), and the generators' in-flight limit
    over time (when the log has it). A PNG data: URI."""
    import numpy as np
    from matplotlib.figure import Figure

    panels = 1 + bool(step_times) + bool(limit)
    figure = Figure(figsize=(4.2 * panels, 2.8), dpi=100)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    figure.subplots_adjust(left=0.08 if panels > 1 else 0.14, right=0.98, bottom=0.17, top=0.88,
                           wspace=0.3)  # fmt: skip
    steps = sorted(by_step)
    if steps:
        q = np.array([np.percentile(by_step[s], (10, 50, 90)) for s in steps])
        axes[0].fill_between(steps, q[:, 0], q[:, 2], color=_LINE, alpha=0.2, label="10-90 %")
        axes[0].plot(steps, q[:, 1], color=_LINE, marker="o", markersize=3, label="median")
        axes[0].plot(steps, [np.mean(by_step[s]) for s in steps], color="#c05020",
                     linestyle="--", linewidth=1, label="mean")  # fmt: skip
        axes[0].legend(fontsize=7, frameon=False)
        _integer_steps(axes[0])
    _titled(axes[0], "best score by step (samples that committed it)", "step")
    panel = 1
    if step_times:
        size, unit = _unit(step_times[-1] - step_times[0])
        since = [(t - step_times[0]) / size for t in step_times]
        axes[panel].step(since, range(1, len(since) + 1), where="post", color=_LINE)
        _titled(axes[panel], "steps committed over time", f"{unit} since the first")
        panel += 1
    if limit:
        start = limit[0][0]
        size, unit = _unit(limit[-1][0] - start)
        axes[panel].step([(t - start) / size for t, _ in limit], [v for _, v in limit],
                         where="post", color=_LINE)  # fmt: skip
        _titled(axes[panel], "generator in-flight limit (log.jsonl)", f"{unit} since the first")
    return _png(figure, colours=96)


def _unit(span_s: float) -> tuple[float, str]:
    """Seconds per unit, and its name, to show a time span of `span_s` seconds."""
    if span_s < 180:
        return 1, "seconds"
    return (60, "minutes") if span_s < 3 * 3600 else (3600, "hours")


def _titled(axes: Axes, title: str, xlabel: str) -> None:
    _style(axes, fontsize=8)
    axes.set_title(title, fontsize=9)
    axes.set_xlabel(xlabel, fontsize=8)
