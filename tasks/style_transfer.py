"""Style transfer: find the edit instruction that makes a content image take a style.

Each candidate is an instruction for an image editor (instruct-pix2pix in the MILS paper,
the closed world's scene editor offline), applied to the sample's content image with a fixed
seed; the result is ranked by a declared two-term loss, minimised: 1000 x style loss (Gram
matrices of deep features against the style image) + content loss (features against the
content image), the paper's coefficients.
"""

from __future__ import annotations

from mils.engine.config import LoopConfig
from mils.tasks.base import DATA_DIR, Input, InputKind, RenderSpec, ScorerModels, Task

__all__ = ["STYLE_WEIGHT", "TASK"]

STYLE_WEIGHT = 1000.0
"""The MILS paper's style coefficient; the content loss has weight 1."""

SYSTEM_PROMPT = (
    "You write short edit instructions for an image editor. "
    "You reply only with a numbered list of instructions, one per line."
)

PROMPT_TEMPLATE = """\
An image editor applies one instruction to a content image; the result should take the \
style of a second image (its colours, background, textures) and keep the content. Below \
are instructions, each with the loss of the image it made (lower is better), worst first:

{candidates}

Write {requested} new instructions that would give a lower loss than all of the above. \
Each is one short imperative sentence (recolour, change the background, blur, add a \
texture, resize, move, add or remove an object); combine and vary what the best ones do.
Reply with a numbered list only (1., 2., 3., ...), one new instruction per line.
"""

TASK = Task(
    name="style-transfer",
    summary="style transfer: the edit instruction that gives a content image another's style",
    inputs=(
        Input(name="content", kind=InputKind.IMAGE, help="the image to edit"),
        Input(name="style", kind=InputKind.IMAGE, help="the image whose style to take"),
    ),
    objective=RenderSpec(
        renders=InputKind.IMAGE,
        weights={"style": STYLE_WEIGHT, "content": 1.0},
        higher_is_better=False,
        renderer="pix2pix_edit",  # diffusers instruct-pix2pix (MILS_EDIT_MODEL)
        edits="content",
    ),
    system_prompt=SYSTEM_PROMPT,
    prompt_template=PROMPT_TEMPLATE,
    pool_file=DATA_DIR / "style_instructions.txt",
    completion_header=(
        "Edit instructions that give a content image the style of another image, each "
        "with its loss (lower is better), from worst to best:"
    ),
    # The paper runs 20 steps keeping 100 of 1,000 requested: 1,000 diffusion edits and
    # VGG passes per step. Each candidate here is an edit, so the default asks for 50 per
    # step (20 steps, keep 20): a CPU editor finishes a sample in minutes, not hours.
    loop=LoopConfig(steps=20, keep=20, requested=50),
    scorer=ScorerModels(style="vgg_style"),  # VGG-19 features (MILS_VGG_WEIGHTS)
)
