"""The web console at /: served by the edge processes only (`docket all`, `docket gateway`), with
its security and caching headers, and end to end in a real browser (Debian's chromium driven by
npm playwright-core, pinned in tools/console-e2e and installed there with `npm ci` on first
use) in one process and in split mode through the gateway.

Set DOCKET_CONSOLE_SHOTS=DIR to keep the browser test's screenshots (docs/console/ holds the
README's)."""

import gzip
import os
import pathlib
import re
import subprocess

import pytest
import requests

import helpers

TOOLS = pathlib.Path(helpers.REPO) / "tools" / "console-e2e"
CHROMIUM = "/usr/bin/chromium"
FIRST_LOAD_BUDGET = 100 * 1024  # compressed bytes of everything the first page load fetches


def ensure_installed():
    """`npm ci` in tools/console-e2e when node_modules is missing or older than the lock file."""
    stamp = TOOLS / "node_modules" / ".package-lock.json"
    lock = TOOLS / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=TOOLS,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"npm ci in {TOOLS} failed:\n{r.stdout}\n{r.stderr}")
    stamp.touch()


def assets_of(html):
    """The versioned asset URLs the page loads (stylesheet, icon, module scripts)."""
    return sorted(set(re.findall(r'(?:href|src)="(/assets/[0-9a-f]{16}/[\w.-]+)"', html)))


def check_security_headers(r):
    csp = r.headers["Content-Security-Policy"]
    directives = dict((d.strip().split(" ", 1) + [""])[:2] for d in csp.split(";"))
    assert directives["default-src"] == "'none'", csp
    assert directives["script-src"] == "'self'", csp  # no inline script, no other origin
    assert directives["style-src"] == "'self'", csp
    assert directives["connect-src"] == "'self'", csp
    assert directives["frame-ancestors"] == "'none'", csp
    assert "unsafe" not in csp and "http" not in csp, csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"


def test_console_headers_caching_and_size(docket_factory):
    d = docket_factory("sqlite")
    # the page: HTML, revalidated every time (no-cache + ETag), gzip when asked for
    plain = requests.get(d.url("/"), headers={"Accept-Encoding": "identity"}, timeout=10)
    assert plain.status_code == 200
    assert plain.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Cache-Control"] == "no-cache"
    check_security_headers(plain)
    html = plain.text
    assert "<script" not in html.replace('<script type="module" src="/assets/', ""), \
        "an inline script in index.html"
    assets = assets_of(html)
    assert any(a.endswith("/app.js") for a in assets) and any(a.endswith("/app.css") for a in assets)

    zipped = requests.get(d.url("/"), headers={"Accept-Encoding": "gzip, deflate"}, stream=True,
                          timeout=10)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == "Accept-Encoding"
    raw = zipped.raw.read(decode_content=False)
    assert gzip.decompress(raw).decode() == html
    assert zipped.headers["ETag"] != plain.headers["ETag"]  # two representations, two tags
    refused = requests.get(d.url("/"), headers={"Accept-Encoding": "gzip;q=0, br"}, timeout=10)
    assert "Content-Encoding" not in refused.headers

    # conditional requests: 304 with the same validator, for each representation
    for r, enc in ((plain, "identity"), (zipped, "gzip")):
        again = requests.get(d.url("/"), headers={"If-None-Match": r.headers["ETag"],
                                                  "Accept-Encoding": enc}, timeout=10)
        assert again.status_code == 304, enc
        assert again.headers["ETag"] == r.headers["ETag"]
        assert again.content == b""
    stale = requests.get(d.url("/"), headers={"If-None-Match": '"0123"'}, timeout=10)
    assert stale.status_code == 200
    head = requests.head(d.url("/"), timeout=10)
    assert head.status_code == 200 and head.content == b""

    # the assets: a year of cache (their URL changes with any file), gzip, right types
    total = len(raw)
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".svg": "image/svg+xml"}
    for a in assets:
        r = requests.get(d.url(a), headers={"Accept-Encoding": "gzip"}, stream=True, timeout=10)
        assert r.status_code == 200, a
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable", a
        assert r.headers["Content-Type"] == types[os.path.splitext(a)[1]], a
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        body = r.raw.read(decode_content=False)
        total += len(body)
        if r.headers.get("Content-Encoding") == "gzip":
            assert len(gzip.decompress(body)) > len(body)
        assert requests.get(d.url(a), headers={"If-None-Match": r.headers["ETag"],
                                               "Accept-Encoding": "gzip"},
                            timeout=10).status_code == 304
    assert total < FIRST_LOAD_BUDGET, f"first load is {total} bytes compressed"

    # another build's asset path, an unknown file, index.html under /assets: 404 problems
    version = assets[0].split("/")[2]
    for path in ("/assets/0000000000000000/app.js", f"/assets/{version}/nope.js",
                 f"/assets/{version}/index.html", "/index.html"):
        helpers.assert_problem(requests.get(d.url(path), timeout=10), 404)
    # the API and ops routes are unchanged next to it
    assert requests.get(d.url("/health"), timeout=10).json() == {"status": "ok"}
    assert requests.post(d.url("/"), timeout=10).status_code == 405


def test_console_only_on_the_edge(docket_factory):
    """Split mode: the gateway serves the console; a service process does not."""
    d = docket_factory("split")
    r = requests.get(d.url("/"), timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    check_security_headers(r)
    for a in assets_of(r.text):
        assert requests.get(d.url(a), timeout=10).status_code == 200, a
    for name, svc in d.services.items():
        helpers.assert_problem(requests.get(svc.url("/"), timeout=10), 404)


@pytest.mark.parametrize("mode_name", ["sqlite", "split"])
def test_console_in_a_browser(docket_factory, tmp_path, mode_name):
    assert os.path.exists(CHROMIUM), \
        f"{CHROMIUM} is missing: scripts/install-deps.sh test installs Debian's chromium"
    ensure_installed()
    # access tokens of 5 s: the page's refresh rotation runs during the test
    d = docket_factory(mode_name, extra_args=["--auth.jwt_expiry=5s"])
    args = ["node", str(TOOLS / "e2e.mjs"), d.base_url, "--short-tokens"]
    # the e-mailed reset link: mail goes to <data dir>/mail without SMTP (split mode: the auth
    # process's default data dir, ./data in its working directory)
    data_dir = d.data_dir or os.path.join(d.cwd, "data")
    args += ["--mail-dir", os.path.join(data_dir, "mail")]
    shots = os.environ.get("DOCKET_CONSOLE_SHOTS")
    args += ["--shots", shots if shots and mode_name == "sqlite" else str(tmp_path / "shots")]
    r = subprocess.run(args, cwd=TOOLS, stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=150)
    assert r.returncode == 0, f"browser test failed:\n{r.stdout}\n{r.stderr}"
    assert r.stdout.rstrip().endswith("ok"), r.stdout
