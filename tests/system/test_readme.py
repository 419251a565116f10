"""The README's "Try it" block runs, as written, against a fresh `docket all`.

The sh blocks between each pair of readme-test marks are concatenated and run by bash with `set -euo
pipefail`, after `localhost:3000` is replaced by the test's port. `curl` is wrapped so that a
call whose status is not shown (no `-i`, no `-w`) fails the block on any 4xx/5xx; the statuses
that are shown (`-w '%{http_code}'` lines and the status lines of `-i`) must equal, in order,
the `# NNN` comments that end the block's lines. So the README cannot drift from the binary.
"""

import os
import re
import shutil
import subprocess

import pytest

import helpers

BEGIN = "<!-- readme-test: begin"
END = "<!-- readme-test: end"

WRAPPER = r'''
curl() {
  case " $* " in
    *" -i "*|*" -w "*) command curl "$@" ;;
    *) command curl --fail-with-body "$@" ;;
  esac
}
set -euo pipefail
'''


def readme_block():
    with open(os.path.join(helpers.REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = []
    for region in re.findall(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.S):
        blocks += re.findall(r"```sh\n(.*?)```", region, re.S)
    assert blocks, "no sh block between the readme-test marks"
    return "\n".join(blocks)


def expected_statuses(block):
    return [m.group(1) for line in block.splitlines()
            for m in [re.search(r"#\s*(\d{3})\s*$", line)] if m]


def shown_statuses(out):
    codes = []
    for line in out.splitlines():
        line = line.strip()
        m = re.match(r"^HTTP/\d(?:\.\d)? (\d{3})\b", line)
        if m:
            codes.append(m.group(1))
        elif re.fullmatch(r"\d{3}", line):
            codes.append(line)
    return codes


def test_the_readme_block_runs_top_to_bottom(docket_factory, tmp_path):
    if not shutil.which("jq"):
        pytest.fail("jq is missing: scripts/install-deps.sh test installs it")
    d = docket_factory("sqlite")
    block = readme_block()
    script = WRAPPER + block.replace("localhost:3000", f"127.0.0.1:{d.port}")
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=120)
    assert run.returncode == 0, f"the README block failed (exit {run.returncode}):\n{run.stdout}"
    want = expected_statuses(block)
    assert len(want) >= 5, want
    assert shown_statuses(run.stdout) == want, run.stdout
    # what the prose around the block promises
    stream = (tmp_path / "bob-stream.txt").read_text()
    assert "event: notification" in stream and "task.assigned" in stream, stream
    assert "Location: " in run.stdout and 'ETag: "1"' in run.stdout, run.stdout
    assert "application/problem+json" in run.stdout, run.stdout


def test_every_status_comment_is_checked():
    """A `# NNN` comment must sit on a line whose status the block shows (-i or -w)."""
    block = readme_block()
    lines = block.splitlines()
    for i, line in enumerate(lines):
        if re.search(r"#\s*\d{3}\s*$", line):
            stmt = [line]
            j = i
            while j > 0 and lines[j - 1].rstrip().endswith(("\\", "|")):
                j -= 1
                stmt.insert(0, lines[j])
            text = " ".join(stmt)
            assert " -i " in text or " -w " in text, f"status comment on an unchecked line: {text}"
