"""docket backup / restore: the embedded SQLite database, copied online and put back."""

import os
import subprocess

import helpers


def run(d, *args):
    return subprocess.run([helpers.DOCKET_BIN, *args, f"--storage.data_dir={d.data_dir}"],
                          env=d.env, cwd=d.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=60)


def test_backup_while_running_then_restore(docket_factory, tmp_path):
    d = docket_factory("sqlite")
    a = d.new_user()
    tasks = [d.post("/api/v1/tasks", token=a.access, json={"title": f"task {i}"}).json()["id"]
             for i in range(5)]
    backup = tmp_path / "docket-backup.db"
    r = run(d, "backup", str(backup))            # online, while docket serves
    assert r.returncode == 0, r.stderr
    assert backup.stat().st_size > 0
    # a second backup never overwrites the first
    r = run(d, "backup", str(backup))
    assert r.returncode != 0 and "exists" in r.stderr

    # losses after the backup
    assert d.delete(f"/api/v1/tasks/{tasks[0]}", token=a.access).status_code == 204
    assert d.delete("/api/v1/users/me", token=a.access).status_code == 204
    assert d.stop() == 0

    r = run(d, "restore", str(backup))
    assert r.returncode == 0, r.stderr
    d.start()
    s = d.new_session(a)
    items = d.get("/api/v1/tasks?limit=100", token=s.access).json()["items"]
    assert sorted(t["id"] for t in items) == sorted(tasks)


def test_restore_refuses_what_is_not_a_docket_database(docket_factory, tmp_path):
    d = docket_factory("sqlite")
    a = d.new_user()
    assert d.stop() == 0
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    r = run(d, "restore", str(junk))
    assert r.returncode != 0 and "not a sound Docket database" in r.stderr
    d.start()
    assert d.me(d.new_session(a).access).status_code == 200   # nothing lost


def test_backup_usage_and_postgres(docket_factory):
    r = subprocess.run([helpers.DOCKET_BIN, "backup"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 2 and "usage" in r.stderr
    d = docket_factory("postgres")
    r = subprocess.run([helpers.DOCKET_BIN, "backup", "/tmp/never-written.db"], env=d.env,
                       cwd=d.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=30)
    assert r.returncode == 2 and "pg_dump" in r.stderr
    assert not os.path.exists("/tmp/never-written.db")
