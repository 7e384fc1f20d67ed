"""Who may sign in: the home's credentials file of users and API keys, stored hashed.

A file, not the DuckDB store: ``contimg users add`` and ``contimg apikey create`` must work
while the server holds the database, and the server reads the file on each sign-in, so a
change takes effect without a restart. Passwords are kept as scrypt hashes (salted, 2¹⁴
rounds); API keys, random 256-bit tokens, as their SHA-256. Every write holds an exclusive
lock on a sidecar file and replaces the credentials file atomically (mode 0600), so two
commands at once never lose each other's change.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.errors import ContimgError

#: Roles in increasing power: each may do what the ones before it may.
ROLES = ("viewer", "operator", "admin")
FILE_NAME = "credentials.json"
MIN_PASSWORD = 8
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_TOKEN_PREFIX = "ck"
#: Checked against when the name is unknown, so a wrong name costs the time a wrong
#: password does and the answer's timing does not tell which names exist.
_DECOY_HASH = "scrypt$16384$8$1$HDEPj/v3Mgx8TLn/BuJ5VQ==$G/Wuqst0LT1JMjrWLzj+uRe51rPXgKgFN/l75t8W0r8="


class AccountError(ContimgError):
    """A user or key that cannot be made, changed or found; names the file and the problem."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (viewer < operator < admin)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True, kw_only=True)
class User:
    """A person who signs in with a password."""

    name: str
    role: str
    created_utc: str


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    """A key for scripts and notebooks; its secret is shown once, at creation."""

    key_id: str
    name: str
    role: str
    created_utc: str
    revoked_utc: str | None = None
    last_used_utc: str | None = None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_utc is None


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``, as the credentials file stores it."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt${n}${r}${p}$".format(**_SCRYPT) + "$".join(
        base64.b64encode(b).decode() for b in (salt, digest))


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash from :func:`hash_password` (constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Accounts:
    """The credentials file of one home: users, their roles and API keys."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def of_home(cls, root: Path) -> Accounts:
        """The accounts of the home at ``root`` (``<root>/credentials.json``)."""
        return cls(Path(root) / FILE_NAME)

    # ------------------------------------------------------------------ users
    def add_user(self, name: str, *, role: str, password: str, now: datetime) -> User:
        """Create a user; refuses a name taken, a bad role or a short password."""
        self._check_name(name)
        self._check_role(role)
        self._check_password(password)
        with self._editing() as data:
            if name in data["users"]:
                raise AccountError(self.path, f"user {name!r} exists (contimg users passwd "
                                              f"{name} changes the password)")
            data["users"][name] = {"role": role, "password": hash_password(password),
                                   "created_utc": _iso(now)}
        return User(name=name, role=role, created_utc=_iso(now))

    def remove_user(self, name: str) -> None:
        """Delete a user; their API keys stay until revoked (they are named, not owned)."""
        with self._editing() as data:
            if data["users"].pop(name, None) is None:
                raise AccountError(self.path, f"no user {name!r}")

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password."""
        self._check_password(password)
        with self._editing() as data:
            self._user_entry(data, name)["password"] = hash_password(password)

    def set_role(self, name: str, role: str) -> None:
        """Change a user's role."""
        self._check_role(role)
        with self._editing() as data:
            self._user_entry(data, name)["role"] = role

    def users(self) -> list[User]:
        """Every user, by name."""
        data = self._read()
        return [User(name=n, role=u["role"], created_utc=u["created_utc"])
                for n, u in sorted(data["users"].items())]

    def user(self, name: str) -> User | None:
        """One user, or None."""
        u = self._read()["users"].get(name)
        return None if u is None else User(name=name, role=u["role"],
                                            created_utc=u["created_utc"])

    def verify(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None (no hint which part was wrong)."""
        u = self._read()["users"].get(name)
        if u is None:
            check_password(password, _DECOY_HASH)
            return None
        if not check_password(password, u["password"]):
            return None
        return User(name=name, role=u["role"], created_utc=u["created_utc"])

    # --------------------------------------------------------------- API keys
    def create_api_key(self, name: str, *, role: str, now: datetime) -> tuple[ApiKey, str]:
        """A new key and its token (``ck_<id>_<secret>``), which is shown only this once."""
        self._check_name(name)
        self._check_role(role)
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        with self._editing() as data:
            while key_id in data["api_keys"]:
                key_id = secrets.token_hex(4)
            data["api_keys"][key_id] = {"name": name, "role": role, "created_utc": _iso(now),
                                        "digest": _token_digest(secret),
                                        "revoked_utc": None, "last_used_utc": None}
        key = ApiKey(key_id=key_id, name=name, role=role, created_utc=_iso(now))
        return key, f"{_TOKEN_PREFIX}_{key_id}_{secret}"

    def revoke_api_key(self, key_id: str, *, now: datetime) -> None:
        """Revoke a key by id; it stays listed, marked revoked."""
        with self._editing() as data:
            entry = data["api_keys"].get(key_id)
            if entry is None:
                raise AccountError(self.path, f"no API key {key_id!r} (contimg apikey list)")
            entry["revoked_utc"] = entry["revoked_utc"] or _iso(now)

    def api_keys(self) -> list[ApiKey]:
        """Every key, active or revoked, oldest first."""
        return sorted((_key(k, e) for k, e in self._read()["api_keys"].items()),
                      key=lambda k: (k.created_utc, k.key_id))

    def verify_api_key(self, token: str, *, now: datetime) -> ApiKey | None:
        """The active key ``token`` belongs to, its last use set to ``now``; else None."""
        parts = token.split("_", 2) if token else []
        if len(parts) != 3 or parts[0] != _TOKEN_PREFIX:
            return None
        key_id, secret = parts[1], parts[2]
        entry = self._read()["api_keys"].get(key_id)
        if (entry is None or entry["revoked_utc"] is not None
                or not hmac.compare_digest(entry["digest"], _token_digest(secret))):
            return None
        with self._editing() as data:
            current = data["api_keys"].get(key_id)
            if current is None or current["revoked_utc"] is not None:
                return None  # revoked meanwhile
            current["last_used_utc"] = _iso(now)
            return _key(key_id, current)

    # --------------------------------------------------------------- the file
    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {"version": 1, "users": {}, "api_keys": {}}
        try:
            data = json.loads(text)
            if not isinstance(data.get("users"), dict) or not isinstance(
                    data.get("api_keys"), dict):
                raise ValueError("no 'users' and 'api_keys' tables")
        except (ValueError, AttributeError) as exc:
            raise AccountError(self.path, f"not a contimg credentials file ({exc}); it was "
                                          "left untouched") from exc
        return data

    @contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        """The file's contents under an exclusive lock, written back atomically on exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self._read()
                yield data
                _write_private(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _user_entry(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        entry = data["users"].get(name)
        if entry is None:
            raise AccountError(self.path, f"no user {name!r} (contimg users list)")
        return entry

    def _check_name(self, name: str) -> None:
        if not _NAME.match(name or ""):
            raise AccountError(self.path, f"name {name!r}: use 1-64 letters, digits or _.@-")

    def _check_role(self, role: str) -> None:
        if role not in ROLES:
            raise AccountError(self.path, f"role {role!r}: must be one of {', '.join(ROLES)}")

    def _check_password(self, password: str) -> None:
        if len(password or "") < MIN_PASSWORD:
            raise AccountError(self.path, f"password too short: at least {MIN_PASSWORD} "
                                          "characters")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file readable only by its owner."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _key(key_id: str, e: dict[str, Any]) -> ApiKey:
    return ApiKey(key_id=key_id, name=e["name"], role=e["role"], created_utc=e["created_utc"],
                  revoked_utc=e["revoked_utc"], last_used_utc=e["last_used_utc"])


def _iso(t: datetime) -> str:
    return t.replace(microsecond=0).isoformat()
