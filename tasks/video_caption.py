"""Video captioning: find the text the video scorer finds closest to the clip."""

from __future__ import annotations

from mils.engine.config import LoopConfig
from mils.tasks.base import DATA_DIR, EmbeddingSpec, Input, InputKind, ScorerModels, Task

__all__ = ["TASK"]

SYSTEM_PROMPT = (
    "You write short, accurate, literal captions for video clips: what is seen happening. "
    "You reply only with a numbered list of captions, one per line."
)

PROMPT_TEMPLATE = """\
Below are captions for one video clip, each with a similarity score against the clip \
(higher is better), worst first:

{candidates}

Write {requested} new captions for the same clip that would score higher than all of the \
above. Combine and vary what the best ones say. Each caption is very short (about 10 \
words), concrete and specific to this clip: what is in it, what happens, how things move \
(which way, how fast), what appears or disappears.
Reply with a numbered list only (1., 2., 3., ...), one new caption per line.
"""

TASK = Task(
    name="video-caption",
    summary="caption videos: the text a video-text scorer finds closest to each clip",
    inputs=(Input(name="video", kind=InputKind.VIDEO, help="a video file"),),
    objective=EmbeddingSpec(target="video"),
    system_prompt=SYSTEM_PROMPT,
    prompt_template=PROMPT_TEMPLATE,
    pool_file=DATA_DIR / "video_captions.txt",
    completion_header=(
        "Short captions of one video clip, saying what happens in it, each with its "
        "similarity to the clip (higher is better), from worst to best:"
    ),
    strip_annotations=True,
    loop=LoopConfig(steps=10, keep=50, requested=50),  # the MILS paper's (MSR-VTT, ViCLIP)
    scorer=ScorerModels(text="xclip_text", target="xclip_video", target_input="VIDEO"),
)
