"""``GET /status`` and the ``/admin/…`` routes: the gateway's operator routes.

- ``GET /status``: the typed status as JSON;
- ``GET /admin/keys``: every key by fingerprint, with its provider and state (the key list,
  fit to export: fingerprints only);
- ``POST /admin/keys/{add,disable,enable,remove}``: act on one key;
- ``POST /admin/keys/check`` and ``GET /admin/credits``: probe keys, read credit (keywheel.ops);
- ``POST /admin/reload``: read the configuration again (``Gateway.reload``); a configuration
  that fails to load is refused whole, with its problems (400), and the old one stays.

Allowed with ``KEYWHEEL_ADMIN_KEY`` (as a bearer token or API-key header), or from a loopback
client when none is set.  Answers carry fingerprints only, never a piece of a key.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from keywheel.errors import ConfigError
from keywheel.gateway.http import HttpError, Receive, Scope, Send, allow, is_loopback, presented_key, read_body, respond
from keywheel.ops.recovery import Upkeep
from keywheel.secrets import ApiKey, redact_everywhere
from keywheel.status import Status

log = logging.getLogger("keywheel.gateway")


class KeyAdmin(Protocol):
    """What the admin routes need of a :class:`keywheel.Wheel` (async: the key state may be shared, in Redis)."""

    async def asnapshot(self) -> Status: ...

    async def aadd_key(self, provider: str, key: str) -> str: ...

    async def adisable_key(self, fingerprint: str, reason: str = ...) -> None: ...

    async def aenable_key(self, fingerprint: str) -> None: ...

    async def aremove_key(self, fingerprint: str) -> None: ...


class Summary(Protocol):
    """What a reload changed (:class:`keywheel.client.Reloaded`)."""

    def to_json(self) -> dict[str, Any]: ...


#: ``Gateway.reload``: the summary of what changed; raises ConfigError (refused) or HttpError.
Reloader = Callable[[], Awaitable[dict[str, Any]]]


class Admin:
    """The operator routes of one gateway."""

    def __init__(
        self,
        host: KeyAdmin,
        admin_key: ApiKey | None,
        max_body: int,
        body_timeout: float,
        reload: Reloader,
        upkeep: Upkeep | None = None,
    ) -> None:
        self.host = host
        self.upkeep = upkeep
        self._admin_key = admin_key.reveal().encode() if admin_key is not None else None
        self.max_body, self.body_timeout = max_body, body_timeout
        self.reload = reload

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
        if path == "/status":
            allow(method, "GET")
            await respond_json(send, (await self.host.asnapshot()).to_json())  # typed until here, the edge
            return 200
        if path in ("/admin/credits", "/admin/keys/check") and self.upkeep is not None:
            return await self._upkeep(self.upkeep, method, path, receive, send)
        if path == "/admin/keys":
            allow(method, "GET")
            await respond_json(send, key_list(await self.host.asnapshot()))
            return 200
        if path == "/admin/reload":
            allow(method, "POST")
            await read_body({}, receive, self.max_body, self.body_timeout)  # any body is ignored
            return await self._reload(send)
        if not path.startswith("/admin/keys/"):
            routes = "/status, /admin/keys, /admin/keys/<action>, /admin/keys/check, /admin/credits, /admin/reload"
            raise HttpError(404, f"no admin route {path[:200]} ({routes})")
        allow(method, "POST")
        body = await self._json_body(receive)
        await respond_json(send, await self._key_action(path.removeprefix("/admin/keys/"), body))
        return 200

    async def _json_body(self, receive: Receive) -> dict[str, Any]:
        raw = await read_body({}, receive, self.max_body, self.body_timeout)
        try:
            body = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            raise HttpError(400, "admin body must be JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "admin body must be a JSON object")
        return body

    async def _key_action(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        host = self.host
        if action not in ("add", "disable", "enable", "remove"):
            raise HttpError(404, f"no admin action {action[:50]!r} (add, disable, enable, remove)")
        missing = sorted(({"provider", "key"} if action == "add" else {"key"}) - set(body))
        if missing:
            raise HttpError(400, f"admin body lacks {' and '.join(missing)}")
        try:
            if action == "add":
                return {"key": await host.aadd_key(str(body["provider"]), str(body["key"]))}
            fingerprint = str(body["key"]).replace("...", "…")
            if action == "disable":
                await host.adisable_key(fingerprint, str(body.get("reason") or "disabled by operator"))
            elif action == "enable":
                await host.aenable_key(fingerprint)
            else:
                await host.aremove_key(fingerprint)
            return {"key": fingerprint, "done": action}
        except KeyError as exc:
            raise HttpError(404, f"not found: {exc}") from None
        except ValueError as exc:
            raise HttpError(409, str(exc)) from None

    async def _reload(self, send: Send) -> int:
        try:
            summary = await self.reload()
        except ConfigError as err:
            problems = {name: redact_everywhere(why) for name, why in err.problems.items()}
            message = "configuration not reloaded (the running one stays): " + "; ".join(
                f"{name}: {why}" for name, why in problems.items()
            )
            body = {"error": {"message": message, "type": "invalid_request_error"}, "problems": problems}
            await respond(send, 400, orjson.dumps(body))
            return 400
        await respond_json(send, summary)
        return 200

    async def _upkeep(self, upkeep: Upkeep, method: str, path: str, receive: Receive, send: Send) -> int:
        """``GET /admin/credits`` and ``POST /admin/keys/check`` (optional body ``{"provider": P, "key": F}``)."""
        if path == "/admin/credits":
            allow(method, "GET")
            await respond_json(send, {"keys": await upkeep.credit_rows()})
            return 200
        allow(method, "POST")
        body = await self._json_body(receive)
        provider, key = body.get("provider"), body.get("key")
        if not isinstance(provider, str | None) or not isinstance(key, str | None):
            raise HttpError(
                400, 'the body of /admin/keys/check is {}, {"provider": "<name>"} or {"key": "<fingerprint>"}'
            )
        try:
            results = await upkeep.check(provider, key)
        except KeyError as exc:
            raise HttpError(404, f"not found: {exc}") from None
        await respond_json(send, {"results": [r.to_json() for r in results]})
        return 200


def key_list(status: Status) -> dict[str, Any]:
    """The ``GET /admin/keys`` body: every key by fingerprint, with its provider and state."""
    keys = [
        {"provider": p.name, "key": k.fingerprint, "state": k.state, "reason": k.reason}
        for p in status.providers
        for k in p.keys
    ]
    return {"keys": keys, "taken_at": status.taken_at}


async def respond_json(send: Send, value: Any) -> None:
    await respond(send, 200, orjson.dumps(value))
