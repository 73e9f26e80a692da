"""Cross-modal arithmetic: the prompt that merges two captions into one picture.

Not a `Task`: arithmetic is a composition of tasks (`mils.arithmetic`): each input is
captioned by its kind's captioning task, the generator merges the captions with the prompt
below, and `t2i-enhance` improves and renders the merged prompt.
"""

from __future__ import annotations

from mils.engine.protocols import ChatMessage

__all__ = ["merge_messages"]

SYSTEM_PROMPT = (
    "You write prompts for a text-to-image model. You reply with one prompt on one line "
    "and nothing else."
)

MERGE_TEMPLATE = """\
Two descriptions, each of one input:

{descriptions}

Write one short prompt for a text-to-image model that describes a single picture \
combining both: keep the concrete things each description names (objects, colours, sizes, \
places, sounds shown as what makes them). Reply with the prompt only, on one line.
"""


def merge_messages(captions: list[str]) -> list[ChatMessage]:
    """The chat messages asking the generator to merge `captions` into one prompt."""
    listed = "\n".join(f"{n}. {caption}" for n, caption in enumerate(captions, 1))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": MERGE_TEMPLATE.format(descriptions=listed)},
    ]
