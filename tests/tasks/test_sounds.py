"""The closed world of sounds: deterministic clips, descriptions true to them, a caption checker."""

from __future__ import annotations

import io
import itertools
import random
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from mils.tasks.sounds import (
    DURATION,
    FORMATS,
    GRAMMAR,
    KINDS,
    LOUDNESSES,
    PARAPHRASE,
    PITCHES,
    RATE,
    Sound,
    Source,
    Split,
    Verdict,
    canonical,
    change_one,
    check_sound_caption,
    describe,
    near_miss,
    render_audio,
    sound_pool,
    sounds,
    write_sounds,
)


def first(split: Split, n: int) -> list[Sound]:
    return list(itertools.islice(sounds(split), n))


def test_sounds_and_samples_are_the_same_on_every_call() -> None:
    """The same split gives the same sounds and byte-identical WAV files; the splits differ."""
    assert first(Split.HELD_OUT, 20) == first(Split.HELD_OUT, 20)
    assert [s.wav() for s in first(Split.DEMO, 3)] == [s.wav() for s in first(Split.DEMO, 3)]
    assert first(Split.TRAIN, 20) != first(Split.HELD_OUT, 20)
    assert list(itertools.islice(sounds(Split.TRAIN, start=5), 3)) == first(Split.TRAIN, 8)[5:]
    for sound in first(Split.HELD_OUT, 50):
        assert 1 <= len(sound.sources) <= 2
        assert len({s.pitch for s in sound.sources}) == len(sound.sources)


def _band_envelope(samples: np.ndarray, hz: float) -> np.ndarray:
    """Energy per 10 ms frame in the band [hz / 1.8, hz * 1.8], smoothed over 50 ms (a hiss
    flickers from frame to frame)."""
    frame = RATE // 100
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1)) ** 2
    freqs = np.fft.rfftfreq(frame, 1 / RATE)
    energy = spectrum[:, (freqs > hz / 1.8) & (freqs < hz * 1.8)].sum(axis=1)
    return np.convolve(energy, np.ones(5) / 5, mode="same")


def test_every_source_is_heard_at_its_pitch_with_its_rhythm_and_loudness() -> None:
    """For one-source sounds, the energy at the source's pitch switches on as many times as
    it has beeps (or stays on, steady), and a loud source peaks well above a quiet one."""
    peaks: dict[str, list[float]] = {name: [] for name in LOUDNESSES}
    singles = [s for s in first(Split.HELD_OUT, 300) if len(s.sources) == 1][:80]
    for sound in singles:
        (source,) = sound.sources
        samples = sound.render()
        assert samples.shape == (round(RATE * DURATION),) and samples.dtype == np.float32
        energy = _band_envelope(samples, PITCHES[source.pitch])
        on = energy > energy.max() / 20
        onsets = int(on[0]) + int(np.sum(on[1:] & ~on[:-1]))
        if source.beeps == 0:
            assert on.mean() > 0.9, (sound, on.mean())
        else:
            assert onsets == source.beeps, (sound, onsets)
        peaks[source.loudness].append(float(np.abs(samples).max()))
    assert min(peaks["loud"]) > 3 * max(peaks["quiet"])


def test_descriptions_from_both_grammars_check_as_exactly_right() -> None:
    """Every generated description (training grammar, paraphrases, the canonical one) is
    true of its sound, and its near miss is not."""
    for index, sound in enumerate(first(Split.HELD_OUT, 400)):
        rng = random.Random(index)
        for text in (describe(sound, rng), describe(sound, rng, PARAPHRASE), canonical(sound)):
            check = check_sound_caption(sound, text)
            assert check.exact and check.mentioned == len(sound.sources), (sound, text)
            assert check.attributes_right == 1.0
        for grammar in (GRAMMAR, PARAPHRASE):
            true, changed = near_miss(sound, index, grammar)
            assert true != changed
            assert not check_sound_caption(sound, changed).exact, (sound, changed)


def test_change_one_changes_exactly_one_attribute() -> None:
    """A near miss differs from its sound in one attribute of one source."""
    for index, sound in enumerate(first(Split.HELD_OUT, 300)):
        other = change_one(sound, random.Random(index))
        changes = sum(
            getattr(a, k) != getattr(b, k)
            for a, b in zip(sound.sources, other.sources, strict=True)
            for k in ("timbre", "pitch", "loudness", "beeps")
        )
        assert changes == 1, (sound, other)
        assert len({s.pitch for s in other.sources}) == len(other.sources)


SOUND = Sound(
    (Source("buzz", "low", "loud", 0), Source("tone", "high", "quiet", 3)),
    seed=1,
)


def verdicts(caption: str) -> dict[str, str]:
    return {k: v.value for k, v in check_sound_caption(SOUND, caption).verdicts.items()}


@pytest.mark.parametrize(
    "caption",
    [
        "a steady loud low buzz and a quiet high tone beeping three times",
        "Three soft high-pitched tones, over a continuous deep loud square wave.",
        "I hear a loud, low buzzer that never stops; also a faint shrill sine tone, 3 beeps",
    ],
)
def test_hand_written_true_captions_are_exact(caption: str) -> None:
    """Other word orders, synonyms, numerals and rhythm said after the source read as right."""
    check = check_sound_caption(SOUND, caption)
    assert check.exact and check.accuracy == 1.0, verdicts(caption)


def test_attributes_bound_to_the_wrong_source_are_wrong() -> None:
    """Swapped loudness is wrong loudness even though both words belong to the sound."""
    assert verdicts("a steady quiet low buzz and a loud high tone beeping three times") == {
        "timbre": "right",
        "pitch": "right",
        "loudness": "wrong",
        "rhythm": "right",
        "count": "right",
    }


def test_partial_wrong_and_off_world_captions_get_their_verdicts() -> None:
    """Unsaid attributes are missing, contradicted ones wrong, off-world text says nothing;
    attributes_right counts each source attribute stated right."""
    assert verdicts("a buzz") == {
        "timbre": "missing",
        "pitch": "missing",
        "loudness": "missing",
        "rhythm": "missing",
        "count": "wrong",
    }
    wrong = verdicts("a steady loud low hiss and a quiet high tone beeping twice")
    assert wrong["timbre"] == wrong["rhythm"] == "wrong"
    assert wrong["pitch"] == wrong["loudness"] == wrong["count"] == "right"
    assert set(verdicts("a dog barks in a busy street").values()) == {"missing"}
    check = check_sound_caption(SOUND, "a steady loud low buzz")
    assert check.attributes_right == 4 / 8 and check.verdicts["count"] is Verdict.WRONG
    assert check_sound_caption(SOUND, "a dog barks").attributes_right == 0.0
    assert list(check_sound_caption(SOUND, "").verdicts) == list(KINDS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_render_audio_writes_each_format_readable_back(fmt: str) -> None:
    """WAV (stdlib), FLAC, Ogg/Opus and MP3 (PyAV) decode back to about DURATION seconds of
    mono audio; FLAC is lossless, so it decodes to exactly the WAV's samples."""
    import av

    sound = first(Split.HELD_OUT, 1)[0]
    data = render_audio(sound, fmt)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert stream.channels == 1
        decoded = np.concatenate(
            [frame.to_ndarray().reshape(-1).astype(np.float64) for frame in container.decode()]
        )
        rate = stream.rate
    assert abs(len(decoded) / rate - DURATION) < 0.1
    if fmt in ("wav", "flac"):
        with wave.open(io.BytesIO(render_audio(sound, "wav"))) as wav:
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
        np.testing.assert_array_equal(decoded, pcm)


def test_unknown_format_is_refused_by_name() -> None:
    """An unknown format names the ones there are."""
    with pytest.raises(ValueError, match="wav, flac, ogg, mp3"):
        render_audio(SOUND, "aiff")


def test_write_sounds_writes_the_held_out_sounds_as_files(tmp_path: Path) -> None:
    """Files named sound-1.wav..., each the rendering of the sound it maps to."""
    written = write_sounds(tmp_path, 3)
    assert [p.name for p in written] == ["sound-1.wav", "sound-2.wav", "sound-3.wav"]
    assert list(written.values()) == first(Split.HELD_OUT, 3)
    assert all(p.read_bytes() == s.wav() for p, s in written.items())
    (flac,) = write_sounds(tmp_path / "f", 1, Split.DEMO, "flac")
    assert flac.suffix == ".flac"


def test_sound_pool_lines_each_describe_one_source() -> None:
    """The default pool: distinct lines, one source each, a prefix of any longer pool."""
    pool = sound_pool(100)
    assert len(pool) == len(set(pool)) == 100
    assert sound_pool(20) == pool[:20]
    assert all(len(check_sound_caption(SOUND, line).verdicts) == len(KINDS) for line in pool)
    mentioned = [check_sound_caption(SOUND, line).mentioned for line in pool]
    assert mentioned.count(1) == len(pool)


def test_import_needs_only_numpy() -> None:
    """The engine process can import the sound world: no PyAV, torch or Pillow at import."""
    code = "import sys, mils.tasks.sounds; print(sorted({'PIL', 'torch', 'av'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
