"""Audio decoding shared by the audio towers (triton_models/_common/audio.py), in-process."""

from __future__ import annotations

import importlib.util
import io
import struct
import sys
import wave
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from mils.tasks.sounds import RATE, Split, encode_samples, render_audio, sounds

AUDIO = Path(__file__).resolve().parents[2] / "triton_models" / "_common" / "audio.py"


@pytest.fixture(scope="module")
def audio() -> ModuleType:
    """_common/audio.py as a module (the model folders import it by path)."""
    spec = importlib.util.spec_from_file_location("mils_common_audio", AUDIO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        scale = (1 << (8 * width - 1)) - 1
        ints = np.round(np.clip(samples, -1, 1) * scale).astype("<i4")
        # little-endian: the low `width` bytes of each 32-bit integer
        out.writeframes(ints.view(np.uint8).reshape(-1, 4)[:, :width].tobytes())
    return buffer.getvalue()


def hour_long_wav_header() -> bytes:
    """A WAV whose header states one hour of 16 kHz audio, followed by 1 s of it."""
    frames = 3600 * RATE
    header = b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE, 2 * RATE, 2, 16)
    header += b"data" + struct.pack("<I", 2 * frames)
    return header + bytes(2 * RATE)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_every_format_decodes_to_the_same_sound(audio: ModuleType, fmt: str) -> None:
    """WAV, FLAC, Ogg/Opus and MP3 of one sound decode to 3 s of mono audio at the asked
    rate, close to the original (lossy codecs within a tolerance)."""
    sound = next(sounds(Split.HELD_OUT))
    reference = sound.render()
    decoded = audio.decode_audio(render_audio(sound, fmt), RATE)
    assert decoded.dtype == np.float32 and abs(len(decoded) - len(reference)) < RATE * 0.1
    if fmt in ("wav", "flac"):
        np.testing.assert_allclose(decoded, reference, atol=1e-4)
    else:  # codec delay shifts lossy formats: compare energy per frequency band
        n = min(len(decoded), len(reference))

        def bands(x: np.ndarray) -> np.ndarray:
            power = np.abs(np.fft.rfft(x[:n])) ** 2
            return power[: len(power) // 64 * 64].reshape(64, -1).sum(axis=1)

        assert np.corrcoef(bands(decoded), bands(reference))[0, 1] > 0.9


def test_stereo_and_other_rates_are_mixed_to_mono_and_resampled(audio: ModuleType) -> None:
    """A 44.1 kHz stereo WAV of a 440 Hz tone (one channel silent) comes out 16 kHz mono,
    at half the amplitude, with its energy still at 440 Hz; 8-bit and 24-bit PCM read too,
    and FLAC is resampled by PyAV."""
    t = np.arange(44_100) / 44_100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, np.zeros_like(tone)], axis=1).reshape(-1)
    out = audio.decode_audio(wav_bytes(stereo, 44_100, channels=2), 16_000)
    assert len(out) == 16_000
    assert abs(np.abs(out[1000:-1000]).max() - 0.25) < 0.01
    assert np.argmax(np.abs(np.fft.rfft(out))) == 440  # 1 s of audio: bin = Hz
    pcm24 = audio.decode_audio(wav_bytes(tone, 44_100, width=3), 44_100)
    np.testing.assert_allclose(pcm24, tone, atol=1e-4)
    flac = encode_samples(tone.astype(np.float32), "flac", rate=44_100)
    assert len(audio.decode_audio(flac, 22_050)) == 22_050


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "audio is empty (0 bytes)"),
        (wav_bytes(np.zeros(0), RATE), "audio is empty"),
        (b"definitely not audio" * 10, "cannot decode AUDIO"),
        (render_audio(next(sounds(Split.HELD_OUT)), "flac")[:40], "cannot decode AUDIO"),
        (hour_long_wav_header(), "audio is 3600 s long; the limit is 30 s"),
    ],
    ids=["no-bytes", "no-samples", "garbage", "truncated-flac", "hour-long-wav"],
)
def test_bad_audio_is_refused_with_a_clear_reason(
    audio: ModuleType, data: bytes, message: str
) -> None:
    """Empty, undecodable, truncated and over-long inputs raise ValueError saying which."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        audio.decode_audio(data, RATE)


def test_over_long_compressed_audio_is_refused_before_decoding_it_all(audio: ModuleType) -> None:
    """A 40 s FLAC is refused at a 30 s limit (its stated length); with the length hidden,
    decoding stops at the limit instead of reading the whole file."""
    long = encode_samples(np.zeros(40 * RATE, np.float32), "flac")
    with pytest.raises(ValueError, match="audio is 40 s long; the limit is 30 s"):
        audio.decode_audio(long, RATE)
    with pytest.raises(ValueError, match="the limit is 10 s"):
        audio.decode_audio(encode_samples(np.zeros(12 * RATE, np.float32), "mp3"), RATE, 10)


def test_a_file_without_an_audio_stream_names_what_it_holds(audio: ModuleType) -> None:
    """A PNG image sent as audio is refused: no audio stream in it."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buffer, format="PNG")
    with pytest.raises(ValueError, match=r"png_pipe file has no audio stream \(video\)"):
        audio.decode_audio(buffer.getvalue(), RATE)
