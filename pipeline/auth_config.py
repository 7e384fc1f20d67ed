"""How the dashboard signs people in (``[auth]`` in contimg.toml), importable without Panel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Panel's OAuth providers (panel.auth); "generic" is any OIDC server (e.g. Keycloak).
OAUTH_PROVIDERS = ("generic", "github", "gitlab", "google", "azure", "okta", "auth0",
                   "bitbucket")


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    """Sign-in: the home's credentials file, an OAuth/OIDC provider, or none (read-only).

    ``password``: users of ``contimg users`` sign in on the dashboard's own page.
    ``oauth``: Panel's OAuth login with ``oauth_provider``; the client secret is read from
    the file ``oauth_secret_file`` (never written in contimg.toml); a signed-in name that
    ``contimg users`` knows gets that user's role, anyone else ``oauth_default_role``.
    ``read-only``: nobody signs in; every visitor is a viewer and no operator action runs.
    """

    mode: Literal["password", "oauth", "read-only"] = "password"
    oauth_provider: str = ""
    oauth_key: str = ""
    oauth_secret_file: str = ""
    #: the OIDC server's base URL, for the generic provider (Keycloak: .../realms/NAME)
    oauth_url: str = ""
    oauth_redirect_uri: str = ""
    oauth_default_role: Literal["viewer", "operator"] = "viewer"
    #: who may read /metrics and /api/health without signing in: "loopback" (a local
    #: Prometheus) or "everyone"
    open_probes: Literal["loopback", "everyone"] = "loopback"

    def __post_init__(self):
        if self.mode != "oauth":
            return
        if self.oauth_provider not in OAUTH_PROVIDERS:
            raise ValueError(f"auth.oauth_provider = {self.oauth_provider!r}: with mode = "
                             f"'oauth' choose one of {', '.join(OAUTH_PROVIDERS)}")
        if not self.oauth_key or not self.oauth_secret_file:
            raise ValueError("auth.oauth_key and auth.oauth_secret_file are needed with "
                             "mode = 'oauth' (the client id, and a file holding its secret)")
        if self.oauth_provider == "generic" and not self.oauth_url:
            raise ValueError("auth.oauth_url is needed with oauth_provider = 'generic' (the "
                             "OIDC server's base URL)")
