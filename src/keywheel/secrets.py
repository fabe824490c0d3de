"""API keys as a type that cannot be printed.

An :class:`ApiKey`'s ``repr``, ``str`` and ``format`` all show only its
fingerprint, ``gemini#2 …9f3a``: the provider, the key's position in the
configuration (``GEMINI_API_KEY_2``) and four hex digits of a SHA-256 of the key,
so no character of the key itself is ever shown.  The raw value is reachable
only through :meth:`ApiKey.reveal`, which adapters call when building headers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


class ApiKey:
    __slots__ = ("_value", "provider", "label", "fingerprint", "auth")

    def __init__(self, value: str, provider: str, label: str, *, auth: str = "key") -> None:
        self._value = value
        self.provider = provider
        self.label = label  # "1", "2", "token", ... — where it came from
        digest = hashlib.sha256(value.encode()).hexdigest()[:4]
        self.fingerprint = f"{provider}#{label} …{digest}"
        # "key": the provider's own key header; "bearer": Authorization: Bearer
        self.auth = auth

    def reveal(self) -> str:
        """The raw key.  Only for building an upstream request."""
        return self._value

    def __repr__(self) -> str:
        return f"ApiKey({self.fingerprint})"

    def __str__(self) -> str:
        return self.fingerprint

    def __format__(self, spec: str) -> str:
        return format(self.fingerprint, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value and other.provider == self.provider

    def __hash__(self) -> int:
        return hash((self.provider, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the key out; refuse rather than leak.
        raise TypeError("ApiKey cannot be pickled")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of any of ``secrets`` in ``text`` by ``[redacted]``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "[redacted]")
    return text
