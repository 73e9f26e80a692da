"""The load-model Triton scorer (`benchmarks/triton_models`), started and read back.

`LoadScorerServer` wraps `adapters.local_stack.TritonServer` over the benchmark model
repository (`load_text`, `load_image`), passes the cost model through the environment, and
reads the models' own accounting from the stats files they rewrite after every execute().
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mils.adapters.local_stack import TritonServer

__all__ = ["MODELS", "REPOSITORY", "LoadScorerServer", "ScorerCostModel", "ScorerStats"]

REPOSITORY = Path(__file__).resolve().parent / "triton_models"
TEXT_MODEL, IMAGE_MODEL = "load_text", "load_image"
MODELS = (TEXT_MODEL, IMAGE_MODEL)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScorerCostModel:
    """Batch time a + b x items, per model; each model runs one batch at a time."""

    text_a_ms: float = 2.0
    """Fixed time per text batch."""
    text_b_ms: float = 0.05
    """Time per text in a batch."""
    image_a_ms: float = 2.0
    """Fixed time per target batch."""
    image_b_ms: float = 0.5
    """Time per target in a batch."""

    def env(self) -> dict[str, str]:
        """The environment variables the load models read in initialize()."""
        return {
            "MILS_LOAD_TEXT_A_MS": str(self.text_a_ms),
            "MILS_LOAD_TEXT_B_MS": str(self.text_b_ms),
            "MILS_LOAD_IMAGE_A_MS": str(self.image_a_ms),
            "MILS_LOAD_IMAGE_B_MS": str(self.image_b_ms),
        }


@dataclass(frozen=True, slots=True)
class ScorerStats:
    """One model's cumulative accounting (a snapshot; subtract two for a run's share)."""

    executions: int
    items: int
    busy_s: float
    max_batch: int

    def __sub__(self, other: ScorerStats) -> ScorerStats:
        return ScorerStats(
            self.executions - other.executions,
            self.items - other.items,
            self.busy_s - other.busy_s,
            self.max_batch,
        )


class LoadScorerServer(TritonServer):
    """A real Triton server with the two load models; a context manager.

    Args:
        cost: the batch-time model.
        workdir: where the log and the stats files go (a temp folder by default).
    """

    def __init__(self, *, cost: ScorerCostModel | None = None, workdir: Path | None = None) -> None:
        self.cost = cost or ScorerCostModel()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mils-load-triton-"))
        self.stats_dir = self.workdir / "stats"
        self.stats_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            model_repository=REPOSITORY,
            models=MODELS,
            env=self.cost.env() | {"MILS_LOAD_STATS_DIR": str(self.stats_dir)},
            log_path=self.workdir / "triton.log",
        )

    def stats(self) -> dict[str, ScorerStats]:
        """model name -> its accounting so far."""
        return {model: self._read(model) for model in MODELS}

    def _read(self, model: str) -> ScorerStats:
        data = json.loads((self.stats_dir / f"{model}.json").read_text())
        return ScorerStats(
            int(data["executions"]),
            int(data["items"]),
            float(data["busy_s"]),
            int(data["max_batch"]),
        )
