"""Audio bytes -> mono float32 samples at the rate a network wants, or ValueError saying why.

Shared by the audio towers (sound_audio, clap_audio). PCM WAV is read with the standard
library and numpy; every other container (FLAC, Ogg, MP3, float WAV, ...) with PyAV, which
also mixes down to mono and resamples. Refusals are ValueErrors, so that with
`batching.respond` the request that sent them fails alone:

- no bytes, or a file with no samples: "audio is empty";
- bytes no decoder reads, or a file with no audio stream (an image, a video without sound);
- audio longer than `max_seconds`, found from the header where the container states its
  length (WAV always; FLAC, Ogg, MP3 usually) before anything is decoded, else by counting
  while decoding and stopping at the limit: an hour-long file is never held in memory.
"""

from __future__ import annotations

import io
import wave

import numpy as np

MAX_SECONDS = 30.0
"""Default limit on the length of one audio input."""


def _too_long(seconds: float, max_seconds: float) -> ValueError:
    return ValueError(
        f"audio is {seconds:.0f} s long; the limit is {max_seconds:.0f} s (cut the file, or "
        "raise the model's max_seconds parameter in its config.pbtxt)"
    )


def resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    """Band-limited resampling (FFT: truncate or zero-pad the spectrum)."""
    if source == target or len(samples) == 0:
        return samples.astype(np.float32)
    n = max(1, round(len(samples) * target / source))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    out = np.fft.irfft(spectrum[: n // 2 + 1], n) * (n / len(samples))
    return out.astype(np.float32)


def _pcm_wav(data: bytes, max_seconds: float) -> tuple[np.ndarray, int] | None:
    """(mono samples, rate) of an integer-PCM WAV; None when the stdlib cannot read it (a
    float or compressed WAV: PyAV then tries)."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.getnframes()
            if rate <= 0:
                raise ValueError(f"cannot decode AUDIO: the WAV header gives {rate} Hz")
            if frames / rate > max_seconds:
                raise _too_long(frames / rate, max_seconds)
            raw = wav.readframes(frames)
    except (wave.Error, EOFError):
        return None
    usable = len(raw) // (width * channels) * width * channels
    raw = raw[:usable]
    if width == 1:
        ints = np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32)
    elif width in (2, 4):
        ints = np.frombuffer(raw, f"<i{width}").astype(np.float32)
    else:
        return None
    scale = float(1 << (8 * width - 1))
    return (ints / scale).reshape(-1, channels).mean(axis=1), rate


def _with_pyav(data: bytes, rate: int, max_seconds: float) -> np.ndarray:
    """Decode any container FFmpeg reads, mixed to mono and resampled to `rate`."""
    try:
        import av
    except ImportError as exc:  # the server's environment lacks the `local` extra
        raise ValueError(
            "cannot decode AUDIO: only PCM WAV is readable without PyAV; install it "
            "(pip install av) in the Triton server's environment"
        ) from exc
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                kinds = sorted({s.type for s in container.streams}) or ["no streams"]
                raise ValueError(
                    f"cannot decode AUDIO ({len(data)} bytes): the {container.format.name} "
                    f"file has no audio stream ({', '.join(kinds)})"
                )
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                stated = float(stream.duration * stream.time_base)
            else:
                stated = (container.duration or 0) / 1e6
            if stated > max_seconds:
                raise _too_long(stated, max_seconds)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks: list[np.ndarray] = []
            total, limit = 0, round(max_seconds * rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += len(chunks[-1])
                if total > limit:
                    raise _too_long(total / rate, max_seconds)  # at least this long
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot decode AUDIO ({len(data)} bytes): {exc}") from exc
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate(chunks).astype(np.float32)


def decode_audio(data: bytes, rate: int, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Encoded audio -> mono float32 samples at `rate` Hz, or ValueError naming the problem."""
    if not data:
        raise ValueError("audio is empty (0 bytes)")
    pcm = _pcm_wav(data, max_seconds) if data[:4] == b"RIFF" and data[8:12] == b"WAVE" else None
    if pcm is not None:
        samples = resample(pcm[0], pcm[1], rate)
    else:
        samples = _with_pyav(data, rate, max_seconds)
    if len(samples) == 0:
        raise ValueError(f"audio is empty: the file ({len(data)} bytes) holds no samples")
    return samples
