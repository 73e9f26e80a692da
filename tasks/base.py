"""What every task declares: its inputs, its objective, its prompt, its pool, its defaults.

A task is data. `mils` (the composition root) reads it to choose readers for the inputs,
build the objective from the adapters, and fill in the loop defaults; the engine sees only
the prompt part (`mils.engine.protocols.TaskSpec`) and the objective it is handed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mils.engine.config import LoopConfig
from mils.engine.errors import ConfigError
from mils.engine.prompt import MAX_CANDIDATE_CHARS

__all__ = [
    "DATA_DIR",
    "EmbeddingSpec",
    "Input",
    "InputKind",
    "ObjectiveSpec",
    "RenderSpec",
    "ScorerModels",
    "Task",
]

DATA_DIR = Path(__file__).parent / "data"


class InputKind(enum.Enum):
    """What a sample input is; it decides the reader (and, for targets, the scorer model)."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    TEXT = "text"
    """The source is the text itself (a prompt to improve)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Input:
    """One named input of every sample of a task."""

    name: str
    kind: InputKind
    help: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingSpec:
    """Cosine of text and target embeddings (captioning): higher is better."""

    target: str
    """The input the texts are compared with."""

    @property
    def higher_is_better(self) -> bool:
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderSpec:
    """Render each text, score the media as named terms, rank by their weighted sum."""

    renders: InputKind
    """What the renderer makes from a text (an image)."""
    weights: Mapping[str, float]
    """Term name -> weight; the value is the sum of weight x term. The terms say which
    scorer judges a render: "alignment" (an image-text pair, against the sample's text
    input), "style" and "content" (a style/content loss model, against its images)."""
    higher_is_better: bool
    renderer: str = ""
    """The Triton model that renders with real weights unless told otherwise."""
    edits: str | None = None
    """The sample input the renderer edits (an image editor); None: text to image."""


ObjectiveSpec = EmbeddingSpec | RenderSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class ScorerModels:
    """The Triton models a task scores with unless told otherwise: the names under which
    `triton_models/` serves the real (hub-weight) encoders for its media, or its loss model."""

    text: str = ""
    target: str = ""
    target_input: str = "IMAGE"
    """The target model's input name ("IMAGE", "VIDEO", "AUDIO")."""
    style: str = ""
    """A style/content loss model (style transfer), instead of an encoder pair."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One MILS task. Adding a task means writing a sibling module with one of these."""

    name: str
    """What the CLI calls it (`mils caption --task NAME`)."""
    summary: str
    """One line for `mils tasks` and the help."""
    inputs: tuple[Input, ...]
    """The named inputs of each sample."""
    objective: ObjectiveSpec
    system_prompt: str
    """The generator's system message."""
    prompt_template: str
    """User message; `{candidates}` gets the scored lines (worst first), `{requested}` the
    count wanted. Describe the reply format in words: numbered example lines would be
    parsed as candidates whenever a model echoes the prompt."""
    pool_file: Path | None
    """Default initial pool, one text per line; None: none (each sample starts from its
    text inputs, as a prompt to improve does)."""
    max_candidate_chars: int = MAX_CANDIDATE_CHARS
    """Longer reply lines are not candidates."""
    completion_header: str = ""
    """First line of the continuation prompt (the "completion" prompting mode): what the
    scored lines below it are, and that they run from worst to best."""
    strip_annotations: bool = False
    """Remove a trailing "(remark)" and "!" from reply lines before scoring (captions)."""
    loop: LoopConfig = field(default_factory=LoopConfig)
    """Defaults of the loop for this task (each overridable)."""
    scorer: ScorerModels | None = None
    """The default scorer models (an encoder pair, or a loss model)."""

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.inputs]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"task {self.name!r} needs distinct input names, got {names}")
        if self.pool_file is None and not self.text_inputs:
            raise ConfigError(
                f"task {self.name!r} has no initial pool and no text input to start from"
            )
        if isinstance(self.objective, EmbeddingSpec) and self.objective.target not in names:
            raise ConfigError(
                f"task {self.name!r}: objective target {self.objective.target!r} is not one "
                f"of its inputs {names}"
            )

    @property
    def higher_is_better(self) -> bool:
        return self.objective.higher_is_better

    @property
    def text_inputs(self) -> tuple[str, ...]:
        """Inputs that are texts: they fill `{name}` in the prompts and are first candidates."""
        return tuple(spec.name for spec in self.inputs if spec.kind is InputKind.TEXT)

    def input(self, name: str) -> Input:
        return next(spec for spec in self.inputs if spec.name == name)

    def load_pool(self, path: Path | None = None) -> list[str]:
        """The initial pool: stripped, non-empty, de-duplicated lines in file order."""
        source = path or self.pool_file
        if source is None:
            return []
        lines = source.read_text(encoding="utf-8").splitlines()
        return list(dict.fromkeys(line.strip() for line in lines if line.strip()))
