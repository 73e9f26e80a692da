"""Rendering of the meta-prompt and parsing of messy generator replies."""

from __future__ import annotations

import pytest

from mils.engine.prompt import (
    MAX_CANDIDATE_CHARS,
    build_continuation,
    parse_candidates,
    parse_reply,
    render_candidates,
    render_prompt,
)


def test_render_lists_scores_at_three_decimals_worst_first() -> None:
    """Each shown candidate is one `score: text` line, lowest score first."""
    text = render_candidates([(0.91234, "best"), (0.1, "worst"), (0.5, "mid")])
    assert text.splitlines() == ["0.100: worst", "0.500: mid", "0.912: best"]


def test_render_prompt_fills_candidates_and_requested() -> None:
    """The task template gets the candidate lines and the number requested."""
    out = render_prompt("{candidates}\nGive {requested}.", [(0.25, "a cat")], 7)
    assert out == "0.250: a cat\nGive 7."


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("1. A cat.\n2) A dog\n(3) A bird", ["A cat.", "A dog", "A bird"]),
        ("Sure! Here you go:\n\n1. One\n\n2. Two\nHope this helps!", ["One", "Two"]),
        ('1. "Quoted caption"\n2. \u201cCurly\u201d', ["Quoted caption", "Curly"]),
        ("**1.** **Bold** words\n2. `code` text", ["Bold words", "code text"]),
        ("<|im_start|>assistant\n1. Marked up<|im_end|>", ["Marked up"]),
        ("1. 0.512: echoed score\n0.300: score layout line", ["echoed score", "score layout line"]),
        ("1. With trailing score (score: 0.9)", ["With trailing score"]),
        (
            "1. a cat on a mat; 2. a dog in a park. 3. a bird",
            ["a cat on a mat", "a dog in a park.", "a bird"],
        ),
        (
            "- bullet one\n* bullet two\n• bullet three",
            ["bullet one", "bullet two", "bullet three"],
        ),
        ("1. Numbered wins\n- bullet ignored", ["Numbered wins"]),
        ("1. dup\n2. dup", ["dup", "dup"]),
        ("1.\n2.   \n3. x\n4. ok", ["ok"]),
    ],
)
def test_parse_messy_replies(reply: str, expected: list[str]) -> None:
    """Numbered, bulleted, quoted, marked-up and chatty replies yield the candidate texts."""
    assert parse_candidates(reply) == expected


@pytest.mark.parametrize(
    "reply", ["", "   \n\n", "I cannot help with that.", "A caption without a number"]
)
def test_parse_reply_without_list_gives_nothing(reply: str) -> None:
    """A reply with no numbered or bulleted line gives zero candidates, not an error."""
    assert parse_candidates(reply) == []


def test_numbers_inside_text_are_not_list_markers() -> None:
    """Years and decimals in a caption are not mistaken for numbering."""
    assert parse_candidates("1. A 1960s car\n2. 3D render of 2.5 apples") == [
        "A 1960s car",
        "3D render of 2.5 apples",
    ]


def test_runaway_lines_are_dropped() -> None:
    """A line longer than MAX_CANDIDATE_CHARS is not a candidate."""
    assert parse_candidates("1. " + "x" * (MAX_CANDIDATE_CHARS + 1) + "\n2. ok") == ["ok"]


def test_minimised_objectives_list_the_highest_value_first() -> None:
    """Worst first means highest first when lower is better."""
    text = render_candidates([(0.1, "best"), (0.9, "worst")], higher_is_better=False)
    assert text.splitlines() == ["0.900: worst", "0.100: best"]


def test_annotations_are_stripped_when_the_task_asks() -> None:
    """Trailing "(remark)" / "[remark]" and "!" go; parentheses inside a sentence stay."""
    reply = (
        "1. A red kite over the sea (8 words)\n"
        "2. A dog (a terrier) on a rug\n"
        "3. A barn under gray skies!\n"
        "4. Two cats on a sofa (close-up shot) [wide]\n"
        "5. (only a remark)\n"
        "6. $(touch x)"
    )
    assert parse_candidates(reply, strip_annotations=True) == [
        "A red kite over the sea",
        "A dog (a terrier) on a rug",
        "A barn under gray skies",
        "Two cats on a sofa",
        "(only a remark)",
        "$(touch x)",
    ]
    assert parse_candidates(reply)[0] == "A red kite over the sea (8 words)"


def test_lines_over_the_limit_are_counted() -> None:
    """A task's length limit drops longer lines and says how many."""
    parsed = parse_reply("1. short one\n2. " + "x" * 50, max_chars=20)
    assert (parsed.candidates, parsed.too_long) == (["short one"], 1)


def test_continuation_prompt_lists_worst_to_best_and_starts_a_better_line() -> None:
    """The header, the scored lines worst first, then a score just above the best to be
    continued (just below it when lower is better)."""

    class Spec:
        completion_header = "Captions, worst to best:"

    prompt, start = build_continuation(Spec(), [(0.5, "b"), (0.25, "a")])  # type: ignore[arg-type]
    assert prompt.splitlines() == ["Captions, worst to best:", "0.250: a", "0.500: b", "0.510:"]
    assert start == "0.510:"
    _, lower = build_continuation(Spec(), [(0.5, "b"), (0.25, "a")], higher_is_better=False)  # type: ignore[arg-type]
    assert lower == "0.240:"
    reply = start + " a red kite\n0.52: a blue kite"
    assert parse_candidates(reply) == ["a red kite", "a blue kite"]
