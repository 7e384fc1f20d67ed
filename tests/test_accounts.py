"""The credentials file: users and API keys stored hashed, roles, concurrent edits."""

from __future__ import annotations

import json
import stat
import threading
from datetime import datetime

import pytest

from pipeline.accounts import AccountError, Accounts, check_password, hash_password, role_allows

NOW = datetime(2026, 12, 2, 12, 0, 0)


@pytest.fixture
def accounts(tmp_path) -> Accounts:
    return Accounts.of_home(tmp_path / "home")


def test_a_user_signs_in_with_their_password_only(accounts):
    accounts.add_user("ana", role="operator", password="correct horse", now=NOW)
    assert accounts.verify("ana", "correct horse").role == "operator"
    assert accounts.verify("ana", "correct hors") is None
    assert accounts.verify("bob", "correct horse") is None
    accounts.set_password("ana", "battery staple")
    assert accounts.verify("ana", "correct horse") is None
    assert accounts.verify("ana", "battery staple").name == "ana"


def test_the_file_holds_no_password_and_only_its_owner_reads_it(accounts):
    accounts.add_user("ana", role="admin", password="correct horse", now=NOW)
    text = accounts.path.read_text()
    assert "correct horse" not in text
    assert json.loads(text)["users"]["ana"]["password"].startswith("scrypt$")
    assert stat.S_IMODE(accounts.path.stat().st_mode) == 0o600


def test_hashes_are_salted():
    a, b = hash_password("same password"), hash_password("same password")
    assert a != b
    assert check_password("same password", a) and check_password("same password", b)
    assert not check_password("same password", "plain-text")


@pytest.mark.parametrize(("call", "problem"), [
    (lambda a: a.add_user("ana", role="root", password="long enough", now=NOW), "role 'root'"),
    (lambda a: a.add_user("ana", role="viewer", password="short", now=NOW), "too short"),
    (lambda a: a.add_user("a b", role="viewer", password="long enough", now=NOW), "name 'a b'"),
    (lambda a: a.remove_user("nobody"), "no user 'nobody'"),
    (lambda a: a.set_role("nobody", "admin"), "no user 'nobody'"),
    (lambda a: a.revoke_api_key("feedbeef", now=NOW), "no API key 'feedbeef'"),
])
def test_bad_requests_name_the_file_and_the_problem(accounts, call, problem):
    with pytest.raises(AccountError, match=problem) as err:
        call(accounts)
    assert str(accounts.path) in str(err.value)


def test_a_taken_name_is_refused_and_the_first_user_kept(accounts):
    accounts.add_user("ana", role="viewer", password="first password", now=NOW)
    with pytest.raises(AccountError, match="user 'ana' exists"):
        accounts.add_user("ana", role="admin", password="second password", now=NOW)
    assert accounts.user("ana").role == "viewer"
    assert accounts.verify("ana", "first password") is not None


def test_a_damaged_file_is_reported_and_left_untouched(accounts):
    accounts.path.parent.mkdir(parents=True)
    accounts.path.write_text("{not json")
    with pytest.raises(AccountError, match="not a contimg credentials file"):
        accounts.add_user("ana", role="viewer", password="long enough", now=NOW)
    assert accounts.path.read_text() == "{not json"


def test_api_keys_verify_until_revoked_and_record_their_last_use(accounts):
    key, token = accounts.create_api_key("nightly-notebook", role="viewer", now=NOW)
    assert key.key_id in token and token.startswith("ck_")
    assert token.split("_", 2)[2] not in accounts.path.read_text()  # only its digest is kept
    used = datetime(2026, 12, 2, 13, 0, 0)
    assert accounts.verify_api_key(token, now=used).role == "viewer"
    [listed] = accounts.api_keys()
    assert listed.last_used_utc == used.isoformat() and listed.active
    assert accounts.verify_api_key(token[:-1] + ("A" if token[-1] != "A" else "B"),
                                   now=used) is None
    assert accounts.verify_api_key("not-a-token", now=used) is None
    accounts.revoke_api_key(key.key_id, now=used)
    assert accounts.verify_api_key(token, now=used) is None
    assert not accounts.api_keys()[0].active


def test_roles_are_ordered():
    assert role_allows("admin", "operator") and role_allows("operator", "viewer")
    assert not role_allows("viewer", "operator") and not role_allows("operator", "admin")
    assert not role_allows("guest", "viewer")


def test_edits_from_many_threads_at_once_are_all_kept(accounts):
    names = [f"user{i}" for i in range(12)]
    errors: list[Exception] = []

    def add(name):
        try:
            # separate Accounts objects, as separate commands would hold
            Accounts(accounts.path).create_api_key(name, role="viewer", now=NOW)
        except Exception as exc:  # noqa: BLE001 — collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(k.name for k in accounts.api_keys()) == sorted(names)
