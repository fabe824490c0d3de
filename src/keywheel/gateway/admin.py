"""``GET /status`` and ``POST /admin/keys/{add,disable,enable,remove}``: the gateway's operator routes.

Allowed with ``KEYWHEEL_ADMIN_KEY`` (as a bearer token or API-key header), or from a loopback
client when none is set.  Answers carry fingerprints only, never a piece of a key.
"""

from __future__ import annotations

import hmac
from typing import Any, Protocol

import orjson

from keywheel.gateway.http import HttpError, Receive, Scope, Send, allow, is_loopback, presented_key, read_body, respond
from keywheel.secrets import ApiKey
from keywheel.status import Status


class KeyAdmin(Protocol):
    """What the admin routes need of a :class:`keywheel.Wheel` (async: the key state may be shared, in Redis)."""

    async def asnapshot(self) -> Status: ...

    async def aadd_key(self, provider: str, key: str) -> str: ...

    async def adisable_key(self, fingerprint: str, reason: str = ...) -> None: ...

    async def aenable_key(self, fingerprint: str) -> None: ...

    async def aremove_key(self, fingerprint: str) -> None: ...


class Admin:
    """The operator routes of one gateway."""

    def __init__(self, host: KeyAdmin, admin_key: ApiKey | None, max_body: int, body_timeout: float) -> None:
        self.host = host
        self._admin_key = admin_key.reveal().encode() if admin_key is not None else None
        self.max_body, self.body_timeout = max_body, body_timeout

    def check(self, scope: Scope, headers: dict[bytes, bytes]) -> None:
        """Raise the 401/403 unless the caller may use the admin routes."""
        if self._admin_key is None:
            client = scope.get("client")
            if client and is_loopback(client[0]):
                return
            raise HttpError(403, "admin routes need KEYWHEEL_ADMIN_KEY (or a loopback client when none is set)")
        presented = presented_key(scope, headers, query=False)
        if presented is None or not hmac.compare_digest(presented, self._admin_key):
            raise HttpError(401, "missing or invalid admin key")

    async def handle(self, method: str, path: str, receive: Receive, send: Send) -> int:
        """Answer ``/status`` or ``/admin/…`` (after :meth:`check`); returns the status sent."""
        host = self.host
        if path == "/status":
            allow(method, "GET")
            await respond_json(send, (await host.asnapshot()).to_json())  # typed until here, the edge
            return 200
        allow(method, "POST")
        action = path.removeprefix("/admin/keys/")
        raw = await read_body({}, receive, self.max_body, self.body_timeout)
        try:
            body = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            raise HttpError(400, "admin body must be JSON") from None
        try:
            if action == "add":
                result: Any = {"key": await host.aadd_key(str(body["provider"]), str(body["key"]))}
            elif action in ("disable", "enable", "remove"):
                fingerprint = str(body["key"]).replace("...", "…")
                if action == "disable":
                    await host.adisable_key(fingerprint, str(body.get("reason") or "disabled by operator"))
                elif action == "enable":
                    await host.aenable_key(fingerprint)
                else:
                    await host.aremove_key(fingerprint)
                result = {"key": fingerprint, "done": action}
            else:
                raise HttpError(404, f"no admin action {action!r} (add, disable, enable, remove)")
        except KeyError as exc:
            raise HttpError(404, f"not found: {exc}") from None
        except ValueError as exc:
            raise HttpError(409, str(exc)) from None
        await respond_json(send, result)
        return 200


async def respond_json(send: Send, value: Any) -> None:
    await respond(send, 200, orjson.dumps(value))
