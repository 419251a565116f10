"""Auth: register, login, access-token verification, refresh rotation and reuse detection,
logout, sessions, the session cap, password change, rate limiting, the hashing pool."""

import concurrent.futures
import os
import sqlite3
import threading
import time
import types
import uuid

import jwt
import pytest
import requests

import helpers

from helpers import (PASSWORD, SLOW_HASH, assert_problem, assert_unauthorized, assert_user,
                     check_each, forge_jwt, jwt_claims, jwt_header, parse_time, random_secret,
                     unique_email, wait_until)

REGISTER = "/api/v1/auth/register"
LOGOUT = "/api/v1/auth/logout"
SESSIONS = "/api/v1/auth/sessions"
PASSWORD_URL = "/api/v1/auth/password"


# --------------------------------------------------------------------------- register

def test_register_returns_user(docket):
    email = f"Mixed.Case-{uuid.uuid4().hex[:8]}@Example.IO"
    resp = docket.register(email=email, name="Ada Lovelace")
    assert resp.status_code == 201, resp.text
    assert resp.headers["Content-Type"].split(";")[0] == "application/json"
    user = resp.json()
    assert_user(user, email=email, name="Ada Lovelace")   # stored as given, not lower-cased
    assert set(user) == {"id", "email", "name", "role", "avatar_url", "created_at",
                         "updated_at", "email_verified", "mfa_enabled"}, user
    assert user["email_verified"] is False and user["mfa_enabled"] is False, user
    other = docket.register().json()
    assert other["id"] != user["id"]


def test_register_email_unique_case_insensitively(docket):
    tag = uuid.uuid4().hex[:8]
    assert docket.register(email=f"A-{tag}@x.io").status_code == 201
    assert_problem(docket.register(email=f"a-{tag}@X.io"), 409)
    assert_problem(docket.register(email=f"A-{tag}@x.io"), 409)
    assert_problem(docket.register(email=f"A-{tag}@X.IO", password="another password"), 409)


def test_register_invalid_email(docket):
    check_each(["", "plainaddress", "@example.com", "user@", "user@@x.io",
                "user name@example.com", "user@exa mple.com", "a" * 300 + "@example.com"],
               lambda email: assert_problem(docket.register(email=email), 422, fields={"email"}))


def test_register_password_length_in_code_points(docket):
    def check(password, ok):
        resp = docket.register(password=password)
        if ok:
            assert resp.status_code == 201, (len(password), resp.text)
        else:
            assert_problem(resp, 422, fields={"password"})
    check("p" * 7, False)
    check("p" * 8, True)
    check("p" * 256, True)
    check("p" * 257, False)
    check("é" * 7, False)          # 14 bytes, 7 code points
    check("é" * 8, True)
    check("é" * 256, True)         # 512 bytes, 256 code points
    check("😀" * 257, False)
    check("", False)


def test_register_name_length(docket):
    for name in ("", "n" * 101, "é" * 101):
        assert_problem(docket.register(name=name), 422, fields={"name"})
    for name in ("n", "n" * 100, "é" * 100, "Zoë 🚀"):
        resp = docket.register(name=name)
        assert resp.status_code == 201, (name, resp.text)
        assert resp.json()["name"] == name


def test_register_reports_every_bad_field(docket):
    resp = docket.post(REGISTER, json={"email": "nope", "password": "short", "name": ""})
    assert_problem(resp, 422, fields={"email", "password", "name"})
    resp = docket.post(REGISTER, json={})
    assert_problem(resp, 422, fields={"email", "password", "name"})


# --------------------------------------------------------------------------- login

def test_login_returns_tokens(docket):
    acct = docket.new_user(login=False, name="Login Test")
    before = int(time.time())
    resp = docket.login(acct.email, acct.password)
    after = int(time.time())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) >= {"access_token", "token_type", "expires_in", "refresh_token",
                         "refresh_expires_in", "user"}, body
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_expires_in"] == 604800
    assert_user(body["user"], email=acct.email, name="Login Test")
    assert body["user"]["id"] == acct.id
    refresh = body["refresh_token"]
    assert isinstance(refresh, str) and len(refresh) >= 43, refresh   # >= 256 bits
    assert refresh.count(".") != 2, "the refresh token must be opaque, not a JWT"

    token = body["access_token"]
    assert jwt_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, docket.jwt_secret, algorithms=["HS256"], issuer="docket",
                        options={"require": ["iss", "sub", "sid", "role", "iat", "exp", "jti"]})
    assert claims["sub"] == acct.id
    assert claims["role"] == "user"
    assert isinstance(claims["sid"], str) and claims["sid"]
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert before - 5 <= claims["iat"] <= after + 5
    assert claims["exp"] == claims["iat"] + 900

    again = jwt_claims(docket.login(acct.email, acct.password).json()["access_token"])
    assert again["jti"] != claims["jti"]
    assert again["sid"] != claims["sid"], "each login is a new session"


def test_login_email_case_insensitive(docket):
    email = f"Case.Test-{uuid.uuid4().hex[:8]}@Example.com"
    acct = docket.new_user(email=email, login=False)
    for variant in (email, email.lower(), email.upper()):
        resp = docket.login(variant, acct.password)
        assert resp.status_code == 200, (variant, resp.text)
        assert resp.json()["user"]["id"] == acct.id


def test_login_failures_indistinguishable(docket):
    acct = docket.new_user(login=False)
    wrong_password = assert_problem(docket.login(acct.email, "wrong password!"), 401)
    wrong_email = assert_problem(docket.login(unique_email("nobody"), acct.password), 401)
    for key in ("type", "title", "detail", "status"):
        assert wrong_password[key] == wrong_email[key], (key, wrong_password, wrong_email)


# --------------------------------------------------------------------------- access tokens

def test_access_token_rejections(docket):
    acct = docket.new_user()
    other = docket.new_user()
    real = acct.access
    claims = jwt_claims(real)
    secret = docket.jwt_secret
    now = int(time.time())

    def fresh(**over):
        c = dict(claims, iat=now, exp=now + 900, jti=uuid.uuid4().hex)
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    # Positive control: a token forged with the right key and claims is accepted, so the
    # rejections below are about what was changed, not about forging.
    good = forge_jwt(fresh(), secret)
    resp = docket.me(good)
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == acct.id

    head, payload, sig = real.split(".")
    tampered_role = ".".join([head, forge_jwt(dict(claims, role="admin"), "x").split(".")[1],
                              sig])
    tampered_sub = ".".join([head, forge_jwt(dict(claims, sub=other.id), "x").split(".")[1],
                             sig])
    bad = {
        "missing header": None,
        "empty bearer": "",
        "garbage": "garbage",
        "three garbage parts": "aaa.bbb.ccc",
        "expired": forge_jwt(fresh(iat=now - 1000, exp=now - 100), secret),
        "alg none": forge_jwt(fresh(), None, alg="none"),
        "alg none keeping signature": forge_jwt(fresh(), None, alg="none") + sig,
        "wrong key": forge_jwt(fresh(), random_secret()),
        "tampered role": tampered_role,
        "tampered sub": tampered_sub,
        "HS512 right key": forge_jwt(fresh(), secret, alg="HS512"),
        "HS384 right key": forge_jwt(fresh(), secret, alg="HS384"),
        "other issuer": forge_jwt(fresh(iss="not-docket"), secret),
        "no issuer": forge_jwt(fresh(iss=None), secret),
        "no expiry": forge_jwt(fresh(exp=None), secret),
        "truncated signature": real[:-4],
    }
    failures = []
    for name, token in bad.items():
        if token is None:
            resp = docket.get("/api/v1/users/me")
        elif token == "":
            resp = docket.get("/api/v1/users/me", headers={"Authorization": "Bearer "})
        else:
            resp = docket.me(token)
        try:
            assert_unauthorized(resp)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    for name, value in {"basic scheme": "Basic dXNlcjpwYXNzd29yZA==",
                        "token without scheme": real}.items():
        try:
            assert_unauthorized(docket.get("/api/v1/users/me",
                                           headers={"Authorization": value}))
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "accepted or badly rejected tokens:\n" + "\n".join(failures)
    # The genuine token still works after all that.
    assert docket.me(real).status_code == 200


# --------------------------------------------------------------------------- refresh

def check_tokens(body, user_id):
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_expires_in"] == 604800
    assert body["user"]["id"] == user_id
    return body


def test_refresh_rotates_and_keeps_session(docket):
    acct = docket.new_user()
    resp = docket.refresh(acct.refresh)
    assert resp.status_code == 200, resp.text
    body = check_tokens(resp.json(), acct.id)
    assert body["refresh_token"] != acct.refresh
    assert body["access_token"] != acct.access
    new_claims = jwt.decode(body["access_token"], docket.jwt_secret, algorithms=["HS256"],
                            issuer="docket")
    assert new_claims["sid"] == acct.session.sid
    assert new_claims["sub"] == acct.id
    assert docket.me(body["access_token"]).status_code == 200
    # The chain goes on with the newest token.
    resp = docket.refresh(body["refresh_token"])
    assert resp.status_code == 200, resp.text
    assert jwt_claims(resp.json()["access_token"])["sid"] == acct.session.sid


def test_refresh_reuse_revokes_session(docket):
    acct = docket.new_user()
    bystander = docket.new_session(acct)          # another session of the same user
    first = docket.refresh(acct.refresh)
    assert first.status_code == 200, first.text
    newest = first.json()
    # Presenting the rotated-away token again: reuse, the whole session dies.
    assert_problem(docket.refresh(acct.refresh), 401)
    assert_problem(docket.refresh(newest["refresh_token"]), 401)
    assert_unauthorized(docket.me(newest["access_token"]))
    assert_unauthorized(docket.me(acct.access))
    # Only that session.
    assert docket.me(bystander.access).status_code == 200
    assert docket.refresh(bystander.refresh).status_code == 200


def test_refresh_rejects_unknown_tokens(docket):
    acct = docket.new_user()
    assert_problem(docket.refresh("garbage"), 401)
    assert_problem(docket.refresh(acct.access), 401)           # an access token is not one
    assert_problem(docket.refresh(acct.refresh + "x"), 401)
    assert_problem(docket.post("/api/v1/auth/refresh", json={}), 422, fields={"refresh_token"})
    assert_problem(docket.post("/api/v1/auth/refresh", json={"refresh_token": 42}), 422,
                   fields={"refresh_token"})
    # None of that hurt the real session.
    assert docket.refresh(acct.refresh).status_code == 200


# --------------------------------------------------------------------------- logout

def test_logout_revokes_only_that_session(docket):
    acct = docket.new_user()
    other = docket.new_session(acct)
    sid = acct.session.sid
    resp = docket.post(LOGOUT, token=acct.access)
    assert resp.status_code == 204, resp.text
    assert resp.content == b""
    assert_unauthorized(docket.me(acct.access))
    assert_problem(docket.refresh(acct.refresh), 401)
    # A correctly signed, unexpired token for the revoked session is refused too.
    now = int(time.time())
    forged = forge_jwt(dict(jwt_claims(acct.access), iat=now, exp=now + 900,
                            jti=uuid.uuid4().hex), docket.jwt_secret)
    assert jwt_claims(forged)["sid"] == sid
    assert_unauthorized(docket.me(forged))
    assert_unauthorized(docket.post(LOGOUT, token=acct.access))
    # The other session is untouched.
    assert docket.me(other.access).status_code == 200
    assert docket.refresh(other.refresh).status_code == 200


def test_logout_requires_bearer(docket):
    assert_unauthorized(docket.post(LOGOUT))


# --------------------------------------------------------------------------- sessions

def test_sessions_list(docket):
    acct = docket.new_user(user_agent="docket-tests/1.0 (first)")
    second = docket.new_session(acct, user_agent="docket-tests/2.0 (second)")
    stranger = docket.new_user()

    resp = docket.get(SESSIONS, token=acct.access)
    assert resp.status_code == 200, resp.text
    sessions = resp.json()["sessions"]
    assert len(sessions) == 2, sessions
    by_id = {s["id"]: s for s in sessions}
    assert set(by_id) == {acct.session.sid, second.sid}
    assert stranger.session.sid not in by_id
    for s in sessions:
        assert set(s) >= {"id", "created_at", "last_used_at", "user_agent", "ip", "current"}, s
        assert s["ip"] == "127.0.0.1"
        assert parse_time(s["last_used_at"]) >= parse_time(s["created_at"])
        assert "refresh_token" not in s and "token_hash" not in s
    assert by_id[acct.session.sid]["current"] is True
    assert by_id[second.sid]["current"] is False
    assert by_id[acct.session.sid]["user_agent"] == "docket-tests/1.0 (first)"
    assert by_id[second.sid]["user_agent"] == "docket-tests/2.0 (second)"

    theirs = {s["id"]: s["current"] for s in
              docket.get(SESSIONS, token=second.access).json()["sessions"]}
    assert theirs == {acct.session.sid: False, second.sid: True}

    assert docket.post(LOGOUT, token=second.access).status_code == 204
    left = docket.get(SESSIONS, token=acct.access).json()["sessions"]
    assert [s["id"] for s in left] == [acct.session.sid]
    assert_unauthorized(docket.get(SESSIONS))


def test_delete_session(docket):
    acct = docket.new_user()
    second = docket.new_session(acct)
    stranger = docket.new_user()

    resp = docket.delete(f"{SESSIONS}/{second.sid}", token=acct.access)
    assert resp.status_code == 204, resp.text
    assert_unauthorized(docket.me(second.access))
    assert_problem(docket.refresh(second.refresh), 401)
    assert docket.me(acct.access).status_code == 200

    # Someone else's session: 404, and it stays alive.
    assert_problem(docket.delete(f"{SESSIONS}/{stranger.session.sid}", token=acct.access), 404)
    assert docket.me(stranger.access).status_code == 200
    # Unknown ids.
    assert_problem(docket.delete(f"{SESSIONS}/{uuid.uuid4()}", token=acct.access), 404)
    assert_problem(docket.delete(f"{SESSIONS}/not-an-id", token=acct.access), 404)
    assert [s["id"] for s in docket.get(SESSIONS, token=acct.access).json()["sessions"]] == \
        [acct.session.sid]
    assert_unauthorized(docket.delete(f"{SESSIONS}/{acct.session.sid}"))


# --------------------------------------------------------------------------- session cap

def test_max_sessions_default_five(docket):
    acct = docket.new_user()                      # s1
    later = [docket.new_session(acct) for _ in range(5)]   # s2..s6
    assert_unauthorized(docket.me(acct.access))   # s1: least recently used (ties: oldest)
    assert_problem(docket.refresh(acct.refresh), 401)
    for s in later:
        assert docket.me(s.access).status_code == 200
    ids = {s["id"] for s in docket.get(SESSIONS, token=later[-1].access).json()["sessions"]}
    assert ids == {s.sid for s in later}


def test_max_sessions_evicts_least_recently_used(start_docket):
    d = start_docket(extra_env={"DOCKET_AUTH_MAX_SESSIONS": "3"})
    acct = d.new_user()
    s1 = acct.session
    time.sleep(1.1)
    s2 = d.new_session(acct)
    time.sleep(1.1)
    s3 = d.new_session(acct)
    assert d.me(s1.access).status_code == 200     # s1 is now more recent than s2
    time.sleep(1.1)
    s4 = d.new_session(acct)
    assert_unauthorized(d.me(s2.access))
    for s in (s1, s3, s4):
        assert d.me(s.access).status_code == 200
    ids = {s["id"] for s in d.get(SESSIONS, token=s4.access).json()["sessions"]}
    assert ids == {s1.sid, s3.sid, s4.sid}


# --------------------------------------------------------------------------- password

def test_password_change(docket):
    acct = docket.new_user()
    other = docket.new_session(acct)
    new_password = "a brand new passphrase"

    resp = docket.post(PASSWORD_URL, token=acct.access,
                       json={"current_password": "not my password", "new_password": new_password})
    assert_problem(resp, 401)
    assert docket.me(acct.access).status_code == 200
    for bad in ("short", "x" * 257):
        resp = docket.post(PASSWORD_URL, token=acct.access,
                           json={"current_password": acct.password, "new_password": bad})
        assert_problem(resp, 422, fields={"new_password"})
    assert docket.me(other.access).status_code == 200   # failed attempts revoke nothing

    resp = docket.post(PASSWORD_URL, token=acct.access,
                       json={"current_password": acct.password, "new_password": new_password})
    assert resp.status_code == 204, resp.text
    # The caller's session stays; every other one dies.
    assert docket.me(acct.access).status_code == 200
    assert_unauthorized(docket.me(other.access))
    assert_problem(docket.refresh(other.refresh), 401)
    assert docket.refresh(acct.refresh).status_code == 200
    assert_problem(docket.login(acct.email, acct.password), 401)
    assert docket.login(acct.email, new_password).status_code == 200


def test_password_change_requires_bearer(docket):
    assert_unauthorized(docket.post(PASSWORD_URL, json={"current_password": PASSWORD,
                                                        "new_password": "whatever123"}))


# --------------------------------------------------------------------------- rate limit

def test_auth_rate_limit(start_docket, mode, request):
    # The counters of the PostgreSQL modes live in Redis: give this test a Redis of its own
    # so that other tests' requests from 127.0.0.1 do not count.
    redis = request.getfixturevalue("own_redis") if mode.storage == "postgres" else None
    d = start_docket(redis=redis, extra_env={"DOCKET_RATE_LIMITING_MAX_REQUESTS": "5",
                                             "DOCKET_RATE_LIMITING_WINDOW_MS": "60000"})
    email = unique_email()
    responses = [d.register(email=email)]
    login = d.login(email)
    responses.append(login)
    token = login.json()["access_token"]
    responses.append(d.login(email, "wrong password"))
    responses.append(d.refresh("garbage"))
    responses.append(d.get(SESSIONS, token=token))
    assert [r.status_code for r in responses] == [201, 200, 401, 401, 200]
    for expected_remaining, r in zip([4, 3, 2, 1, 0], responses):
        assert r.headers.get("RateLimit-Limit") == "5", dict(r.headers)
        assert int(r.headers["RateLimit-Remaining"]) == expected_remaining, dict(r.headers)
        assert 1 <= int(r.headers["RateLimit-Reset"]) <= 60, dict(r.headers)

    limited = d.login(email)
    assert_problem(limited, 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60, dict(limited.headers)
    assert limited.headers.get("RateLimit-Limit") == "5"
    assert int(limited.headers["RateLimit-Remaining"]) == 0
    assert 1 <= int(limited.headers["RateLimit-Reset"]) <= 60
    assert_problem(d.register(), 429)
    # Other routes are not limited by it.
    for _ in range(8):
        assert d.me(token).status_code == 200
    assert d.get("/health").status_code == 200


@pytest.mark.parametrize("mode_name", ["sqlite", "split"])
def test_rate_limit_keys_on_the_client_behind_trusted_proxies(docket_factory, request,
                                                              mode_name):
    """Behind an ingress (here: our own 127.0.0.1 as the proxy), each client has its own bucket
    when the proxy is trusted; a forged X-Forwarded-For or Forwarded from elsewhere changes
    nothing. In split mode the gateway resolves the client and the auth service counts it."""
    redis = request.getfixturevalue("own_redis") if mode_name == "split" else None
    limits = {"DOCKET_RATE_LIMITING_MAX_REQUESTS": "2", "DOCKET_RATE_LIMITING_WINDOW_MS": "60000"}

    def logins(d, headers):
        return [d.login("nobody@example.com", headers=headers).status_code for _ in range(3)]

    behind = docket_factory(mode_name, redis=redis, extra_env=dict(
        limits, DOCKET_SERVER_TRUSTED_PROXIES="127.0.0.0/8, 10.0.0.0/8"))
    # two clients behind two of our proxies: separate buckets, forged entries on the left ignored
    assert logins(behind, {"X-Forwarded-For": "6.6.6.6, 198.51.100.1, 10.1.2.3"}) == \
        [401, 401, 429]
    assert logins(behind, {"X-Forwarded-For": "6.6.6.6, 198.51.100.2"}) == [401, 401, 429]
    # the Forwarded header is not the one configured: it is ignored (the proxy is the client)
    assert logins(behind, {"Forwarded": "for=198.51.100.3"}) == [401, 401, 429]
    assert behind.login("nobody@example.com",
                        headers={"Forwarded": "for=198.51.100.4"}).status_code == 429

    # no trusted proxies (the default): forwarded headers are the client's own words
    # (split: the same Redis, another logical database, so the buckets start empty)
    other_db = types.SimpleNamespace(url=lambda: redis.url(1)) if redis else None
    plain = docket_factory(mode_name, redis=other_db, extra_env=limits)
    assert logins(plain, {"X-Forwarded-For": "198.51.100.5"}) == [401, 401, 429]
    assert plain.login("nobody@example.com",
                       headers={"X-Forwarded-For": "198.51.100.6"}).status_code == 429

    fwd = docket_factory("sqlite", extra_env=dict(
        limits, DOCKET_SERVER_TRUSTED_PROXIES="127.0.0.1", DOCKET_SERVER_FORWARDED_HEADER="forwarded"))
    assert logins(fwd, {"Forwarded": 'for="[2001:db8::1]:443";proto=https'}) == [401, 401, 429]
    assert logins(fwd, {"Forwarded": "for=198.51.100.7"}) == [401, 401, 429]


def test_bad_trusted_proxies_is_a_configuration_error(tmp_path):
    env = helpers.base_env(jwt_secret=helpers.random_secret())
    r = helpers.run_cli(["all", "--server.port=0", f"--storage.data_dir={tmp_path}",
                         "--server.trusted_proxies=10.0.0.0/33"], env=env, cwd=str(tmp_path))
    assert r.returncode != 0
    assert "server.trusted_proxies" in r.stderr


# --------------------------------------------------------------------------- hashing

def test_hash_pool_overload_sheds_load(start_docket):
    d = start_docket(fast_hash=False, extra_env=dict(SLOW_HASH, DOCKET_AUTH_HASH_WORKERS="1",
                                                     DOCKET_AUTH_HASH_QUEUE="0"))
    acct = d.new_user(login=False)
    barrier = threading.Barrier(8)

    def login():
        barrier.wait()
        return d.login(acct.email, acct.password, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(login) for _ in range(8)]
        # As soon as one login was shed, the server is busy hashing another: it must still
        # answer /health promptly.
        wait_until(lambda: any(f.done() for f in futures), 30, what="a first login reply")
        t0 = time.monotonic()
        health = d.get("/health", timeout=5)
        health_elapsed = time.monotonic() - t0
        busy = not all(f.done() for f in futures)
        results = [f.result() for f in futures]
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
    for r in results:
        if r.status_code == 503:
            assert_problem(r, 503)
            assert int(r.headers["Retry-After"]) >= 1, dict(r.headers)
    assert health.status_code == 200
    assert health_elapsed < 1.0, f"/health took {health_elapsed:.2f}s while hashing"
    assert busy, "every login finished before /health was asked: hashing too fast for this test"


def test_queued_login_of_a_client_that_left_is_not_hashed(start_docket):
    # in split mode the gateway notices its client left and drops the upstream call, so the
    # auth process sees its own client (the gateway) gone as well
    d = start_docket(fast_hash=False, extra_env=dict(SLOW_HASH, DOCKET_AUTH_HASH_WORKERS="1",
                                                     DOCKET_AUTH_HASH_QUEUE="16"))
    acct = d.new_user(login=False)

    def impatient_login():
        try:
            d.login(acct.email, acct.password, timeout=0.2)
        except requests.exceptions.Timeout:
            pass

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        for f in [pool.submit(impatient_login) for _ in range(6)]:
            f.result()
    # The first login was already hashing when its client left; the others waited in the
    # queue and are dropped when their turn comes instead of costing a hash each.
    def gone_counted():
        text = d.get("/metrics").text
        return any(line.startswith("http_requests_total{") and 'route="/api/v1/auth/login"' in line
                   and 'status="499"' in line and float(line.rsplit(" ", 1)[1]) >= 3
                   for line in text.splitlines())
    wait_until(gone_counted, 30, what="queued logins of departed clients counted as 499")
    if hasattr(d, "services"):  # split: the auth process itself skipped them
        auth = d.services["auth"]
        wait_until(lambda: any(
            line.startswith("http_requests_total{") and 'route="/api/v1/auth/login"' in line
            and 'status="499"' in line for line in auth.get("/metrics").text.splitlines()),
            30, what="the auth process skipping logins the gateway abandoned")
    assert d.login(acct.email, acct.password, timeout=30).status_code == 200


def stored_hashes(d):
    if d.mode.storage == "sqlite":
        conn = sqlite3.connect(f"file:{os.path.join(d.data_dir, 'docket.db')}?mode=ro", uri=True,
                               timeout=5)
        try:
            return [row[0] for row in conn.execute("SELECT password_hash FROM credentials")]
        finally:
            conn.close()
    import psycopg2
    conn = psycopg2.connect(d.db_url.replace("postgres://", "postgresql://"), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT password_hash FROM auth.credentials")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def test_default_argon2_parameters(start_docket):
    d = start_docket(fast_hash=False)
    d.new_user(login=False)
    d.new_user(login=False)
    hashes = stored_hashes(d)
    assert len(hashes) == 2, hashes
    for h in hashes:
        assert h.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), h
    assert hashes[0] != hashes[1], "same password, so the salts must differ"


def test_argon2_parameters_from_config(docket):
    acct = docket.new_user()
    [h] = stored_hashes(docket)
    assert h.startswith("$argon2id$v=19$m=1024,t=1,p=1$"), h
    assert docket.me(acct.access).status_code == 200
