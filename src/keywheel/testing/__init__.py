"""A programmable fake LLM upstream for tests and demos.

:class:`FakeUpstream` is a real HTTP server on loopback speaking the Anthropic,
Gemini and OpenAI/OpenRouter wire formats; it can be told, per key, to answer
normally, rate-limit, reject, fail, hang, or cut a stream.
"""

from keywheel.testing.behaviours import KINDS, RETRY_STYLES
from keywheel.testing.server import FakeUpstream
from keywheel.testing.state import RecordedRequest

__all__ = ["KINDS", "RETRY_STYLES", "FakeUpstream", "RecordedRequest"]
