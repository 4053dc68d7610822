"""Metrics as strict JSON: the SIL and replay reports write their figures through
`json_safe` (the evaluators' nan, "nothing to measure", becomes null)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python, tuples -> lists, keys -> str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
