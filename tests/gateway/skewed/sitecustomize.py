"""Put on a test gateway's PYTHONPATH: its wall clock (``time.time``) runs ``KEYWHEEL_TEST_CLOCK_SKEW``
seconds off, as on a replica whose clock is wrong.  Only the skew tests use it."""

import os
import time

_skew = float(os.environ.get("KEYWHEEL_TEST_CLOCK_SKEW") or 0)
if _skew:
    _real = time.time

    def _skewed() -> float:
        return _real() + _skew

    time.time = _skewed
