"""Small media files that are not good clips, made with PyAV for the video decoding tests:
an audio-only file, an over-long clip, a clip whose frames do not decode."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np


def audio_only(path: Path) -> bytes:
    """A one-second silent WAV: a valid container with no video stream."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path.read_bytes()


def long_clip(seconds: int, *, garbage: bool = False) -> bytes:
    """A 16x16 H.264 mp4 at one frame a second lasting `seconds`; with `garbage`, an mkv
    whose MPEG-4 packets are junk (its header still states the length)."""
    import av

    buffer = io.BytesIO()
    fmt, codec = ("matroska", "mpeg4") if garbage else ("mp4", "libx264")
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=1)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for i in range(seconds):
            if garbage:
                container.mux(_junk_packet(stream, i, Fraction(1, 1)))
            else:
                pixels = np.full((16, 16, 3), i % 256, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        if not garbage:
            container.mux(stream.encode(None))
    return buffer.getvalue()


def undecodable_clip(frames: int = 8) -> bytes:
    """An mkv with an MPEG-4 video stream whose packets are junk: it opens, lists
    `frames` frames, and none decodes."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            container.mux(_junk_packet(stream, i, Fraction(1, 8)))
    return buffer.getvalue()


def _junk_packet(stream: object, index: int, time_base: Fraction) -> object:
    import av

    packet = av.Packet(bytes([7]) * 200)
    packet.stream = stream
    packet.pts = packet.dts = index
    packet.time_base = time_base
    packet.duration = 1
    return packet
