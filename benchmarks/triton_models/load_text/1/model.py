"""Load-model encoder for the Triton python backend: synthetic latency, deterministic output.

One file serves both `load_text` (input TEXT) and `load_image` (input IMAGE), whose
model.py links here. An execute() call over a dynamic batch of n items takes `a + b * n`
milliseconds: the embedding is computed (cheap), then the rest of the time is slept, so the
model's cost is the stated one and not the CPU this machine happens to have. With one
instance, the model runs one batch at a time.

Parameters, read once in initialize() from the server's environment, per model:
    MILS_LOAD_<TEXT|IMAGE>_A_MS   fixed time per batch (default 2)
    MILS_LOAD_<TEXT|IMAGE>_B_MS   time per item (default 0.05)

Accounting: when MILS_LOAD_STATS_DIR is set, every execute() rewrites (atomically)
`<dir>/<model name>.json` = {"executions", "items", "busy_s", "max_batch"}, where busy_s
is the measured wall time of execute() calls. Readers take differences between snapshots.

Embeddings: each word (lowercase letters) maps to a fixed pseudo-random unit vector seeded
from blake2b(word); an item's embedding is the sum of its words' vectors. Texts and targets
share the vectors, so a caption naming the words of a target scores higher. A target is any
bytes: its words are the letters it holds (a UTF-8 description works best).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time

import numpy as np
import triton_python_backend_utils as pb_utils

DIM = 64
WORD = re.compile(r"[a-z]+")
STOPWORDS = frozenset(
    ("a", "an", "the", "of", "and", "or", "with", "in", "on", "at", "to", "is", "are", "by")
)
EMPTY_TOKEN = "<empty>"


@functools.lru_cache(maxsize=65536)
def word_vector(word: str) -> np.ndarray:
    """The fixed unit vector of one word."""
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    vec = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vec / np.linalg.norm(vec)


def embed(item: bytes) -> np.ndarray:
    """Sum of the item's content words' vectors (never all-zero)."""
    text = item.decode("utf-8", errors="ignore").lower()
    words = [w for w in WORD.findall(text) if w not in STOPWORDS] or [EMPTY_TOKEN]
    return np.sum([word_vector(w) for w in words], axis=0, dtype=np.float32)


class TritonPythonModel:
    """Sleeps a + b * batch per execute(); one response per request."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.input = config["input"][0]["name"]
        role = self.input.upper()
        self.a_s = float(os.environ.get(f"MILS_LOAD_{role}_A_MS", "2")) / 1000.0
        self.b_s = float(os.environ.get(f"MILS_LOAD_{role}_B_MS", "0.05")) / 1000.0
        stats_dir = os.environ.get("MILS_LOAD_STATS_DIR")
        self.stats_path = os.path.join(stats_dir, f"{self.name}.json") if stats_dir else None
        self.stats = {"executions": 0, "items": 0, "busy_s": 0.0, "max_batch": 0}
        self._write_stats()

    def execute(self, requests: list) -> list:
        started = time.monotonic()
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        n = sum(len(a) for a in arrays)
        responses = []
        for items in arrays:
            rows = np.stack([embed(bytes(x)) for x in items.reshape(-1)])
            out = pb_utils.Tensor("EMBEDDING", rows)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        rest = self.a_s + self.b_s * n - (time.monotonic() - started)
        if rest > 0:
            time.sleep(rest)
        self._account(n, time.monotonic() - started)
        return responses

    def _account(self, n: int, seconds: float) -> None:
        stats = self.stats
        stats["executions"] += 1
        stats["items"] += n
        stats["busy_s"] += seconds
        stats["max_batch"] = max(stats["max_batch"], n)
        self._write_stats()

    def _write_stats(self) -> None:
        if self.stats_path is None:
            return
        tmp = f"{self.stats_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.stats, f)
        os.replace(tmp, self.stats_path)
