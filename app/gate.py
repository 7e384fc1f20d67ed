"""Who a request or a page session is: the sign-in cookie, an API key, or a read-only visitor.

One place answers it for the pages (a session's ``pn.state.user``) and for the Tornado
routes beside them (the same signed cookie, or ``Authorization: Bearer <key>``), so a page
and the JSON API grant the same role to the same person.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pipeline.accounts import Accounts
from pipeline.actor import Actor
from pipeline.auth_config import AuthConfig
from pipeline.clock import utcnow


class NotSignedIn(Exception):
    """No valid sign-in: no cookie, a user since removed, or an unknown or revoked key."""


def is_loopback(remote_ip: str | None) -> bool:
    """Whether a request came from this machine (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address((remote_ip or "").split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class Gate:
    """The server's sign-in rules: its auth settings and the home's accounts."""

    auth: AuthConfig
    accounts: Accounts
    clock: Callable[[], datetime] = utcnow

    @property
    def read_only(self) -> bool:
        """Nobody signs in; everyone is a viewer."""
        return self.auth.mode == "read-only"

    def actor_for_user(self, name: str | None) -> Actor:
        """The actor of a page session whose sign-in cookie names ``name``."""
        if self.read_only:
            return Actor.visitor()
        if not name:
            raise NotSignedIn("not signed in")
        user = self.accounts.user(name)
        if user is not None:
            return Actor(name=name, role=user.role, via=self.auth.mode)
        if self.auth.mode == "oauth":
            return Actor(name=name, role=self.auth.oauth_default_role, via="oauth")
        raise NotSignedIn(f"user {name!r} no longer exists")

    def actor_for_request(self, *, authorization: str, cookie_user: str | None) -> Actor:
        """The actor of an HTTP request: its API key first, else its sign-in cookie."""
        scheme, _, token = authorization.partition(" ")
        if authorization:
            if scheme.lower() != "bearer" or not token.strip():
                raise NotSignedIn("Authorization must be 'Bearer <API key>'")
            key = self.accounts.verify_api_key(token.strip(), now=self.clock())
            if key is None:
                raise NotSignedIn("unknown or revoked API key")
            if self.read_only:
                return Actor(name=key.name, role="viewer", via="api-key")
            return Actor(name=key.name, role=key.role, via="api-key")
        return self.actor_for_user(cookie_user)

    def probe_open(self, remote_ip: str | None) -> bool:
        """Whether /metrics and /api/health answer this address without a sign-in."""
        return self.auth.open_probes == "everyone" or is_loopback(remote_ip)
