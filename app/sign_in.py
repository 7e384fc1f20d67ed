"""Sign-in through Panel's own auth provider, checked against the home's credentials file.

Panel's BasicAuthProvider compares plain passwords from a JSON file and its login page
loads Panel's logo from the CDN; this provider keeps Panel's handlers, cookies and
session bookkeeping but asks pipeline.accounts (scrypt hashes) and serves our own pages,
which load nothing from elsewhere. The cookie secret is generated into the home once.
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import datetime
from pathlib import Path

from panel.auth import BasicAuthProvider, BasicLoginHandler

from pipeline.accounts import Accounts, User

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
COOKIE_SECRET_FILE = "cookie_secret"
FIRST_ADMIN = "admin"
FIRST_ADMIN_PASSWORD_FILE = "admin-password"


class AccountsLoginHandler(BasicLoginHandler):
    """Panel's login form and cookies; the password is checked by ``accounts``."""

    accounts: Accounts  # set on the subclass AccountsAuthProvider makes

    def _validate(self, username: str, password: str) -> bool:
        user = self.accounts.verify(username, password)
        if user is None:
            log.warning("sign-in refused for %r from %s", username, self.request.remote_ip)
        return user is not None


class AccountsAuthProvider(BasicAuthProvider):
    """Panel's basic auth provider with users from ``accounts`` and contimg's pages."""

    def __init__(self, accounts: Accounts, **kwargs):
        self.accounts = accounts  # before Panel's __init__, which asks for login_handler
        super().__init__(login_template=str(TEMPLATES / "login.html"),
                         logout_template=str(TEMPLATES / "logout.html"), **kwargs)

    @property
    def login_handler(self) -> type[BasicLoginHandler]:
        """A handler class bound to this provider's accounts, endpoint and page."""
        return type("ContimgLoginHandler", (AccountsLoginHandler,), {
            "accounts": self.accounts, "_login_endpoint": self._login_endpoint,
            "_login_template": self._login_template})

    @property
    def get_user(self):
        """Panel's cookie check, and the name must still be a user (removal signs out)."""
        cookie_user = super().get_user

        def get_user(request_handler) -> str | None:
            name = cookie_user(request_handler)
            return name if name and self.accounts.user(name) is not None else None
        return get_user

    def user(self, name: str | None) -> User | None:
        """The signed-in user's record (role included), or None when unknown or removed."""
        return self.accounts.user(name) if name else None


def cookie_secret(root: Path) -> str:
    """The home's cookie secret, generated (readable by its owner only) on first use."""
    path = Path(root) / COOKIE_SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{COOKIE_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # creates the file only if absent, complete: never half-written
    except FileExistsError:
        pass  # another process made it first: theirs is the home's secret
    finally:
        tmp.unlink()
    return path.read_text().strip()


def ensure_first_admin(root: Path, accounts: Accounts, *, now: datetime) -> Path | None:
    """On a home nobody can sign in to, create ``admin`` and write its password to a file.

    Returns the password file's path (readable by its owner only) when it made the user,
    else None. The password is never printed: the path is.
    """
    if accounts.users():
        return None
    password = secrets.token_urlsafe(15)
    path = Path(root) / FIRST_ADMIN_PASSWORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chmod(path, 0o600)  # an older file of laxer mode keeps its mode through O_TRUNC
    accounts.add_user(FIRST_ADMIN, role="admin", password=password, now=now)
    return path
