"""Panel's auth provider against the credentials file, on a real Panel server over HTTP."""

from __future__ import annotations

import http.cookiejar
import re
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

import panel as pn
import pytest
from conftest import free_port

from app.sign_in import AccountsAuthProvider, cookie_secret
from pipeline.accounts import Accounts

NOW = datetime(2026, 12, 2, 12, 0, 0)


@pytest.fixture
def served(tmp_path):
    """A one-page Panel server behind the provider; its base URL and accounts."""
    accounts = Accounts.of_home(tmp_path)
    accounts.add_user("ana", role="operator", password="correct horse", now=NOW)
    port = free_port()
    server = pn.serve({"page": lambda: pn.pane.Markdown("# the secret page")}, port=port,
                      address="127.0.0.1", show=False, threaded=True,
                      auth_provider=AccountsAuthProvider(accounts),
                      cookie_secret=cookie_secret(tmp_path))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # until the server accepts connections
        try:
            urllib.request.urlopen(base + "/login", timeout=2).read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield base, accounts
    server.stop()


def browser_like() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def sign_in(opener, base: str, user: str, password: str) -> str:
    data = urllib.parse.urlencode({"username": user, "password": password}).encode()
    with opener.open(base + "/login", data=data, timeout=10) as r:
        return r.geturl()


def test_a_page_needs_sign_in_and_a_wrong_password_is_refused(served):
    base, _ = served
    opener = browser_like()
    with opener.open(base + "/page", timeout=10) as r:  # redirected to the form
        assert "/login" in r.geturl()
        assert "Sign in" in r.read().decode()
    landed = sign_in(opener, base, "ana", "wrong password")
    assert "error=" in landed
    with opener.open(base + "/page", timeout=10) as r:
        assert "/login" in r.geturl()


def test_the_right_password_opens_the_page_and_sign_out_closes_it(served):
    base, _ = served
    opener = browser_like()
    sign_in(opener, base, "ana", "correct horse")
    with opener.open(base + "/page", timeout=10) as r:
        assert "/login" not in r.geturl() and r.status == 200
    opener.open(base + "/logout", timeout=10).read()
    with opener.open(base + "/page", timeout=10) as r:
        assert "/login" in r.geturl()


def test_a_user_added_while_serving_signs_in_without_a_restart(served):
    base, accounts = served
    accounts.add_user("vic", role="viewer", password="another password", now=NOW)
    opener = browser_like()
    sign_in(opener, base, "vic", "another password")
    with opener.open(base + "/page", timeout=10) as r:
        assert "/login" not in r.geturl()


def test_the_sign_in_pages_load_nothing_from_elsewhere(served):
    base, _ = served
    for path in ("/login", "/logout"):
        html = urllib.request.urlopen(base + path, timeout=10).read().decode()
        refs = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert all(not re.match(r"(?:https?:)?//", ref) for ref in refs), (path, refs)
        assert "cdn" not in html.lower()


def test_the_cookie_secret_is_made_once_and_private(tmp_path):
    first = cookie_secret(tmp_path)
    assert len(first) == 64 and cookie_secret(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "cookie_secret").stat().st_mode) == 0o600
    assert list(tmp_path.glob(".cookie_secret.*")) == []
