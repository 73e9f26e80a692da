"""Audio captioning: find the text the audio scorer finds closest to the sound."""

from __future__ import annotations

from mils.engine.config import LoopConfig
from mils.tasks.base import DATA_DIR, EmbeddingSpec, Input, InputKind, ScorerModels, Task

__all__ = ["TASK"]

SYSTEM_PROMPT = (
    "You write short, accurate, literal captions for sound recordings: what is heard. "
    "You reply only with a numbered list of captions, one per line."
)

PROMPT_TEMPLATE = """\
Below are captions for one sound recording, each with a similarity score against the \
sound (higher is better), worst first:

{candidates}

Write {requested} new captions for the same recording that would score higher than all \
of the above. Combine and vary what the best ones say. Each caption is very short (about \
10 words), concrete and specific to this sound: what makes it, how it sounds (high or low, \
loud or quiet, steady or in beats, how many times), where it is heard.
Reply with a numbered list only (1., 2., 3., ...), one new caption per line.
"""

TASK = Task(
    name="audio-caption",
    summary="caption sounds: the text an audio-text scorer finds closest to each recording",
    inputs=(Input(name="audio", kind=InputKind.AUDIO, help="an audio file"),),
    objective=EmbeddingSpec(target="audio"),
    system_prompt=SYSTEM_PROMPT,
    prompt_template=PROMPT_TEMPLATE,
    pool_file=DATA_DIR / "audio_captions.txt",
    completion_header=(
        "Short captions of one sound recording, saying what is heard, each with its "
        "similarity to the sound (higher is better), from worst to best:"
    ),
    strip_annotations=True,
    # The MILS paper's audio captioning (Clotho, ImageBind): 19 steps, keep 10, 50 requested.
    loop=LoopConfig(steps=19, keep=10, requested=50),
    scorer=ScorerModels(text="clap_text", target="clap_audio", target_input="AUDIO"),
)
