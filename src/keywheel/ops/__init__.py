"""Operations: what the person running keywheel watches and acts with.

- :mod:`keywheel.ops.metrics` — ``GET /metrics`` (Prometheus text), fed by the observer events;
- :mod:`keywheel.ops.settings` — ``KEYWHEEL_PROBE_*``, ``KEYWHEEL_CREDIT_INTERVAL``,
  ``KEYWHEEL_MIN_CREDIT`` and ``<P>_PROBE``;
- :mod:`keywheel.ops.probes` — one free probe per key (``keywheel keys check``);
- :mod:`keywheel.ops.credits` — OpenRouter's ``/key`` reading, and what it means for a key;
- :mod:`keywheel.ops.recovery` — the gateway's background re-probe and credit refresh.

Nothing here sends a billable request unless ``<P>_PROBE=generate`` asks for a 1-token one,
and nothing here stores, shows or logs a key or OpenRouter's ``label`` (it echoes the key).
"""
