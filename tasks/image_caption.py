"""Image captioning: find the text the image scorer finds closest to the image."""

from __future__ import annotations

from mils.engine.config import LoopConfig
from mils.tasks.base import DATA_DIR, EmbeddingSpec, Input, InputKind, ScorerModels, Task

__all__ = ["TASK"]

SYSTEM_PROMPT = (
    "You write short, accurate, literal captions for photographs. "
    "You reply only with a numbered list of captions, one per line."
)

PROMPT_TEMPLATE = """\
Below are captions for one image, each with a similarity score against the image \
(higher is better), worst first:

{candidates}

Write {requested} new captions for the same image that would score higher than all of \
the above. Combine and vary what the best ones say. Each caption is very short (about 10 \
words), concrete and specific to this image: what is in it, its colours, where it is.
Reply with a numbered list only (1., 2., 3., ...), one new caption per line.
"""

TASK = Task(
    name="image-caption",
    summary="caption images: the text an image-text scorer finds closest to each image",
    inputs=(Input(name="image", kind=InputKind.IMAGE, help="an image file"),),
    objective=EmbeddingSpec(target="image"),
    system_prompt=SYSTEM_PROMPT,
    prompt_template=PROMPT_TEMPLATE,
    pool_file=DATA_DIR / "image_captions.txt",
    completion_header=(
        "Short captions of one photograph, each with its similarity to the photograph "
        "(higher is better), from worst to best:"
    ),
    strip_annotations=True,
    loop=LoopConfig(steps=10, keep=50, requested=50),  # the MILS paper's image captioning
    scorer=ScorerModels(text="clip_text", target="clip_image", target_input="IMAGE"),
)
