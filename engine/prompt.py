"""Meta-prompt rendering and parsing of the generator's reply. Pure functions, no I/O.

Rendering: one line per shown candidate, `"{score:.3f}: {text}"`, listed worst to best so
the strongest examples sit right above the request (the layout LLM optimisers use), plus
the number of new candidates wanted.

Parsing is forgiving because small and chatty models are: it takes numbered lines
(`1. text`, `2) text`, `(3) text`, `**4.** text`) and, when a reply has no numbered line,
bulleted lines (`- text`, `* text`); it splits lists run together on one line; it drops
chat markup, markdown emphasis, surrounding quotes, a leading echoed score, and everything
that is neither (preambles, trailing commentary, blank lines).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from engine.protocols import ChatMessage, TaskSpec

__all__ = [
    "MAX_CANDIDATE_CHARS",
    "build_messages",
    "parse_candidates",
    "render_candidates",
    "render_prompt",
]

MAX_CANDIDATE_CHARS = 400
"""Longer lines are not candidates (a runaway paragraph, not a caption)."""

_CHAT_MARKUP = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|\[/?INST\]")
_ROLE_LINE = re.compile(r"^\s*(assistant|user|system)\s*:?\s*$", re.IGNORECASE)
_NUMBERED = re.compile(
    r"^\s*(?:[*_]{1,2})?\(?\d{1,3}(?!\.\d)\s*[.):\]]\s*(?:[*_]{1,2})?\s*(?P<text>.*)$"
    # a line in the prompt's own "0.412: text" layout counts as numbered
    r"|^\s*[-+]?\d*\.\d+\s*:\s*(?P<scored>.*)$"
)
# Small models run a list together on one line: "1. a cat; 2. a dog. 3. a bird".
_INLINE_ITEM = re.compile(r"(?<=[.;!?,])\s+(?=\d{1,3}[.)]\s)")
_BULLETED = re.compile(r"^\s*[-*•–]\s+(?P<text>.*)$")
_ECHOED_SCORE = re.compile(r"^(?:score\s*[:=]?\s*)?[-+]?\d*\.\d+\s*[:\-–]\s*", re.IGNORECASE)
_TRAILING_SCORE = re.compile(
    r"\s*[\(\[]\s*score\s*[:=]?\s*[-+]?\d*\.?\d+\s*[\)\]]\s*$", re.IGNORECASE
)
_EMPHASIS = re.compile(r"(\*\*|__|`)")
_QUOTES = "\"'“”‘’`"


def render_candidates(shown: Iterable[tuple[float, str]]) -> str:
    """One `score: text` line per candidate, lowest score first."""
    ordered = sorted(shown, key=lambda pair: pair[0])
    return "\n".join(f"{score:.3f}: {text}" for score, text in ordered)


def render_prompt(template: str, shown: Sequence[tuple[float, str]], requested: int) -> str:
    """Fill a task's template; it may use `{candidates}` and `{requested}`."""
    return template.format(candidates=render_candidates(shown), requested=requested)


def _text_of(match: re.Match[str]) -> str:
    groups = match.groupdict()
    return groups.get("text") or groups.get("scored") or ""


def build_messages(
    task: TaskSpec, shown: Sequence[tuple[float, str]], requested: int
) -> list[ChatMessage]:
    """The chat messages of one step: the task's system prompt and its filled template."""
    return [
        {"role": "system", "content": task.system_prompt},
        {"role": "user", "content": render_prompt(task.prompt_template, shown, requested)},
    ]


def _clean(text: str) -> str:
    text = _EMPHASIS.sub("", text).strip()
    text = _ECHOED_SCORE.sub("", text)
    text = _TRAILING_SCORE.sub("", text)
    text = text.strip().rstrip(";,").strip().strip(_QUOTES).strip()
    return " ".join(text.split())


def parse_candidates(reply: str) -> list[str]:
    """Extract candidate texts from a generator reply, in order, duplicates kept.

    Returns an empty list when the reply holds no numbered or bulleted line; the caller
    decides what that means (the loop records a step with no new candidates).
    """
    lines = [
        item
        for line in _CHAT_MARKUP.sub("\n", reply).splitlines()
        if line.strip() and not _ROLE_LINE.match(line)
        for item in _INLINE_ITEM.split(line)
    ]
    for pattern in (_NUMBERED, _BULLETED):
        found = [_text_of(m) for line in lines if (m := pattern.match(line))]
        if found:
            break
    else:
        return []
    cleaned = (_clean(text) for text in found)
    return [text for text in cleaned if 1 < len(text) <= MAX_CANDIDATE_CHARS]
