"""A throwaway OTLP/HTTP trace receiver for the tracing tests: tools/otlp/otlp-receiver.mjs on
npm @opentelemetry/otlp-transformer 0.57.2 (pinned in tools/otlp and installed there with
`npm ci` on first use). It decodes each export with the official generated protobuf code and
rejects (400) payloads that break the OTLP/JSON mapping; spans() lists what it took."""

import pathlib
import subprocess

import requests

import helpers

TOOLS = pathlib.Path(helpers.REPO) / "tools" / "otlp"


def ensure_installed():
    """`npm ci` in tools/otlp when node_modules is missing or older than the lock file."""
    stamp = TOOLS / "node_modules" / ".package-lock.json"
    lock = TOOLS / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=TOOLS,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"npm ci in {TOOLS} failed:\n{r.stdout}\n{r.stderr}")
    stamp.touch()


class OtlpReceiver:
    def __init__(self, workdir):
        ensure_installed()
        self.port = helpers.free_port()
        self.log_path = pathlib.Path(workdir) / "otlp-receiver.log"
        self.proc = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                ["node", str(TOOLS / "otlp-receiver.mjs"), str(self.port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

        def up():
            try:
                return requests.get(self.endpoint + "/spans", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        helpers.wait_until(up, 20, what="the OTLP receiver to listen")
        return self

    def spans(self):
        return requests.get(self.endpoint + "/spans", timeout=5).json()

    def rejected(self):
        return requests.get(self.endpoint + "/rejected", timeout=5).json()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
