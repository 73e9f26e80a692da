"""Text-to-image prompt enhancement: rewrite a prompt until its render matches it best.

Each candidate is a rewrite of the user's prompt; the renderer draws it with a fixed seed and
the scorer rates the image against the ORIGINAL prompt (an alignment or preference model:
PickScore in the MILS paper, the closed world's scene scorer offline). The user's prompt is
the first candidate of its sample: the loop starts from how well it renders as written.
"""

from __future__ import annotations

from mils.engine.config import LoopConfig
from mils.tasks.base import Input, InputKind, RenderSpec, ScorerModels, Task

__all__ = ["TASK"]

SYSTEM_PROMPT = (
    "You write prompts for a text-to-image model: short, literal, concrete descriptions of "
    "what the picture shows. You reply only with a numbered list of prompts, one per line."
)

PROMPT_TEMPLATE = """\
The user wants this picture: {prompt}

Below are prompts for a text-to-image model, each with a score saying how well the \
image it drew matches what the user wants (higher is better), worst first:

{candidates}

Write {requested} new prompts that would make the model draw what the user wants more \
faithfully than all of the above. Keep every object, colour, size, count and place the \
user asked for; say each plainly, with the simplest common words; vary the wording and \
the order, and combine what the best prompts do.
Reply with a numbered list only (1., 2., 3., ...), one new prompt per line.
"""

TASK = Task(
    name="t2i-enhance",
    summary="improve text-to-image prompts: rewrites whose renders match each prompt best",
    inputs=(Input(name="prompt", kind=InputKind.TEXT, help="the prompt to improve"),),
    objective=RenderSpec(
        renders=InputKind.IMAGE,
        weights={"alignment": 1.0},
        higher_is_better=True,
        renderer="sd_render",  # diffusers text-to-image (MILS_T2I_MODEL)
    ),
    system_prompt=SYSTEM_PROMPT,
    prompt_template=PROMPT_TEMPLATE,
    pool_file=None,  # each sample starts from its own prompt
    completion_header=(
        "Prompts for a text-to-image model that should draw: {prompt}\n"
        "Each with how well its image matches that (higher is better), from worst to best:"
    ),
    # The MILS paper's (DrawBench prompts, FLUX.1-schnell 4 steps or SD3, PickScore).
    loop=LoopConfig(steps=19, keep=20, requested=50),
    # The alignment scorer: an image-text pair scoring the render against the prompt
    # (PickScore is a CLIP checkpoint served by clip_text/clip_image).
    scorer=ScorerModels(text="clip_text", target="clip_image", target_input="IMAGE"),
)
