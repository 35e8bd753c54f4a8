"""Authentication adapters: who may register, or bind a connection, under a name (§3.12)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .._errors import AuthError
from ..model import Passport


class AuthAdapter(Protocol):
    """Validates a claim for a passport under one scheme; raises :class:`AuthError`."""

    @property
    def scheme(self) -> str: ...

    async def validate(self, passport: Passport, claim: Mapping[str, Any]) -> None: ...


class NoAuth:
    """Scheme ``"none"``: accepts passports that ask for no authentication."""

    scheme = "none"

    async def validate(self, passport: Passport, claim: Mapping[str, Any]) -> None:
        if passport.auth.scheme not in ("none", ""):
            raise AuthError(
                f"agent {passport.name!r} asks for scheme {passport.auth.scheme!r}, "
                "but this adapter is 'none'"
            )


#: What a token is compared with when its name has no key (the answer is a refusal anyway).
_NO_KEY = "\x00no key\x00"


class ApiKeyAuth:
    """Scheme ``"api_key"``: the claim's ``token`` must equal the key configured for the name."""

    scheme = "api_key"

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    async def validate(self, passport: Passport, claim: Mapping[str, Any]) -> None:
        # One answer, and the same comparison, whether or not the name has a key: the error
        # must not tell a caller which names have keys.
        expected = self._keys.get(passport.name)
        token = claim.get("token")
        given = token.encode(errors="surrogatepass") if isinstance(token, str) else b""
        matches = hmac.compare_digest(given, (expected or _NO_KEY).encode(errors="surrogatepass"))
        if expected is None or not isinstance(token, str) or not matches:
            raise AuthError(f"bad api key for agent {passport.name!r}")


class AuthRegistry:
    """The hub's auth adapters by scheme."""

    def __init__(self, adapters: Iterable[AuthAdapter] = (NoAuth(),)) -> None:
        self._adapters: dict[str, AuthAdapter] = {}
        for adapter in adapters:
            self.register(adapter)

    def register(self, adapter: AuthAdapter) -> None:
        self._adapters[adapter.scheme] = adapter

    def schemes(self) -> list[str]:
        return sorted(self._adapters)

    def get(self, scheme: str, *, agent: str = "") -> AuthAdapter:
        """The adapter for ``scheme`` (``""`` is ``"none"``); ``agent`` names who asked."""
        adapter = self._adapters.get(scheme or "none")
        if adapter is None:
            accepted = ", ".join(self.schemes())
            if scheme in ("", "none"):
                who = f"agent {agent!r}" if agent else "this agent"
                hint = ""
                if "api_key" in self._adapters:
                    key_for = f"{{{agent!r}: KEY}}" if agent else "{name: KEY}"
                    hint = f"; over WebSocket give the link its key: WsLink(url, auth={key_for})"
                raise AuthError(
                    f"the hub requires authentication for {who} ({accepted}) and none was "
                    f"presented{hint}"
                )
            who = f" (agent {agent!r})" if agent else ""
            raise AuthError(
                f"no auth adapter installed for scheme {scheme!r}{who}; the hub accepts {accepted}"
            )
        return adapter

    async def validate(self, passport: Passport, claim: Mapping[str, Any]) -> None:
        await self.get(passport.auth.scheme, agent=passport.name).validate(passport, claim)
