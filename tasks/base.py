"""What every task declares: its prompt, its pool, its objective, its defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.config import LoopConfig

__all__ = ["DATA_DIR", "Task"]

DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One MILS task. Adding a task means writing a sibling module with one of these."""

    name: str
    """What the CLI calls it (`mils caption --task NAME`)."""
    media: str
    """Kind of target the scorer embeds ("image", ...)."""
    system_prompt: str
    """The generator's system message."""
    prompt_template: str
    """User message; `{candidates}` gets the scored lines, `{requested}` the count wanted.
    Describe the reply format in words: numbered example lines would be parsed as
    candidates whenever a model echoes the prompt."""
    pool_file: Path
    """Default initial pool, one text per line."""
    higher_is_better: bool = True
    """Objective direction of the scorer's values."""
    loop: LoopConfig = field(default_factory=LoopConfig)
    """Defaults of the loop for this task."""

    def load_pool(self, path: Path | None = None) -> list[str]:
        """The initial pool: stripped, non-empty, de-duplicated lines in file order."""
        lines = (path or self.pool_file).read_text(encoding="utf-8").splitlines()
        return list(dict.fromkeys(line.strip() for line in lines if line.strip()))
