"""Bytes that are not UTF-8 never reach SQL: a User-Agent is stored (and listed) as valid UTF-8,
and ids in paths that are not UTF-8 name nothing (404, never 500). PostgreSQL refuses such
bytes outright and SQLite stores them, so both engines are covered; split mode adds nothing
here (the same service code answers)."""

import pytest

from helpers import assert_problem

BAD_IDS = ["%ff%fe", "%c0%af", "%80", "%ed%a0%80"]


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_invalid_utf8_user_agent_and_ids(docket_factory, storage):
    d = docket_factory(storage)
    acct = d.new_user(login=False)
    r = d.post("/api/v1/auth/login", json={"email": acct.email, "password": acct.password},
               headers={"User-Agent": b"a\xff\xfeb\x01c"})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]

    r = d.get("/api/v1/auth/sessions", token=token)
    assert r.status_code == 200, r.text
    sessions = r.json()["sessions"]
    assert len(sessions) == 1, sessions
    assert sessions[0]["current"] is True
    assert sessions[0]["user_agent"] == "a\ufffd\ufffdb\ufffdc"

    for bad in BAD_IDS:
        assert_problem(d.get(f"/api/v1/users/{bad}", token=token), 404)
        assert_problem(d.delete(f"/api/v1/auth/sessions/{bad}", token=token), 404)
        assert_problem(d.get(f"/api/v1/tasks/{bad}", token=token), 404)
        assert_problem(d.post(f"/api/v1/notifications/{bad}/read", token=token), 404)
    # nothing was revoked on the way
    assert d.me(token).status_code == 200
