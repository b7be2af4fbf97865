"""How fast a job trains and when it will be done: one estimate for the terminal and the browser.

The trainer reports `img_per_s` with every batch of metrics (images through G per second,
measured over the steps since the last batch, checkpoints and sample grids included), so the
time left follows from it and the batch size without keeping any history here.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

THROUGHPUT_KEY = "img_per_s"


def eta_seconds(status: str, step: int, total_steps: int, metrics: Mapping[str, float],
                batch_size: Optional[int]) -> Optional[float]:
    """Seconds until a running job reaches its total; None when it is not running or has not
    reported a speed yet."""
    rate = metrics.get(THROUGHPUT_KEY)
    if status != "running" or not batch_size or rate is None or not math.isfinite(rate) \
            or rate <= 0:
        return None
    return max(total_steps - step, 0) * batch_size / rate


def batch_size(config: Mapping[str, Any]) -> Optional[int]:
    """The batch size a stored job config names, if it names one."""
    try:
        return int(config["options"]["batch_size"])
    except (KeyError, TypeError, ValueError):
        return None
