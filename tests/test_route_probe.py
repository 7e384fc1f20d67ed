"""Every page and route without a sign-in, with a wrong password, a revoked key and a
viewer's key against operator actions: refused with 401/403, never a traceback (issue 14).
Also the first serve of an empty home, the read-only mode and the OAuth configuration."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import urllib.parse

import pytest
from conftest import T0, ServedHome, add_observations, test_api_key, write_settings

from app.gate import Gate, is_loopback
from pipeline.accounts import Accounts
from pipeline.auth_config import AuthConfig
from pipeline.store import Store
from views.pages import PAGES

pytestmark = pytest.mark.ui

API_GETS = ["/api/whoami", "/api/images/1/fits", "/api/images/1/thumbnail",
            "/api/sources.csv", "/api/sources.vot", "/api/audit", "/api/saved-queries",
            "/api/saved-queries/1", "/api/reprocess", "/api/reprocess/1", "/api/triggers"]
ACTIONS = ["/api/pause", "/api/resume", "/api/observations/x/retry", "/api/reprocess",
           "/api/reprocess/1/cancel", "/api/triggers/1/fire"]


def call(url: str, method: str = "GET", *, headers: dict | None = None,
         body: str | None = None, host: str | None = None) -> tuple[int, dict, str]:
    """One request, redirects not followed: status, headers, body text."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(host or parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""),
                     body=body, headers=headers or {})
        r = conn.getresponse()
        headers = {k.lower(): v for k, v in r.getheaders()}  # HTTP names are case-blind
        headers["set-cookie"] = "\n".join(r.msg.get_all("Set-Cookie") or [])
        return r.status, headers, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from pipeline.home import Home
    home = Home.resolve(tmp_path_factory.mktemp("probe") / "home")
    home.ensure()
    with Store.open(home) as store:
        add_observations(store, 2, state="complete")
    server = ServedHome(home, "--paused")
    yield server
    assert server.stop() == 0


def test_nothing_answers_without_a_sign_in(served):
    for spec in PAGES:
        status, headers, body = call(f"{served.url}/{spec.slug}")
        assert status == 302 and "/login" in headers["location"], spec.slug
        assert "Traceback" not in body
    status, headers, _ = call(served.url + "/")
    assert status in (301, 302) and headers["location"].endswith("/overview")
    for path in API_GETS:
        status, headers, body = call(served.url + path)
        assert status == 401, path
        assert json.loads(body)["error"] == "Not signed in"
        assert "Traceback" not in body and headers["www-authenticate"].startswith("Bearer")
    for path in ACTIONS:
        status, _, body = call(served.url + path, "POST", body="")
        assert status == 401, path
        assert "Traceback" not in body


def test_a_wrong_password_signs_nobody_in(served):
    for name, password in (("ada", "not-her-password"), ("nobody", "test-password-1"),
                           ("", "")):
        form = urllib.parse.urlencode({"username": name, "password": password})
        status, headers, body = call(served.url + "/login", "POST", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 302 and "error=" in headers["location"], name
        assert "user=" not in headers["set-cookie"]
        assert "Traceback" not in body


def test_api_keys_revoked_unknown_or_malformed_are_refused(served):
    accounts = Accounts.of_home(served.home.root)
    token = test_api_key(served.home, "operator", "revoked-script")
    assert call(served.url + "/api/whoami", headers=bearer(token))[0] == 200
    [key] = [k for k in accounts.api_keys() if k.name == "revoked-script"]
    accounts.revoke_api_key(key.key_id, now=T0)
    for headers in (bearer(token), bearer(token[:-2] + "xx"), bearer("ck_nope_nope"),
                    {"Authorization": "Basic YWRhOnRlc3Q="}, {"Authorization": "Bearer "}):
        status, _, body = call(served.url + "/api/whoami", headers=headers)
        assert status == 401, headers
        assert "Traceback" not in body
        status, _, _ = call(served.url + "/api/pause", "POST", headers=headers, body="")
        assert status == 401


def test_a_viewers_key_cannot_act_and_each_try_is_audited(served):
    viewer = test_api_key(served.home, "viewer", "viewer-script")
    admin = test_api_key(served.home, "admin", "admin-script")
    status, _, body = call(served.url + "/api/whoami", headers=bearer(viewer))
    assert status == 200 and json.loads(body) == {"name": "viewer-script", "role": "viewer",
                                                  "via": "api-key"}
    for path in ACTIONS:
        status, _, body = call(served.url + path, "POST", headers=bearer(viewer), body="")
        assert status == 403, path
        assert json.loads(body)["error"] == "Forbidden" and "Traceback" not in body
    assert call(served.url + "/api/audit", headers=bearer(viewer))[0] == 403
    status, _, body = call(served.url + "/api/audit", headers=bearer(admin))
    refused = {(r["username"], r["action"]) for r in json.loads(body) if not r["allowed"]}
    assert {("viewer-script", "pause"), ("viewer-script", "resume"),
            ("viewer-script", "retry"), ("viewer-script", "reprocess"),
            ("viewer-script", "cancel"), ("viewer-script", "trigger.fire")} <= refused
    # the viewer's key reads what viewers read
    assert call(served.url + "/api/sources.csv", headers=bearer(viewer))[0] == 200
    # an operator's key acts; a cookie-less cross-site form cannot ride on it
    operator = test_api_key(served.home, "operator", "operator-script")
    status, _, body = call(served.url + "/api/resume", "POST", headers=bearer(operator),
                           body="")
    assert status == 200 and json.loads(body)["paused"] is False


def test_a_cookie_signed_call_from_another_site_is_refused(served):
    form = urllib.parse.urlencode({"username": "otto", "password": "test-password-1"})
    _, headers, _ = call(served.url + "/login", "POST", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    cookies = "; ".join(c.split(";")[0] for c in headers["set-cookie"].splitlines())
    status, _, _ = call(served.url + "/api/whoami", headers={"Cookie": cookies})
    assert status == 200
    status, _, body = call(served.url + "/api/pause", "POST", body="", headers={
        "Cookie": cookies, "Origin": "http://evil.example"})
    assert status == 403 and "cross-site" in body


def _own_address() -> str | None:
    """This machine's address on its first network, if it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))  # no packet is sent for a UDP connect
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(address) else address


def test_probes_are_open_to_the_loopback_scrape_only(tmp_path):
    gate = Gate(auth=AuthConfig(), accounts=Accounts(tmp_path / "c.json"))
    assert gate.probe_open("127.0.0.1") and gate.probe_open("::1")
    assert not gate.probe_open("10.1.2.3") and not gate.probe_open("192.168.0.7")
    assert not gate.probe_open(None)
    everyone = Gate(auth=AuthConfig(open_probes="everyone"), accounts=gate.accounts)
    assert everyone.probe_open("10.1.2.3")

    from pipeline.home import Home
    home = Home.resolve(tmp_path / "home")
    home.ensure()
    server = ServedHome(home, "--paused", "--address", "0.0.0.0")
    try:
        assert call(server.url + "/api/health")[0] == 200  # loopback
        assert call(server.url + "/metrics")[0] == 200
        address = _own_address()
        if address is not None:  # a machine with a network: ask from its own address
            for path in ("/api/health", "/metrics"):
                status, _, body = call(server.url + path, host=address)
                assert status == 401 and "Traceback" not in body
            key = test_api_key(home, "viewer")
            assert call(server.url + "/api/health", host=address, headers=bearer(key))[0] == 200
    finally:
        assert server.stop() == 0


def test_first_serve_of_an_empty_home_makes_an_admin_whose_password_is_in_a_file(tmp_path):
    from pipeline.home import Home
    home = Home.resolve(tmp_path / "home")
    home.ensure()
    server = ServedHome(home, "--paused", users=False)
    try:
        password_file = home.root / "admin-password"
        assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
        password = password_file.read_text().strip()
        assert len(password) >= 16
        log = server.log.read_text()
        assert str(password_file) in log and password not in log
        assert stat.S_IMODE(os.stat(home.root / "cookie_secret").st_mode) == 0o600
        assert (home.root / "cookie_secret").read_text().strip() not in log
        assert [(u.name, u.role) for u in Accounts.of_home(home.root).users()] == [
            ("admin", "admin")]
        form = urllib.parse.urlencode({"username": "admin", "password": password})
        status, headers, _ = call(server.url + "/login", "POST", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 302 and "error=" not in headers["location"]
    finally:
        assert server.stop() == 0
    # a second start keeps that admin and writes no new password
    before = password_file.read_text()
    server = ServedHome(home, "--paused", users=False)
    try:
        assert password_file.read_text() == before
        assert "nobody could sign in" not in server.log.read_text()
    finally:
        assert server.stop() == 0


def test_read_only_serves_every_page_signed_out_and_runs_no_action(tmp_path):
    from pipeline.home import Home
    home = Home.resolve(tmp_path / "home")
    home.ensure()
    write_settings(home, auth={"mode": "read-only"})
    server = ServedHome(home, "--paused", users=False)
    try:
        assert not (home.root / "admin-password").exists()
        for spec in PAGES:
            status, _, body = call(f"{server.url}/{spec.slug}")
            assert status == 200, spec.slug
        status, _, body = call(server.url + "/api/whoami")
        assert status == 200 and json.loads(body)["via"] == "read-only"
        admin_key = test_api_key(home, "admin")
        for headers in ({}, bearer(admin_key)):
            status, _, body = call(server.url + "/api/resume", "POST", headers=headers,
                                   body="")
            assert status == 403 and "read-only" in body
    finally:
        assert server.stop() == 0


def test_oauth_sends_the_browser_to_the_provider(tmp_path):
    from pipeline.home import Home
    home = Home.resolve(tmp_path / "home")
    home.ensure()
    (home.root / "oauth-secret").write_text("s3cret\n")
    write_settings(home, auth={"mode": "oauth", "oauth_provider": "github",
                               "oauth_key": "contimg-client-id",
                               "oauth_secret_file": "oauth-secret"})
    server = ServedHome(home, "--paused", users=False)
    try:
        status, headers, _ = call(server.url + "/overview")
        assert status == 302 and "login" in headers["location"]
        status, headers, _ = call(server.url + "/login")
        location = headers["location"]
        assert status == 302 and location.startswith("https://github.com/login/oauth/authorize")
        assert "client_id=contimg-client-id" in location and "s3cret" not in location
        assert not (home.root / "admin-password").exists()
        assert call(server.url + "/api/whoami")[0] == 401
    finally:
        assert server.stop() == 0



def test_the_api_hands_a_private_query_to_its_owner_only(tmp_path):
    from pipeline.home import Home
    home = Home.resolve(tmp_path / "home")
    home.ensure()
    ids = {}
    with Store.open(home) as store:
        for visibility in ("private", "team", "public"):
            ids[visibility] = store.save_query(owner="vera", page="sources", now=T0,
                                               name=f"bright {visibility}",
                                               spec={"flux_min_jy": 0.1},
                                               visibility=visibility)
    write_settings(home, auth={"mode": "password"})
    server = ServedHome(home, "--paused")
    try:
        keys = {name: test_api_key(home, "viewer", name) for name in ("vera", "val")}
        expected = {"vera": {"private", "team", "public"}, "val": {"team", "public"}}
        for name, key in keys.items():
            status, _, body = call(server.url + "/api/saved-queries?page=sources",
                                   headers=bearer(key))
            assert status == 200
            assert {q["visibility"] for q in json.loads(body)} == expected[name]
            for visibility, query_id in ids.items():
                status, _, body = call(f"{server.url}/api/saved-queries/{query_id}",
                                       headers=bearer(key))
                if visibility in expected[name]:
                    assert status == 200 and json.loads(body)["spec"] == {"flux_min_jy": 0.1}
                else:  # another's private query is not there, the same as a missing one
                    assert status == 404 and "Traceback" not in body
                    missing = call(f"{server.url}/api/saved-queries/999999",
                                   headers=bearer(key))
                    assert missing[0] == 404
                    assert json.loads(body)["error"] == f"saved query {query_id} not found"
                    assert json.loads(missing[2])["error"] == "saved query 999999 not found"
    finally:
        assert server.stop() == 0


def test_an_operator_plans_launches_and_cancels_a_reprocess_through_the_api(served):
    operator = bearer(test_api_key(served.home, "operator", "operator-reprocess"))
    body = json.dumps({"selection": {"states": ["complete"]}, "from_stage": "image",
                       "overrides": {"imaging.niter": 40}})
    status, _, text = call(served.url + "/api/reprocess/plan", "POST", body=body,
                           headers=operator)
    assert status == 200, text
    plan = json.loads(text)
    assert plan["eligible"] == 2 and plan["jobs"] == 4  # image and measure, twice
    for bad, words in (({"selection": {"colour": "red"}, "from_stage": "image"}, "colour"),
                       ({"selection": {}, "from_stage": "image",
                         "overrides": {"imaging.nitre": 1}}, "nitre"),
                       ({"selection": {}, "from_stage": "paint"}, "paint")):
        status, _, text = call(served.url + "/api/reprocess/plan", "POST",
                               body=json.dumps(bad), headers=operator)
        assert status == 400 and words in json.loads(text)["error"], text
    status, _, text = call(served.url + "/api/reprocess", "POST", body=body, headers=operator)
    assert status == 200, text
    run = json.loads(text)
    assert run["observations"] == 2
    status, _, text = call(f"{served.url}/api/reprocess/{run['run_id']}", headers=operator)
    assert status == 200 and len(json.loads(text)) == 2
    status, _, text = call(f"{served.url}/api/reprocess/{run['run_id']}/cancel", "POST",
                           body="", headers=operator)
    assert status == 200 and json.loads(text)["dropped"] == 2  # paused: none had started
    health = json.loads(call(served.url + "/api/health")[2])
    assert health["counts"]["complete"] == 2  # as they were
    status, _, text = call(served.url + "/api/triggers/999/fire", "POST", body="",
                           headers=operator)
    assert status == 404 and "does not exist" in json.loads(text)["error"]
