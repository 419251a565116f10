"""Users: the caller's own account (GET/PATCH/DELETE /users/me) and public profiles, and
that no reply ever carries a secret."""

import base64
import hashlib
import time
import uuid

from helpers import (assert_problem, assert_unauthorized, assert_user, check_each, jwt_claims,
                     parse_time, unique_email)

ME = "/api/v1/users/me"


def test_get_me(docket):
    acct = docket.new_user(name="Grace Hopper")
    resp = docket.me(acct.access)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].split(";")[0] == "application/json"
    user = resp.json()
    assert_user(user, email=acct.email, name="Grace Hopper")
    assert user == acct.user
    assert_unauthorized(docket.get(ME))


def test_patch_me_updates_name_and_email(docket):
    acct = docket.new_user(name="Before")
    if "." not in acct.user["updated_at"]:
        time.sleep(1.05)   # whole-second timestamps: let the clock move on
    new_email = unique_email("renamed")
    resp = docket.patch(ME, token=acct.access, json={"name": "After", "email": new_email})
    assert resp.status_code == 200, resp.text
    user = resp.json()
    assert_user(user, email=new_email, name="After")
    assert user["id"] == acct.id
    assert user["created_at"] == acct.user["created_at"]
    assert parse_time(user["updated_at"]) > parse_time(acct.user["updated_at"])
    assert docket.me(acct.access).json() == user
    # Logging in follows the email.
    assert_problem(docket.login(acct.email, acct.password), 401)
    assert docket.login(new_email.upper(), acct.password).status_code == 200

    # Each field alone; an empty patch changes nothing.
    only_name = docket.patch(ME, token=acct.access, json={"name": "Only Name"})
    assert only_name.status_code == 200 and only_name.json()["email"] == new_email
    unchanged = docket.patch(ME, token=acct.access, json={})
    assert unchanged.status_code == 200, unchanged.text
    assert unchanged.json()["name"] == "Only Name"
    assert unchanged.json()["email"] == new_email


def test_patch_me_own_email_in_other_case(docket):
    email = f"own-{uuid.uuid4().hex[:8]}@example.com"
    acct = docket.new_user(email=email)
    resp = docket.patch(ME, token=acct.access, json={"email": email.upper()})
    assert resp.status_code == 200, resp.text
    assert resp.json()["email"] == email.upper()


def test_patch_me_validation(docket):
    acct = docket.new_user(name="Valid")
    cases = [
        ({"name": ""}, {"name"}),
        ({"name": "n" * 101}, {"name"}),
        ({"name": 42}, {"name"}),
        ({"email": "not-an-email"}, {"email"}),
        ({"email": ""}, {"email"}),
        ({"email": ["a@b.io"]}, {"email"}),
        ({"name": "", "email": "nope"}, {"name", "email"}),
    ]
    for body, fields in cases:
        assert_problem(docket.patch(ME, token=acct.access, json=body), 422, fields=fields)
    assert docket.me(acct.access).json()["name"] == "Valid"
    assert_problem(docket.patch(ME, token=acct.access, data=b"[]",
                                headers={"Content-Type": "application/json"}), 422,
                   fields={"body"})
    assert_problem(docket.patch(ME, token=acct.access, data=b"{",
                                headers={"Content-Type": "application/json"}), 400)
    assert_problem(docket.patch(ME, token=acct.access, data=b"{}",
                                headers={"Content-Type": "text/plain"}), 415)
    assert_unauthorized(docket.patch(ME, json={"name": "Anonymous"}))


def test_patch_me_email_taken(docket):
    taken = f"Taken-{uuid.uuid4().hex[:8]}@Example.com"
    docket.new_user(email=taken, login=False)
    acct = docket.new_user()
    for variant in (taken, taken.lower(), taken.upper()):
        assert_problem(docket.patch(ME, token=acct.access, json={"email": variant}), 409)
    assert docket.me(acct.access).json()["email"] == acct.email


def test_patch_me_ignores_role(docket):
    acct = docket.new_user()
    resp = docket.patch(ME, token=acct.access, json={"role": "admin", "name": "Sneaky"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["role"] == "user"
    assert resp.json()["name"] == "Sneaky"
    assert docket.me(acct.access).json()["role"] == "user"
    # A fresh token after that still says "user".
    again = docket.new_session(acct)
    assert jwt_claims(again.access)["role"] == "user"


def test_delete_me(docket):
    acct = docket.new_user()
    other_session = docket.new_session(acct)
    viewer = docket.new_user()
    resp = docket.delete(ME, token=acct.access)
    assert resp.status_code == 204, resp.text
    assert resp.content == b""
    assert_unauthorized(docket.me(acct.access))
    assert_unauthorized(docket.me(other_session.access))
    assert_problem(docket.refresh(acct.refresh), 401)
    assert_problem(docket.refresh(other_session.refresh), 401)
    assert_problem(docket.login(acct.email, acct.password), 401)
    assert_problem(docket.get(f"/api/v1/users/{acct.id}", token=viewer.access), 404)
    # The email is free again, for a new account.
    again = docket.register(email=acct.email.upper())
    assert again.status_code == 201, again.text
    assert again.json()["id"] != acct.id
    assert docket.login(acct.email, acct.password).status_code == 200
    assert_unauthorized(docket.delete(ME))


def test_public_profile(docket):
    viewer = docket.new_user()
    target = docket.new_user(name="Public Person")
    resp = docket.get(f"/api/v1/users/{target.id}", token=viewer.access)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": target.id, "name": "Public Person", "avatar_url": None}
    # Own profile through the same route.
    assert docket.get(f"/api/v1/users/{viewer.id}", token=viewer.access).json()["id"] == viewer.id
    assert_unauthorized(docket.get(f"/api/v1/users/{target.id}"))


def test_public_profile_unknown(docket):
    viewer = docket.new_user()
    check_each([str(uuid.uuid4()), "not-a-uuid", "0", "%00"],
               lambda user_id: assert_problem(
                   docket.get(f"/api/v1/users/{user_id}", token=viewer.access), 404))


def test_no_reply_leaks_secrets(docket):
    """Walks through every auth and user route and scans every reply body."""
    acct = docket.new_user()
    second = docket.new_session(acct)
    other = docket.new_user()
    refreshed = docket.refresh(second.refresh).json()
    docket.get("/api/v1/auth/sessions", token=acct.access)
    docket.get(ME, token=acct.access)
    docket.patch(ME, token=acct.access, json={"name": "Scanned"})
    docket.get(f"/api/v1/users/{other.id}", token=acct.access)
    docket.post("/api/v1/auth/password", token=acct.access,
                json={"current_password": acct.password, "new_password": "new password 123"})
    docket.login(acct.email, "wrong password")
    docket.register(email=acct.email)                      # 409
    docket.refresh(second.refresh)                         # reuse: 401
    docket.post("/api/v1/auth/logout", token=other.access)

    refresh_tokens = [acct.refresh, second.refresh, refreshed["refresh_token"], other.refresh]
    forbidden = ["password_hash", "argon2", acct.password, "new password 123"]
    for token in refresh_tokens:
        digest = hashlib.sha256(token.encode()).digest()
        forbidden += [digest.hex(), base64.b64encode(digest).decode().rstrip("="),
                      base64.urlsafe_b64encode(digest).decode().rstrip("=")]
    issued_in = {}
    for method, path, status, text in docket.transcript:
        for secret in forbidden:
            assert secret not in text, f"{method} {path} ({status}) reply contains {secret!r}"
        for token in refresh_tokens:
            if token in text:
                issued_in.setdefault(token, []).append((method, path))
    # A refresh token appears only in the reply that issued it.
    for token, where in issued_in.items():
        assert len(where) == 1 and where[0][1] in ("/api/v1/auth/login",
                                                   "/api/v1/auth/refresh"), where
