"""Video decoding for the video towers (motion_video, xclip_video): PyAV, frames sampled evenly.

Clients send the encoded file (mp4, webm, avi, mkv, gif, anything FFmpeg demuxes); this
module opens it from memory, refuses what cannot be a usable clip with a ValueError that
says why (the model turns it into a failure of that request alone), and returns `count`
RGB frames spread evenly over the clip.

Two passes, so that memory holds `count` frames, not the whole clip: the first only demuxes
(no decoding) to count the frames and find the clip's length; the second decodes and keeps
the chosen frames. A clip longer than the limit is refused from its container's stated
duration before anything is decoded, or, when the container states none, as soon as the
demuxer passes the limit.
"""

from __future__ import annotations

import bisect
import io
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

DEFAULT_MAX_SECONDS = 60.0
"""Longest clip a video model accepts (config.pbtxt parameter `max_seconds`)."""
_COMPLETE = 0.9
"""A clip whose frames end before this fraction of its stated length is truncated (some
slack: an audio track may outlast the video a little)."""


def sample_indices(total: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over `total` frames, first and last included
    (indices repeat when the clip has fewer than `count` frames)."""
    return [int(i) for i in np.round(np.linspace(0, total - 1, count))]


def max_seconds(params: dict[str, Any]) -> float:
    """The `max_seconds` parameter of a model's config (parsed JSON), or the default."""
    value = params.get("max_seconds", {}).get("string_value")
    return float(value) if value else DEFAULT_MAX_SECONDS


@contextmanager
def _opened(data: bytes) -> Iterator[Any]:
    import av  # the `local` extra; imported here so that importing this module is cheap

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as exc:  # FFmpeg reports bad input under many error types
        raise ValueError(
            f"cannot decode VIDEO ({len(data)} bytes): not a video file FFmpeg can open "
            f"(an unknown format, or a truncated file: {exc})"
        ) from exc
    try:
        yield container
    finally:
        container.close()


def _video_stream(container: Any, size: int) -> Any:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise ValueError(
            f"cannot decode VIDEO ({size} bytes): the file has no video stream "
            f"(streams: {', '.join(kinds)}); send a video, not an audio file"
        )
    return container.streams.video[0]


def _seconds(container: Any, stream: Any) -> float | None:
    """The clip's stated length, from the stream or the container header (no decoding)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _too_long(seconds: float, limit: float, size: int) -> ValueError:
    return ValueError(
        f"VIDEO ({size} bytes) is {seconds:.1f} s long; the limit is {limit:g} s: send a "
        "shorter clip (or raise max_seconds in the model's config.pbtxt)"
    )


def _frame_times(data: bytes, limit: float) -> tuple[list[float | None], float]:
    """Demux (no decoding): each video frame's start time in seconds (None when the
    container gives none), in presentation order, and when the last frame ends; refuse a
    clip past `limit` s."""
    with _opened(data) as container:
        stream = _video_stream(container, len(data))
        seconds = _seconds(container, stream)
        if seconds is not None and seconds > limit:
            raise _too_long(seconds, limit, len(data))
        starts: list[float | None] = []
        end = 0.0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None or packet.time_base is None:
                    starts.append(None)
                    continue
                starts.append(float(packet.pts * packet.time_base))
                end = max(end, float((packet.pts + packet.duration) * packet.time_base))
                if end > limit:
                    raise _too_long(end, limit, len(data))
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(
                f"cannot decode VIDEO ({len(data)} bytes): the file is truncated or corrupt ({exc})"
            ) from exc
    # A streaming container (mkv, webm) cut short still demuxes: what is left of it ends
    # well before the length its header states.
    if starts and seconds is not None and 0.0 < end < _COMPLETE * seconds:
        raise ValueError(
            f"cannot decode VIDEO ({len(data)} bytes): its frames end at {end:.2f} s of the "
            f"{seconds:.2f} s its header states; the file is truncated"
        )
    known = [t for t in starts if t is not None]
    return (sorted(known) if len(known) == len(starts) else starts), end


def _pick(starts: list[float | None], end: float, count: int) -> list[int]:
    """Which decoded frames to keep: `count` instants spread evenly over the clip's time,
    each taken from the frame shown then. A frame held longer than others (a GIF stores a
    frame that does not change once, with a longer duration) is picked as often as it is
    shown. Without timestamps, frames are spread evenly by index."""
    times = [t for t in starts if t is not None]
    steps = [b - a for a, b in itertools.pairwise(times) if b > a]
    if len(times) < len(starts) or not steps:
        return sample_indices(len(starts), count)
    tick = min(steps)  # the frame rate the clip would have without held frames
    last = end if end > times[-1] else times[-1] + tick  # the last frame is shown too
    ticks = max(1, round((last - times[0]) / tick))
    return [
        bisect.bisect_right(times, times[0] + (i + 0.5) * tick) - 1
        for i in sample_indices(ticks, count)
    ]


def decode_video(
    data: bytes,
    count: int,
    *,
    size: tuple[int, int] | None = None,
    limit: float = DEFAULT_MAX_SECONDS,
) -> list[np.ndarray]:
    """`count` RGB frames (uint8, height x width x 3) spread evenly over the clip in `data`,
    resized to `size` (width, height) when given.

    Raises:
        ValueError: not a container FFmpeg reads, no video stream (an audio file), longer
            than `limit` seconds, truncated or corrupt, or no frame decodes.
    """
    starts, end = _frame_times(data, limit)
    total = len(starts)
    if total == 0:
        raise ValueError(f"cannot decode VIDEO ({len(data)} bytes): it holds no video frame")
    wanted = _pick(starts, end, count)
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    resize = {} if size is None else {"width": size[0], "height": size[1]}
    with _opened(data) as container:
        try:
            for index, frame in enumerate(container.decode(_video_stream(container, len(data)))):
                decoded = index + 1
                if index in wanted:
                    kept[index] = frame.to_ndarray(format="rgb24", **resize)
                if decoded == total:
                    break
        except Exception as exc:
            what = (
                "no video frame decodes"
                if decoded == 0
                else f"frame {decoded + 1} of {total} does not decode"
            )
            raise ValueError(
                f"cannot decode VIDEO ({len(data)} bytes): {what}; the file is corrupt or "
                f"truncated ({exc})"
            ) from exc
    if decoded == 0:
        raise ValueError(f"cannot decode VIDEO ({len(data)} bytes): no video frame decodes")
    if decoded < total:
        raise ValueError(
            f"cannot decode VIDEO ({len(data)} bytes): only {decoded} of its {total} frames "
            "decode; the file is truncated or corrupt"
        )
    return [kept[i] for i in wanted]
