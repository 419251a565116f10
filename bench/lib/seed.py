#!/usr/bin/python3
"""Seeds a running Docket through its public API and writes the data file the wrk scripts read.

Registers --users users, logs each in (the server's own Argon2id parameters: ~1 hash each),
creates --tasks tasks per user with varied English titles and descriptions, labels,
priorities, statuses and due dates, some assigned to another user; a few worker threads,
one keep-alive connection each. Every reply is checked; any failure stops the seeding.

Projects (for the `project_list` scenario): --projects projects, each with --project-tasks
tasks, shared by the last --project-members users, each of whom belongs to several of them
(every project has about half of that group); the other users belong to none, so `task_list`
stays a personal list.

Data file (one record per line): `P <password>`, `W <search word>`, then per user
`U <access token> <user id> <email>` followed by `T <task id>` for each task the user owns
and `J <project id>` for each project the user belongs to.
"""

import argparse
import concurrent.futures
import json
import random
import sys
import threading
import time

import requests

PASSWORD = "correct horse battery staple"
TIMEOUT = 30

VERBS = ["Review", "Update", "Fix", "Write", "Plan", "Migrate", "Test", "Deploy", "Document",
         "Refactor", "Design", "Investigate", "Clean up", "Prepare", "Schedule", "Organise",
         "Check", "Draft", "Measure", "Improve"]
NOUNS = ["budget", "report", "invoice", "database", "backup", "release", "dashboard", "meeting",
         "roadmap", "newsletter", "onboarding", "contract", "server", "checklist", "website",
         "presentation", "survey", "payroll", "inventory", "workshop", "proposal", "calendar",
         "campaign", "firewall", "migration", "spreadsheet", "interview", "handbook", "supplier",
         "warehouse", "customer", "feedback", "analytics", "pipeline", "certificate", "license",
         "deadline", "prototype", "benchmark", "garden", "kitchen", "holiday", "conference"]
ADJECTIVES = ["quarterly", "annual", "urgent", "internal", "public", "monthly", "new", "legacy",
              "shared", "weekly", "critical", "remote", "mobile", "final", "draft", "secure"]
FILLER = ["the", "for", "with", "before", "after", "and", "our", "team", "next", "week",
          "running", "notes", "from", "client", "call", "about", "changes", "plan", "items",
          "pending", "review", "friday", "monday", "numbers", "owner", "agreed", "please",
          "follow", "up", "on", "open", "questions", "tickets", "ready", "launch", "office"]
LABELS = ["backend", "frontend", "ops", "docs", "bug", "feature", "urgent", "later", "finance",
          "hr", "q3", "customer"]
PRIORITIES = ["low", "medium", "high", "urgent"]
STATUSES = ["todo", "todo", "in_progress", "done"]
# Words the `search` scenario asks for (they occur in titles and descriptions).
SEARCH_WORDS = ["budget", "report", "database", "release", "meeting", "server", "invoice",
                "backup", "roadmap", "customer", "migration", "deadline", "workshop", "running",
                "quarterly", "feedback", "prototype", "kitchen", "analytics", "contract"]

_local = threading.local()


def session():
    s = getattr(_local, "s", None)
    if s is None:
        s = _local.s = requests.Session()
    return s


def call(method, url, expect, token=None, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = session().request(method, url, json=body, headers=headers, timeout=TIMEOUT)
    if r.status_code != expect:
        raise RuntimeError(f"{method} {url} -> {r.status_code} (expected {expect}): "
                           f"{r.text[:300]}")
    return r.json() if r.content else None


def sentence(rng, n):
    words = [rng.choice(FILLER + NOUNS + ADJECTIVES) for _ in range(n)]
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def task_body(rng, now, other_user_id):
    title = f"{rng.choice(VERBS)} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    if rng.random() < 0.5:
        title += f" {rng.choice(['for', 'with', 'and'])} {rng.choice(NOUNS)}"
    body = {
        "title": title,
        "description": " ".join(sentence(rng, rng.randint(6, 18))
                                for _ in range(rng.randint(1, 4))),
        "priority": rng.choice(PRIORITIES),
        "status": rng.choice(STATUSES),
        "labels": rng.sample(LABELS, rng.randint(0, 3)),
    }
    if rng.random() < 0.7:
        due = now + rng.randint(-10, 60) * 86400 + rng.randint(0, 86399)
        body["due_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
    if other_user_id and rng.random() < 0.15:
        body["assignee_id"] = other_user_id
    return body


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--tasks", type=int, default=200, help="tasks per user")
    ap.add_argument("--projects", type=int, default=10)
    ap.add_argument("--project-members", type=int, default=10,
                    help="the last N users share the projects")
    ap.add_argument("--project-tasks", type=int, default=200, help="tasks per project")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--run-id", default=str(int(time.time())))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    api = a.base.rstrip("/") + "/api/v1"
    t0 = time.monotonic()

    emails = [f"bench-{a.run_id}-{i:04d}@example.com" for i in range(a.users)]
    with concurrent.futures.ThreadPoolExecutor(a.threads) as ex:
        users = list(ex.map(lambda i: call("POST", f"{api}/auth/register", 201, body={
            "email": emails[i], "password": PASSWORD, "name": f"Bench User {i}"}),
            range(a.users)))
        t1 = time.monotonic()
        logins = list(ex.map(lambda e: call("POST", f"{api}/auth/login", 200, body={
            "email": e, "password": PASSWORD}), emails))
        t2 = time.monotonic()
        ids = [u["id"] for u in users]
        tokens = [lg["access_token"] for lg in logins]
        now = int(time.time())

        def create_all(i):
            rng = random.Random(a.seed * 100003 + i)
            owned = []
            for _ in range(a.tasks):
                other = ids[rng.randrange(len(ids))] if len(ids) > 1 else None
                if other == ids[i]:
                    other = None
                t = call("POST", f"{api}/tasks", 201, token=tokens[i],
                         body=task_body(rng, now, other))
                owned.append(t["id"])
            return owned

        owned = list(ex.map(create_all, range(a.users)))

        # projects: owned round-robin by the member group, each shared with half of it
        group = list(range(max(0, a.users - a.project_members), a.users)) if a.projects else []
        joined = {i: [] for i in range(a.users)}

        def make_project(k):
            rng = random.Random(a.seed * 7919 + k)
            owner = group[k % len(group)]
            p = call("POST", f"{api}/projects", 201, token=tokens[owner],
                     body={"name": f"Bench project {a.run_id} {k}"})
            members = [owner] + rng.sample([g for g in group if g != owner],
                                           max(0, len(group) // 2 - 1))
            for m in members[1:]:
                call("POST", f"{api}/projects/{p['id']}/members", 201, token=tokens[owner],
                     body={"email": emails[m], "role": rng.choice(["editor", "viewer"])})
            for _ in range(a.project_tasks):
                body = task_body(rng, now, ids[rng.choice(members)])
                body["project_id"] = p["id"]
                call("POST", f"{api}/tasks", 201, token=tokens[owner], body=body)
            return p["id"], members

        for pid, members in (ex.map(make_project, range(a.projects)) if group else []):
            for m in members:
                joined[m].append(pid)
    t3 = time.monotonic()

    with open(a.out, "w") as f:
        f.write(f"P {PASSWORD}\n")
        for w in SEARCH_WORDS:
            f.write(f"W {w}\n")
        for i in range(a.users):
            f.write(f"U {tokens[i]} {ids[i]} {emails[i]}\n")
            for tid in owned[i]:
                f.write(f"T {tid}\n")
            for pid in joined[i]:
                f.write(f"J {pid}\n")
    ntasks = sum(len(o) for o in owned) + a.projects * a.project_tasks * (1 if group else 0)
    print(json.dumps({"users": a.users, "tasks": ntasks, "projects": a.projects if group else 0, "register_s": round(t1 - t0, 2),
                      "login_s": round(t2 - t1, 2), "tasks_s": round(t3 - t2, 2),
                      "tasks_per_s": round(ntasks / max(t3 - t2, 1e-9), 1)}))


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, requests.RequestException) as exc:
        print(f"seed: {exc}", file=sys.stderr)
        sys.exit(1)
