"""The closed world of sounds: generated clips whose ground truth is known, and captions checked
against it.

The audio half of the offline stack's closed world (`mils.tasks.scenes` is the image half, and
its template): no real audio-text weights can be downloaded where the offline stack runs, so
its audio scorer (`triton_models/_sound_clap`) is trained here on this world, and captions of
its sounds can be said to be *right*, not only to score well.

A sound is a 3-second, 16 kHz mono clip of one or two sources at distinct pitches. Each
source has a timbre (a pure tone, a square-wave buzz, a band of hiss, a rising chirp), a pitch
(low, medium, high), a loudness (quiet, loud) and a rhythm (steady, or one to four beeps). A
sound is a pure value, rendered deterministically with numpy from its own seed (the seed only
jitters the exact frequency, the beat timing and a faint noise floor), so the same sound is
the same samples on every machine. Descriptions come from a small grammar; a second grammar,
never used for training (`PARAPHRASE`), measures how the scorer reads phrasings it has not
seen.

Needs only numpy at import; encoding to FLAC/Ogg/MP3 imports PyAV (`av`) when asked for.
"""

from __future__ import annotations

import io
import itertools
import random
import re
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mils.tasks._checks import CaptionCheck, Split, Verdict

__all__ = [
    "DURATION",
    "FORMATS",
    "GRAMMAR",
    "KINDS",
    "LOUDNESSES",
    "PARAPHRASE",
    "PITCHES",
    "RATE",
    "RHYTHMS",
    "TIMBRES",
    "CaptionCheck",
    "Grammar",
    "Sound",
    "Source",
    "Split",
    "Verdict",
    "canonical",
    "change_one",
    "check_sound_caption",
    "describe",
    "encode_samples",
    "make_sound",
    "near_miss",
    "render_audio",
    "sound_pool",
    "sounds",
    "write_sounds",
]

RATE = 16_000
"""Samples per second of a rendered sound (mono)."""
DURATION = 3.0
"""Seconds of every rendered sound."""
FORMATS = ("wav", "flac", "ogg", "mp3")
"""Containers `render_audio` writes (WAV with the standard library, the rest with PyAV)."""

TIMBRES = ("tone", "buzz", "hiss", "chirp")
PITCHES: dict[str, float] = {"low": 220.0, "medium": 660.0, "high": 1980.0}
"""Pitch name -> centre frequency in Hz (a tone's frequency; the middle of a hiss's band)."""
LOUDNESSES: dict[str, float] = {"quiet": 0.05, "loud": 0.4}
"""Loudness name -> peak amplitude (about 18 dB apart)."""
RHYTHMS = (0, 1, 2, 3, 4)
"""0: steady for the whole clip; n > 0: n beeps."""
KINDS = ("timbre", "pitch", "loudness", "rhythm", "count")
"""The attribute kinds a caption is checked on (count: how many sources)."""

_BEEP = 0.2  # seconds a beep lasts
_PERIOD = 0.6  # seconds from one beep's start to the next
_FADE = 0.01  # seconds of raised-cosine fade at each edge (no clicks)
_FLOOR = 0.003  # amplitude of the white noise floor under every sound


@dataclass(frozen=True, slots=True)
class Source:
    """One source of a sound."""

    timbre: str
    pitch: str
    loudness: str
    beeps: int
    """0: steady; else how many beeps."""


@dataclass(frozen=True, slots=True)
class Sound:
    """A sound: its sources (at distinct pitches) and the seed of its samples.

    The seed only jitters frequencies (a few percent), beat timing and the noise floor; two
    sounds with the same sources and different seeds sound the same to a listener.
    """

    sources: tuple[Source, ...]
    seed: int

    def render(self) -> np.ndarray:
        """The sound as RATE * DURATION float32 samples in [-1, 1]."""
        rng = np.random.default_rng(self.seed)
        n = round(RATE * DURATION)
        out = rng.normal(0.0, _FLOOR, n)
        for source in self.sources:
            out += _render_source(source, n, rng)
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def wav(self) -> bytes:
        """The rendered sound as a 16-bit PCM WAV file."""
        return render_audio(self, "wav")


def _envelope(source: Source, n: int, rng: np.random.Generator) -> np.ndarray:
    """0..1 gain over time: on for the whole clip, or on during each beep."""
    t = np.arange(n) / RATE
    fade = round(_FADE * RATE)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, fade))
    if source.beeps == 0:
        spans = [(round(0.05 * RATE), n - round(0.05 * RATE))]
    else:
        room = DURATION - 0.1 - (source.beeps - 1) * _PERIOD - _BEEP
        start = 0.05 + rng.uniform(0.0, room)
        spans = [
            (round((start + i * _PERIOD) * RATE), round((start + i * _PERIOD + _BEEP) * RATE))
            for i in range(source.beeps)
        ]
    gain = np.zeros_like(t)
    for a, b in spans:
        gain[a:b] = 1.0
        gain[a : a + fade] = ramp
        gain[b - fade : b] = ramp[::-1]
    return gain


def _render_source(source: Source, n: int, rng: np.random.Generator) -> np.ndarray:
    f = PITCHES[source.pitch] * rng.uniform(0.97, 1.03)
    t = np.arange(n) / RATE
    if source.timbre == "tone":
        wave_ = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    elif source.timbre == "buzz":  # a square wave, band-limited to its first odd harmonics
        phase = 2 * np.pi * f * t
        wave_ = sum(np.sin(k * phase) / k for k in (1, 3, 5, 7, 9) if k * f < RATE / 2) * 1.1
    elif source.timbre == "hiss":  # white noise, kept to the band [f / 1.5, f * 1.5]
        spectrum = np.fft.rfft(rng.normal(0.0, 1.0, n))
        freqs = np.fft.rfftfreq(n, 1 / RATE)
        spectrum[(freqs < f / 1.5) | (freqs > f * 1.5)] = 0
        wave_ = np.fft.irfft(spectrum, n)
        wave_ /= np.abs(wave_).max() + 1e-9
    elif source.timbre == "chirp":
        # rising from f / 1.6 to f * 1.6 over 0.2 s, again and again (a steady chirp warbles;
        # the sweeps run on the clip's clock, not the beeps': a beep may start mid-sweep)
        sweep = (t % _BEEP) / _BEEP
        freq = f * 1.6 ** (2 * sweep - 1)
        wave_ = np.sin(2 * np.pi * np.cumsum(freq) / RATE)
    else:
        raise ValueError(f"unknown timbre {source.timbre!r}; choose one of {', '.join(TIMBRES)}")
    level = LOUDNESSES[source.loudness] * rng.uniform(0.9, 1.1)
    return level * wave_ * _envelope(source, n, rng)


def make_sound(rng: random.Random) -> Sound:
    """A random sound: one or two sources at distinct pitches."""
    count = rng.choice((1, 2, 2))
    pitches = rng.sample(list(PITCHES), count)
    sources = tuple(
        Source(rng.choice(TIMBRES), pitch, rng.choice(list(LOUDNESSES)), rng.choice(RHYTHMS))
        for pitch in pitches
    )
    return Sound(sources, rng.getrandbits(63))


def sounds(split: Split, start: int = 0) -> Iterator[Sound]:
    """The sounds of `split`, from index `start` on: the same sequence on every call."""
    for index in itertools.count(start):
        yield make_sound(random.Random(f"sound:{split.name}:{index}"))


# ---------------------------------------------------------------------------------------------
# Encoding


def _pcm16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767).round().astype("<i2")


def _wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(_pcm16(samples).tobytes())
    return buffer.getvalue()


# fmt -> (container, codec, sample format): Ogg carries Opus (FFmpeg's Vorbis encoder is
# experimental); MP3 is LAME.
_AV_CODECS = {
    "flac": ("flac", "flac", "s16"),
    "ogg": ("ogg", "libopus", "s16"),
    "mp3": ("mp3", "libmp3lame", "s16p"),
}


def encode_samples(samples: np.ndarray, fmt: str, rate: int = RATE) -> bytes:
    """Mono float samples in [-1, 1] as an encoded file of `fmt` (one of FORMATS)."""
    if fmt == "wav" and rate == RATE:
        return _wav(samples)
    if fmt not in _AV_CODECS:
        raise ValueError(f"unknown audio format {fmt!r}; choose one of {', '.join(FORMATS)}")
    import av  # the `local` extra; only the code that writes compressed files needs it

    container, codec, layout = _AV_CODECS[fmt]
    pcm = _pcm16(samples)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        if fmt != "flac":
            stream.bit_rate = 64_000  # LAME's default at 16 kHz (24 kb/s) cuts above 6 kHz
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format=layout, layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def render_audio(sound: Sound, fmt: str = "wav") -> bytes:
    """`sound` rendered and encoded as `fmt` (one of FORMATS: "wav", "flac", "ogg", "mp3").

    WAV needs only the standard library; the others import PyAV (the `local` extra).

    Raises:
        ValueError: an unknown format.
    """
    return encode_samples(sound.render(), fmt)


def write_sounds(
    dest_dir: Path,
    count: int,
    split: Split = Split.HELD_OUT,
    fmt: str = "wav",
    prefix: str = "sound",
) -> dict[Path, Sound]:
    """Write the first `count` sounds of `split` into `dest_dir` as `{prefix}-{i}.{fmt}`
    (i from 1); path -> its sound. The same files on every call."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, sound in zip(range(count), sounds(split), strict=False):
        path = dest_dir / f"{prefix}-{index + 1}.{fmt}"
        path.write_bytes(render_audio(sound, fmt))
        written[path] = sound
    return written


# ---------------------------------------------------------------------------------------------
# Descriptions


@dataclass(frozen=True, slots=True)
class _Words:
    """The words one grammar picks from, per attribute value."""

    timbres: dict[str, tuple[tuple[str, str], ...]]  # timbre -> (singular, plural) choices
    pitches: dict[str, tuple[str, ...]]
    loudnesses: dict[str, tuple[str, ...]]
    steady: tuple[str, ...]  # before the noun: "a steady ..."
    held: tuple[str, ...]  # after the noun: "a ... buzz, held steady"
    times: dict[int, tuple[str, ...]]  # after the noun: "a ... tone beeping twice"


_TRAIN_WORDS = _Words(
    timbres={
        "tone": (("tone", "tones"), ("pure tone", "pure tones"), ("sine tone", "sine tones")),
        "buzz": (("buzz", "buzzes"), ("square wave", "square waves"), ("buzzer", "buzzers")),
        "hiss": (("hiss", "hisses"), ("noise burst", "noise bursts")),
        "chirp": (("chirp", "chirps"), ("sweep", "sweeps")),
    },
    pitches={
        "low": ("low", "low-pitched", "deep"),
        "medium": ("medium", "mid-pitched"),
        "high": ("high", "high-pitched"),
    },
    loudnesses={"quiet": ("quiet", "soft", "faint"), "loud": ("loud",)},
    steady=("steady", "continuous", "constant"),
    held=("held steady", "that never stops", "sounding continuously"),
    times={
        1: ("beeping once", "sounding once"),
        2: ("beeping twice", "beeping two times", "sounding twice"),
        3: ("beeping three times", "sounding three times"),
        4: ("beeping four times", "sounding four times"),
    },
)
# Unseen words share character n-grams with training words (lowish/low, loudly/loud,
# steadily/steady); a synonym sharing none could not be read by any n-gram model.
_PARAPHRASE_WORDS = _Words(
    timbres={
        "tone": (("tone", "tones"), ("clean sine tone", "clean sine tones")),
        "buzz": (("buzz", "buzzes"), ("harsh buzz", "harsh buzzes")),
        "hiss": (("hiss", "hisses"), ("hiss burst", "hiss bursts")),
        "chirp": (("chirp", "chirps"), ("rising sweep", "rising sweeps")),
    },
    pitches={
        "low": ("lowish", "low", "deep-pitched"),
        "medium": ("medium-pitched", "mid-range"),
        "high": ("highish", "high", "very high"),
    },
    loudnesses={"quiet": ("quiet", "very soft", "faint"), "loud": ("loud", "very loud")},
    steady=("steady", "continuous", "unbroken"),
    held=("going on steadily", "playing continuously", "held constant"),
    times={
        1: ("pulsing once", "heard once"),
        2: ("pulsing twice", "heard twice"),
        3: ("pulsing three times", "heard three times"),
        4: ("pulsing four times", "heard four times"),
    },
)
_NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}


def _adjectives(words: _Words, source: Source, rng: random.Random) -> str:
    loud, pitch = (
        rng.choice(words.loudnesses[source.loudness]),
        rng.choice(words.pitches[source.pitch]),
    )
    return f"{loud} {pitch}" if rng.random() < 0.7 else f"{pitch} {loud}"


def _phrase(words: _Words, source: Source, rng: random.Random) -> str:
    """One source as a noun phrase: "a steady loud low buzz", "three quiet high chirps",
    "a soft medium tone beeping twice"."""
    singular, plural = rng.choice(words.timbres[source.timbre])
    adjectives = _adjectives(words, source, rng)
    if source.beeps == 0:
        if rng.random() < 0.6:
            return _a(f"{rng.choice(words.steady)} {adjectives} {singular}")
        return _a(f"{adjectives} {singular} {rng.choice(words.held)}")
    if source.beeps > 1 and rng.random() < 0.5:
        return f"{_NUMBERS[source.beeps]} {adjectives} {plural}"
    if source.beeps == 1 and rng.random() < 0.4:
        return f"a single short {adjectives} {singular}"
    return _a(f"{adjectives} {singular} {rng.choice(words.times[source.beeps])}")


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _join(parts: Sequence[str], rng: random.Random) -> str:
    if len(parts) == 1:
        return parts[0]
    return rng.choice((" and ", ", and ", " with ", "; ")).join(parts)


def _train_template(sound: Sound, rng: random.Random) -> str:
    sources = list(sound.sources)
    rng.shuffle(sources)
    body = _join([_phrase(_TRAIN_WORDS, s, rng) for s in sources], rng)
    prefix = rng.choice(("", "", "", "the sound of ", "a recording of ", "you can hear "))
    if len(sources) == 2 and rng.random() < 0.3:
        prefix = rng.choice(("two sounds: ", "two sources: "))
    text = prefix + body
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def _paraphrase_template(sound: Sound, rng: random.Random) -> str:
    """Sentence shapes the training grammar never produces: lists, sentences, chat."""
    words = _PARAPHRASE_WORDS
    sources = list(sound.sources)
    rng.shuffle(sources)
    style = rng.randrange(3)
    if style == 0:  # "I hear a lowish loud buzz pulsing twice. There is also ..."
        sentences = [f"I hear {_phrase(words, sources[0], rng)}."]
        sentences += [f"There is also {_phrase(words, s, rng)}." for s in sources[1:]]
        return " ".join(sentences)
    phrases = [_phrase(words, s, rng) for s in sources]
    if style == 1:
        opener = rng.choice(("In this clip:", "Audio clip -", "Heard here:"))
        return f"{opener} {_join(phrases, rng)}. Nothing else."
    opener = rng.choice(("It sounds like", "Honestly, this is", "What I hear is"))
    return f"{opener} {_join(phrases, rng)}, nothing more."


Grammar = Callable[[Sound, random.Random], str]
GRAMMAR: Grammar = _train_template
"""The grammar the scorer trains on."""
PARAPHRASE: Grammar = _paraphrase_template
"""A grammar never used in training: how the scorer reads unseen phrasings."""


def canonical(sound: Sound) -> str:
    """The plain ground truth: sources from low to high pitch, every attribute."""
    order = sorted(sound.sources, key=lambda s: list(PITCHES).index(s.pitch))
    parts = []
    for s in order:
        rhythm = "held steady" if s.beeps == 0 else _TRAIN_WORDS.times[s.beeps][0]
        parts.append(_a(f"{s.loudness} {s.pitch} {s.timbre} {rhythm}"))
    return " and ".join(parts)


def describe(sound: Sound, rng: random.Random, grammar: Grammar = GRAMMAR) -> str:
    """One true description of `sound`; `rng` picks the phrasing."""
    return grammar(sound, rng)


def change_one(sound: Sound, rng: random.Random) -> Sound:
    """`sound` with exactly one attribute of one source changed (its timbre, pitch, loudness
    or rhythm). Described with the same phrasing, it is a near miss."""
    index = rng.randrange(len(sound.sources))
    source = sound.sources[index]
    kind = rng.choice(("timbre", "pitch", "loudness", "rhythm"))
    taken = {s.pitch for s in sound.sources}
    if kind == "pitch" and len(taken) == len(PITCHES):
        kind = "timbre"  # no free pitch to move to (sources stay at distinct pitches)
    if kind == "timbre":
        source = replace(source, timbre=rng.choice([t for t in TIMBRES if t != source.timbre]))
    elif kind == "pitch":
        source = replace(source, pitch=rng.choice([p for p in PITCHES if p not in taken]))
    elif kind == "loudness":
        source = replace(source, loudness=next(q for q in LOUDNESSES if q != source.loudness))
    else:
        source = replace(source, beeps=rng.choice([b for b in RHYTHMS if b != source.beeps]))
    sources = (*sound.sources[:index], source, *sound.sources[index + 1 :])
    return replace(sound, sources=sources)


def near_miss(sound: Sound, seed: int, grammar: Grammar = GRAMMAR) -> tuple[str, str]:
    """A true description of `sound` and, in the same phrasing, one of a `change_one` of it."""
    rng = random.Random(seed)
    true = describe(sound, random.Random(seed), grammar)
    while True:
        changed = describe(change_one(sound, rng), random.Random(seed), grammar)
        if changed != true:
            return true, changed


def sound_pool(lines: int = 300) -> list[str]:
    """A default initial pool for sounds: descriptions of single sources of training sounds.

    Each line names one source only, so for a sound of two sources no line is the answer;
    the loop has to combine and correct them. The first `n` lines are the same for every
    `lines` >= `n`.
    """
    rng = random.Random("sound-pool")
    texts: dict[str, None] = {}
    for sound in sounds(Split.TRAIN, start=10_000_000):
        single = Sound((rng.choice(sound.sources),), sound.seed)
        texts[describe(single, rng)] = None
        if len(texts) == lines:
            break
    return list(texts)


# ---------------------------------------------------------------------------------------------
# Checking a free-text caption


def _lexicon() -> dict[str, tuple[str, str]]:
    """Word (or two words joined by a space) -> (kind, value)."""
    lex: dict[str, tuple[str, str]] = {}
    for timbre, forms in {
        "tone": "tone tones sine_tone sine_tones pure_tone pure_tones sine_wave sine_waves",
        "buzz": "buzz buzzes buzzer buzzers square_wave square_waves",
        "hiss": "hiss hisses noise_burst noise_bursts hiss_burst hiss_bursts white_noise",
        "chirp": "chirp chirps sweep sweeps",
    }.items():
        for form in forms.split():
            plural = form.endswith("s") and form != "hiss"
            lex[form.replace("_", " ")] = ("plural" if plural else "timbre", timbre)
    for pitch, forms in {
        "low": "low lowish deep bass",
        "medium": "medium mid middle",
        "high": "high highish shrill",
    }.items():
        for form in forms.split():
            lex[form] = ("pitch", pitch)
    for loudness, forms in {"quiet": "quiet soft faint", "loud": "loud"}.items():
        for form in forms.split():
            lex[form] = ("loudness", loudness)
    for form in [
        "steady",
        "steadily",
        "continuous",
        "continuously",
        "constant",
        "unbroken",
        "sustained",
    ]:
        lex[form] = ("rhythm", "0")
    lex |= {"held steady": ("rhythm", "0"), "never stops": ("rhythm", "0")}
    for n, word in _NUMBERS.items():
        lex[word] = ("number", str(n))
        lex[str(n)] = ("number", str(n))
        lex[f"{word} times"] = ("rhythm", str(n))
        lex[f"{n} times"] = ("rhythm", str(n))
    lex |= {"single": ("number", "1"), "a": ("number", "1"), "an": ("number", "1")}
    lex |= {"once": ("rhythm", "1"), "twice": ("rhythm", "2"), "thrice": ("rhythm", "3")}
    lex |= {"short": ("short", "1")}
    for form in ["beeps", "pulses", "blips"]:
        lex[form] = ("beep_word", "")
    for form in ["sounds", "sources"]:
        lex[form] = ("source_word", "")
    return lex


_LEXICON = _lexicon()


@dataclass(slots=True)
class _Mention:
    timbre: str
    pitch: str | None
    loudness: str | None
    beeps: int | None


def _items(caption: str) -> list[tuple[str, str]]:
    """The caption's attribute words in order, as (kind, value); two-word entries first."""
    tokens = re.findall(r"[a-z]+|\d+", caption.lower())
    items, i = [], 0
    while i < len(tokens):
        pair = " ".join(tokens[i : i + 2])
        word = pair if pair in _LEXICON else tokens[i]
        if word in _LEXICON:
            items.append(_LEXICON[word])
        i += 1 + (word == pair)
    return items


def _mentions(caption: str) -> list[_Mention]:
    """The sources a caption describes.

    Pitch and loudness bind to the next timbre word. A number binds, as a beep count, to a
    plural timbre word ("three buzzes") or to "beeps" ("3 beeps"); before a singular one it
    only counts the source ("a", "one"). A rhythm word ("steady", "twice", "four times")
    binds to the last source when that one still lacks a rhythm and nothing is pending for
    the next, else to the next ("a loud buzz beeping twice", "a steady hiss").
    """
    mentions: list[_Mention] = []
    pitch = loudness = None
    number: int | None = None
    rhythm: int | None = None  # said before its source
    short = False
    for kind, value in _items(caption):
        if kind in ("timbre", "plural"):
            beeps = rhythm
            if kind == "plural" and beeps is None:
                beeps = number if number is not None and number > 1 else None
            if beeps is None and short:
                beeps = 1
            mentions.append(_Mention(value, pitch, loudness, beeps))
            pitch = loudness = number = rhythm = None
            short = False
        elif kind == "pitch":
            pitch = value
        elif kind == "loudness":
            loudness = value
        elif kind == "number":
            number = int(value)
        elif kind == "short":
            short = True
        elif kind == "source_word":
            number = None
        elif kind in ("rhythm", "beep_word"):
            if kind == "beep_word":
                if number is None:
                    continue
                value, number = str(number), None
            pending = pitch or loudness or short or rhythm is not None or number is not None
            if mentions and mentions[-1].beeps is None and not pending:
                mentions[-1].beeps = int(value)
            else:
                rhythm = int(value)
    return mentions


_SOURCE_KINDS = ("timbre", "pitch", "loudness", "rhythm")


def _said(mention: _Mention, kind: str) -> str | int | None:
    return mention.beeps if kind == "rhythm" else getattr(mention, kind)


def _true(source: Source, kind: str) -> str | int:
    return source.beeps if kind == "rhythm" else getattr(source, kind)


def _agreement(said: _Mention, true: Source) -> int:
    """How well a described source fits a true one (pitch counts double: it tells the two
    sources apart, as position does in scenes)."""
    weights = {"timbre": 1, "pitch": 2, "loudness": 1, "rhythm": 1}
    return sum(w * (_said(said, k) == _true(true, k)) for k, w in weights.items())


def check_sound_caption(sound: Sound, caption: str) -> CaptionCheck:
    """Which attributes of `sound` the free-text `caption` gets right.

    The caption's sources are matched to the sound's (the pairing that agrees most); each
    source attribute kind is RIGHT when every source's value is stated and right, WRONG when
    some matched source states it wrongly (or a source is described that is not there),
    MISSING otherwise. Count is RIGHT when the caption describes as many sources as there
    are. `exact` needs every kind RIGHT (`CaptionCheck.optional` is empty here).
    """
    said = _mentions(caption)
    truth = list(sound.sources)
    k = min(len(said), len(truth))
    best: list[tuple[_Mention, Source]] = []
    best_score = -1
    for chosen in itertools.permutations(range(len(truth)), k):
        for picked in itertools.combinations(range(len(said)), k):
            pairs = [(said[s], truth[t]) for s, t in zip(picked, chosen, strict=True)]
            score = sum(_agreement(s, t) for s, t in pairs)
            if score > best_score:
                best, best_score = pairs, score
    verdicts: dict[str, Verdict] = {}
    for kind in _SOURCE_KINDS:
        stated = [(_said(s, kind), _true(t, kind)) for s, t in best if _said(s, kind) is not None]
        if any(a != b for a, b in stated) or (kind == "timbre" and len(said) > len(truth)):
            verdicts[kind] = Verdict.WRONG
        elif len(stated) == len(truth):
            verdicts[kind] = Verdict.RIGHT
        else:
            verdicts[kind] = Verdict.MISSING
    verdicts["count"] = (
        Verdict.MISSING if not said else Verdict.RIGHT if len(said) == len(truth) else Verdict.WRONG
    )
    right = sum(_said(s, k) == _true(t, k) for s, t in best for k in _SOURCE_KINDS)
    return CaptionCheck(
        verdicts={k: verdicts[k] for k in KINDS},
        mentioned=len(said),
        attributes_right=right / (len(_SOURCE_KINDS) * len(truth)),
        optional=(),
    )
