"""`contimg users` and `contimg apikey` on a home's credentials file, as an operator types them."""

from __future__ import annotations

import io
import sys
from datetime import datetime

import pytest

from app.cli import main
from pipeline.accounts import Accounts


def run(capsys, monkeypatch, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_users_add_list_role_passwd_remove(tmp_path, capsys, monkeypatch):
    home = str(tmp_path / "home")
    code, out, _ = run(capsys, monkeypatch, "users", "add", "ana", "--role", "operator",
                       "--password-stdin", "--home", home, stdin="a long password\n")
    assert code == 0 and "added ana (operator)" in out
    accounts = Accounts.of_home(tmp_path / "home")
    assert accounts.verify("ana", "a long password").role == "operator"
    assert run(capsys, monkeypatch, "users", "role", "ana", "admin", "--home", home)[0] == 0
    assert run(capsys, monkeypatch, "users", "passwd", "ana", "--password-stdin", "--home",
               home, stdin="another password\n")[0] == 0
    assert accounts.verify("ana", "another password").role == "admin"
    code, out, _ = run(capsys, monkeypatch, "users", "list", "--home", home)
    assert "ana" in out and "admin" in out
    assert run(capsys, monkeypatch, "users", "remove", "ana", "--home", home)[0] == 0
    assert accounts.users() == []


def test_a_refused_user_prints_one_line_and_exits_1(tmp_path, capsys, monkeypatch):
    home = str(tmp_path / "home")
    code, out, err = run(capsys, monkeypatch, "users", "add", "ana", "--role", "viewer",
                         "--password-stdin", "--home", home, stdin="short\n")
    assert code == 1 and "password too short" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_apikey_token_printed_once_then_revoked(tmp_path, capsys, monkeypatch):
    home = str(tmp_path / "home")
    code, token, err = run(capsys, monkeypatch, "apikey", "create", "nightly", "--role",
                           "viewer", "--home", home)
    token = token.strip()
    assert code == 0 and token.startswith("ck_") and "not shown again" in err
    accounts = Accounts.of_home(tmp_path / "home")
    key = accounts.verify_api_key(token, now=datetime(2026, 12, 2))
    assert key is not None and key.name == "nightly"
    _, listed, _ = run(capsys, monkeypatch, "apikey", "list", "--home", home)
    assert key.key_id in listed and token not in listed and "active" in listed
    assert run(capsys, monkeypatch, "apikey", "revoke", key.key_id, "--home", home)[0] == 0
    _, listed, _ = run(capsys, monkeypatch, "apikey", "list", "--home", home)
    assert "revoked" in listed


@pytest.mark.parametrize("role", ["root", ""])
def test_an_unknown_role_is_refused_by_the_parser(tmp_path, capsys, monkeypatch, role):
    with pytest.raises(SystemExit) as exit_:
        run(capsys, monkeypatch, "apikey", "create", "x", "--role", role,
            "--home", str(tmp_path))
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
