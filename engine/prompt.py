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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mils.engine.protocols import ChatMessage, TaskSpec

__all__ = [
    "MAX_CANDIDATE_CHARS",
    "ParsedReply",
    "build_continuation",
    "build_messages",
    "parse_candidates",
    "parse_reply",
    "render_candidates",
    "render_prompt",
]

MAX_CANDIDATE_CHARS = 400
"""Default limit: longer lines are not candidates (a runaway paragraph, not a caption);
a task sets its own (text-to-image prompts run longer)."""

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
# A remark a model appends to a line after a space: "(8 words)", "(close-up shot)", "[wide]".
_TRAILING_REMARK = re.compile(r"\s+(?:\([^()]*\)|\[[^\[\]]*\])\s*$")
_QUOTES = "\"'“”‘’`"


def render_candidates(shown: Iterable[tuple[float, str]], *, higher_is_better: bool = True) -> str:
    """One `score: text` line per candidate, worst first (by the objective's direction)."""
    ordered = sorted(shown, key=lambda pair: pair[0], reverse=not higher_is_better)
    return "\n".join(f"{score:.3f}: {text}" for score, text in ordered)


def render_prompt(
    template: str,
    shown: Sequence[tuple[float, str]],
    requested: int,
    *,
    higher_is_better: bool = True,
    context: Mapping[str, str] | None = None,
) -> str:
    """Fill a task's template; it may use `{candidates}`, `{requested}` and the names in
    `context` (the sample's text inputs: `{prompt}`)."""
    candidates = render_candidates(shown, higher_is_better=higher_is_better)
    return template.format(**(context or {}), candidates=candidates, requested=requested)


def _text_of(match: re.Match[str]) -> str:
    groups = match.groupdict()
    return groups.get("text") or groups.get("scored") or ""


def build_messages(
    task: TaskSpec,
    shown: Sequence[tuple[float, str]],
    requested: int,
    *,
    higher_is_better: bool = True,
    context: Mapping[str, str] | None = None,
) -> list[ChatMessage]:
    """The chat messages of one step: the task's system prompt and its filled template
    (`context`: the sample's text inputs, by name)."""
    prompt = render_prompt(
        task.prompt_template, shown, requested, higher_is_better=higher_is_better, context=context
    )
    return [
        {"role": "system", "content": task.system_prompt},
        {"role": "user", "content": prompt},
    ]


def build_continuation(
    task: TaskSpec,
    shown: Sequence[tuple[float, str]],
    *,
    higher_is_better: bool = True,
    context: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """The continuation prompt of one step, and the start of the reply it ends with.

    The task's header, then the shown candidates worst to best as `score: text`, then a
    score a little better than the best, to be continued: small base models carry such a
    list on far more reliably than they follow an instruction. Prepend the returned start
    to the reply before parsing it.
    """
    best = max(s for s, _ in shown) if higher_is_better else min(s for s, _ in shown)
    start = f"{best + (0.01 if higher_is_better else -0.01):.3f}:"
    listing = render_candidates(shown, higher_is_better=higher_is_better)
    header = task.completion_header.format(**context) if context else task.completion_header
    return f"{header}\n{listing}\n{start}", start


def _clean(text: str, *, strip_annotations: bool) -> str:
    # Each pattern runs only where it can match (most lines hold none of them): the
    # unanchored trailing patterns are tried at every position of the line.
    if "*" in text or "_" in text or "`" in text:
        text = _EMPHASIS.sub("", text)
    text = text.strip()
    if "." in text:
        text = _ECHOED_SCORE.sub("", text)
    if text.endswith((")", "]")):
        text = _TRAILING_SCORE.sub("", text)
    text = text.strip().rstrip(";,").strip().strip(_QUOTES).strip()
    if strip_annotations:
        text = text.replace("!", "")
        while (
            text.rstrip().endswith((")", "]"))
            and (stripped := _TRAILING_REMARK.sub("", text)) != text
            and stripped
        ):
            text = stripped
        text = text.rstrip(";,").strip().strip(_QUOTES).strip()
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class ParsedReply:
    candidates: list[str]
    """Candidate texts in reply order, duplicates kept."""
    too_long: int
    """List lines dropped for being longer than the limit."""


def parse_candidates(
    reply: str, *, max_chars: int = MAX_CANDIDATE_CHARS, strip_annotations: bool = False
) -> list[str]:
    """Extract candidate texts from a generator reply (see `parse_reply`)."""
    return parse_reply(reply, max_chars=max_chars, strip_annotations=strip_annotations).candidates


def parse_reply(
    reply: str, *, max_chars: int = MAX_CANDIDATE_CHARS, strip_annotations: bool = False
) -> ParsedReply:
    """Extract candidate texts from a generator reply, in order, duplicates kept.

    Holds no candidate when the reply has no numbered or bulleted line; the caller decides
    what that means (the loop records a step with no new candidates). Lines longer than
    `max_chars` are not candidates; they are counted. With `strip_annotations` (captions),
    a trailing parenthesised or bracketed remark ("(8 words)") and exclamation marks are
    removed, as the published loop does; parentheses inside a sentence stay.
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
        return ParsedReply([], 0)
    cleaned = [
        text for item in found if len(text := _clean(item, strip_annotations=strip_annotations)) > 1
    ]
    kept = [text for text in cleaned if len(text) <= max_chars]
    return ParsedReply(kept, len(cleaned) - len(kept))
