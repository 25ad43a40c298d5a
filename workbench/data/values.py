"""Plain Python values from what users pass: numpy scalars become ints, floats and bools."""

from __future__ import annotations

from typing import Any

import numpy as np


def plain_scalar(value: Any) -> Any:
    """A numpy scalar (``np.int64(5)``, ``np.float32(0.5)``, ``np.bool_(True)``) as the plain
    Python value it holds; anything else unchanged (arrays stay arrays and are refused later)."""
    return value.item() if isinstance(value, np.generic) else value
