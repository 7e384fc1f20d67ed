"""Who is acting: a signed-in user, an API key, a signed-out visitor, or a notebook's owner.

Every page, API route and operator action is given an Actor by the server (from the
session's sign-in cookie or the request's API key) and asks it, not the browser, whether
the action is allowed.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from pipeline.accounts import ROLES, role_allows

#: how the actor was identified ("schedule" and "event": a trigger acting for its owner)
VIAS = ("password", "oauth", "api-key", "read-only", "notebook", "schedule", "event")


@dataclass(frozen=True, kw_only=True)
class Actor:
    """A name, a role (viewer < operator < admin) and how the server knows them."""

    name: str
    role: str
    via: str = "password"

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r}: one of {', '.join(ROLES)}")
        if self.via not in VIAS:
            raise ValueError(f"via {self.via!r}: one of {', '.join(VIAS)}")

    def may(self, needed: str) -> bool:
        """Whether this actor's role allows what ``needed`` allows."""
        return role_allows(self.role, needed)

    @property
    def reader(self) -> str | None:
        """The name saved queries are owned and shared by; None for a signed-out visitor."""
        return None if self.via == "read-only" else self.name

    @classmethod
    def visitor(cls) -> Actor:
        """A signed-out visitor of a read-only dashboard."""
        return cls(name="anonymous", role="viewer", via="read-only")

    @classmethod
    def notebook(cls) -> Actor:
        """The person running Python beside the home's files (a notebook, a script)."""
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = "notebook"
        return cls(name=name, role="admin", via="notebook")
