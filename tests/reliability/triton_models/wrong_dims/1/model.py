"""Test-only: loads and answers, but its config does not match what the scorer expects."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests: list) -> list:
        out = pb_utils.Tensor("EMBEDDING", np.zeros((1, 4), dtype=np.float32))
        return [pb_utils.InferenceResponse(output_tensors=[out]) for _ in requests]
