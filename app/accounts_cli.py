"""`contimg users` and `contimg apikey`: the home's credentials file from the command line.

They edit ``<home>/credentials.json`` (pipeline.accounts), never the DuckDB store, so they
work while the server runs; the server reads the file at each sign-in.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime

from pipeline.accounts import ROLES, AccountError, Accounts
from pipeline.actor import Actor
from pipeline.audit_spool import spool_action
from pipeline.home import Home


def add_account_commands(sub: argparse._SubParsersAction, home: argparse.ArgumentParser) -> None:
    """Register ``users`` and ``apikey`` with their actions on ``sub``."""
    users = sub.add_parser("users", parents=[home], help="who may sign in, and their roles")
    uact = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = uact.add_parser("add", parents=[home], help="create a user")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    passwd = uact.add_parser("passwd", parents=[home], help="set a user's password")
    passwd.add_argument("name")
    for p in (add, passwd):
        p.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of stdin (scripts)")
    role = uact.add_parser("role", parents=[home], help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    remove = uact.add_parser("remove", parents=[home], help="delete a user")
    remove.add_argument("name")
    uact.add_parser("list", parents=[home], help="every user and role")

    keys = sub.add_parser("apikey", parents=[home], help="keys for scripts and notebooks")
    kact = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = kact.add_parser("create", parents=[home], help="make a key (shown once)")
    create.add_argument("name")
    create.add_argument("--role", choices=ROLES, required=True)
    revoke = kact.add_parser("revoke", parents=[home], help="revoke a key by id")
    revoke.add_argument("key_id")
    kact.add_parser("list", parents=[home], help="every key, active or revoked")


def cmd_users(args: argparse.Namespace, home: Home) -> int:
    """Add, remove, list users; set their password or role."""
    accounts = Accounts.of_home(home.root)
    now = datetime.now(UTC).replace(tzinfo=None)
    if args.action == "add":
        user = accounts.add_user(args.name, role=args.role, password=_password(args, accounts),
                                 now=now)
        print(f"added {user.name} ({user.role}) to {accounts.path}")
        _audit(home, "users.add", args.name, f"role {user.role}", now)
    elif args.action == "passwd":
        accounts.set_password(args.name, _password(args, accounts))
        print(f"password of {args.name} changed")
        _audit(home, "users.passwd", args.name, "", now)
    elif args.action == "role":
        accounts.set_role(args.name, args.role)
        print(f"{args.name} is now {args.role}")
        _audit(home, "users.role", args.name, f"role {args.role}", now)
    elif args.action == "remove":
        accounts.remove_user(args.name)
        print(f"removed {args.name}")
        _audit(home, "users.remove", args.name, "", now)
    else:
        users = accounts.users()
        for u in users:
            print(f"{u.name:<24} {u.role:<9} since {u.created_utc}")
        if not users:
            print(f"no users in {accounts.path}")
    return 0


def cmd_apikey(args: argparse.Namespace, home: Home) -> int:
    """Create, revoke or list API keys."""
    accounts = Accounts.of_home(home.root)
    now = datetime.now(UTC).replace(tzinfo=None)
    if args.action == "create":
        key, token = accounts.create_api_key(args.name, role=args.role, now=now)
        print(f"key {key.key_id} for {key.name} ({key.role}); keep this token, it is not "
              "shown again:", file=sys.stderr)
        print(token)
        _audit(home, "apikey.create", key.key_id, f"{key.name} ({key.role})", now)
    elif args.action == "revoke":
        accounts.revoke_api_key(args.key_id, now=now)
        print(f"revoked {args.key_id}")
        _audit(home, "apikey.revoke", args.key_id, "", now)
    else:
        keys = accounts.api_keys()
        for k in keys:
            state = f"revoked {k.revoked_utc}" if k.revoked_utc else "active"
            print(f"{k.key_id}  {k.name:<24} {k.role:<9} {state:<28} "
                  f"last used {k.last_used_utc or 'never'}")
        if not keys:
            print(f"no API keys in {accounts.path}")
    return 0


def _audit(home: Home, action: str, target: str, detail: str, now: datetime) -> None:
    # Whoever can run this owns the home's files: the audit names them as a local admin.
    actor = Actor.notebook()
    spool_action(home.root, actor, action, target=target, now=now,
                 detail=f"contimg command line{'; ' + detail if detail else ''}")


def _password(args: argparse.Namespace, accounts: Accounts) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise AccountError(accounts.path, "the two passwords differ; nothing changed")
    return first


ACCOUNT_COMMANDS = {"users": cmd_users, "apikey": cmd_apikey}
