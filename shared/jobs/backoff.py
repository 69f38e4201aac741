"""Retry delays: exponential backoff with jitter, so a fleet recovering from an outage is not
hit by every retry at the same instant."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, base: float, cap: float, jitter: float, rng: random.Random | None = None
) -> float:
    """Delay before the attempt after `attempt` (1-based).

    The ceiling doubles each attempt (base, 2*base, 4*base, ... up to cap); the delay is drawn
    from [ceiling * (1 - jitter), ceiling], with jitter in [0, 1].
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    ceiling = min(cap, base * (2.0 ** (attempt - 1)))
    draw = rng.random() if rng is not None else random.random()
    return ceiling * (1.0 - min(max(jitter, 0.0), 1.0) * draw)
