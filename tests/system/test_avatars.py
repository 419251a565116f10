"""Avatars (PUT/DELETE /users/me/avatar, GET /users/{id}/avatar) in every mode: on the embedded
store (a directory under the data dir) and on S3 (a real S3 server that checks SigV4
signatures, tools/s3rver), through the gateway in split mode. Store outages answer 503 and
change nothing; a wrong secret stops the start with a clear message."""

import hashlib
import os
import subprocess

import pytest

import helpers
from helpers import assert_problem, assert_unauthorized
from s3_server import S3Server

ME_AVATAR = "/api/v1/users/me/avatar"
MIB = 1024 * 1024

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(100))
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00" + bytes(range(40))


def etag_of(data):
    return '"' + hashlib.sha256(data).hexdigest() + '"'


def put_avatar(d, token, data, ctype):
    return d.put(ME_AVATAR, token=token, data=data, headers={"Content-Type": ctype})


def objects_dir(d):
    return os.path.join(d.data_dir or os.path.join(d.cwd, "data"), "objects")


def stored_files(d):
    root = objects_dir(d)
    out = []
    for dirpath, _, files in os.walk(root):
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return sorted(out)


def check_lifecycle(d, stored):
    """Every rule of the contract on a running docket; stored() lists the object keys."""
    owner = d.new_user(name="Pictured")
    viewer = d.new_user()
    assert d.me(owner.access).json()["avatar_url"] is None
    get_url = f"/api/v1/users/{owner.id}/avatar"
    assert_problem(d.get(get_url, token=viewer.access), 404)
    assert_unauthorized(d.get(get_url))
    assert_unauthorized(put_avatar(d, None, PNG, "image/png"))
    assert_unauthorized(d.delete(ME_AVATAR))

    # wrong declared types, bytes that are not the declared type, nothing at all: 415, no change
    for data, ctype in [(PNG, "image/gif"), (PNG, "text/plain"), (PNG, "image/jpeg"),
                        (JPEG, "image/webp"), (b"GIF89a" + bytes(20), "image/png"),
                        (b"", "image/png"), (PNG[:7], "image/png")]:
        assert_problem(put_avatar(d, owner.access, data, ctype), 415)
    assert_problem(d.put(ME_AVATAR, token=owner.access, data=PNG), 415)  # no Content-Type
    # over 2 MiB: 413 (declared length and chunked), no change
    assert_problem(put_avatar(d, owner.access, PNG + bytes(2 * MIB), "image/png"), 413)
    chunks = iter([PNG, bytes(MIB), bytes(MIB)])
    assert_problem(put_avatar(d, owner.access, chunks, "image/png"), 413)
    assert d.me(owner.access).json()["avatar_url"] is None
    assert stored() == []

    # upload: exactly 2 MiB is fine
    big = PNG + bytes(2 * MIB - len(PNG))
    r = put_avatar(d, owner.access, big, "image/png")
    assert r.status_code == 200, r.text
    user = r.json()
    url = user["avatar_url"]
    digest = hashlib.sha256(big).hexdigest()
    assert url == f"/api/v1/users/{owner.id}/avatar?v={digest[:16]}"
    assert d.me(owner.access).json() == user
    public = d.get(f"/api/v1/users/{owner.id}", token=viewer.access).json()
    assert public == {"id": owner.id, "name": "Pictured", "avatar_url": url}
    r = d.get(url, token=viewer.access)
    assert r.status_code == 200
    assert r.content == big
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["ETag"] == etag_of(big)
    assert r.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    plain = d.get(get_url, token=viewer.access)
    assert plain.status_code == 200 and plain.content == big
    assert plain.headers["Cache-Control"] == "private, no-cache"
    for inm in (etag_of(big), "W/" + etag_of(big), f'"nope", {etag_of(big)}', "*"):
        nm = d.get(get_url, token=viewer.access, headers={"If-None-Match": inm})
        assert nm.status_code == 304, (inm, nm.status_code)
        assert nm.content == b"" and nm.headers["ETag"] == etag_of(big)
    assert d.get(get_url, token=viewer.access,
                 headers={"If-None-Match": '"other"'}).status_code == 200
    assert len(stored()) == 1

    # replace: a new ETag and URL, the old object goes, the old ETag no longer matches
    r = put_avatar(d, owner.access, JPEG, "image/jpeg; charset=binary")
    assert r.status_code == 200, r.text
    assert r.json()["avatar_url"] != url
    g = d.get(get_url, token=viewer.access, headers={"If-None-Match": etag_of(big)})
    assert g.status_code == 200 and g.content == JPEG
    assert g.headers["Content-Type"] == "image/jpeg" and g.headers["ETag"] == etag_of(JPEG)
    assert len(stored()) == 1
    # the same image again: the same key, still one object
    assert put_avatar(d, owner.access, JPEG, "image/jpeg").status_code == 200
    r = put_avatar(d, owner.access, WEBP, "IMAGE/WEBP")
    assert r.status_code == 200, r.text
    g = d.get(r.json()["avatar_url"], token=owner.access)
    assert g.content == WEBP and g.headers["Content-Type"] == "image/webp"
    assert len(stored()) == 1

    # delete: 204, then 404; deleting again is still 204
    assert d.delete(ME_AVATAR, token=owner.access).status_code == 204
    assert_problem(d.get(get_url, token=viewer.access), 404)
    assert d.me(owner.access).json()["avatar_url"] is None
    assert d.delete(ME_AVATAR, token=owner.access).status_code == 204
    assert stored() == []

    # deleting the account deletes the object
    assert put_avatar(d, owner.access, PNG, "image/png").status_code == 200
    assert put_avatar(d, viewer.access, JPEG, "image/jpeg").status_code == 200
    assert len(stored()) == 2
    assert d.delete("/api/v1/users/me", token=owner.access).status_code == 204
    assert_problem(d.get(get_url, token=viewer.access), 404)
    left = stored()
    assert len(left) == 1 and viewer.id in left[0], left
    return viewer


def test_avatars_on_the_data_dir(docket):
    check_lifecycle(docket, lambda: stored_files(docket))
    # nothing else was written next to the objects (no temporary files left)
    assert all(f.startswith("avatars/") for f in stored_files(docket))


@pytest.fixture
def s3(tmp_path):
    srv = S3Server(tmp_path).start()
    yield srv
    srv.stop()


def test_avatars_on_s3(mode, docket_factory, s3):
    d = docket_factory(mode, extra_env=s3.env())
    viewer = check_lifecycle(d, s3.object_keys)
    assert stored_files(d) == []  # nothing on the local disk

    # the store goes down: 503 with Retry-After, and nothing changes
    before = d.me(viewer.access).json()
    s3.stop()
    r = put_avatar(d, viewer.access, PNG, "image/png")
    assert_problem(r, 503)
    assert int(r.headers["Retry-After"]) > 0
    assert d.me(viewer.access).json() == before
    assert_problem(d.get(f"/api/v1/users/{viewer.id}/avatar", token=viewer.access), 503)
    assert_problem(d.delete(ME_AVATAR, token=viewer.access), 503)
    assert_problem(d.delete("/api/v1/users/me", token=viewer.access), 503)
    assert d.me(viewer.access).json() == before

    # it comes back: docket recovers by itself
    s3.start()
    g = d.get(before["avatar_url"], token=viewer.access)
    assert g.status_code == 200 and g.content == JPEG
    assert put_avatar(d, viewer.access, PNG, "image/png").status_code == 200
    assert d.delete("/api/v1/users/me", token=viewer.access).status_code == 204
    assert s3.object_keys() == []


def test_s3_wrong_secret_stops_the_start(tmp_path, s3):
    env = helpers.base_env(jwt_secret=helpers.random_secret(), extra=s3.env(secret="not-it"))
    port = helpers.free_port()
    r = helpers.run_cli(["all", f"--server.port={port}", "--server.host=127.0.0.1",
                         f"--storage.data_dir={tmp_path}/data"], env=env, cwd=str(tmp_path))
    assert r.returncode != 0
    assert "SignatureDoesNotMatch" in r.stderr, r.stderr
    assert "s3.secret_access_key" in r.stderr, r.stderr
    assert "not-it" not in r.stderr + r.stdout  # the secret is never printed
    # half an S3 configuration is refused too
    env2 = helpers.base_env(jwt_secret=helpers.random_secret(),
                            extra={"S3_ENDPOINT": s3.endpoint})
    r = helpers.run_cli(["all", f"--server.port={port}", "--server.host=127.0.0.1",
                         f"--storage.data_dir={tmp_path}/data"], env=env2, cwd=str(tmp_path))
    assert r.returncode != 0 and "s3.bucket" in r.stderr, r.stderr
