"""A throwaway S3 server for the avatar tests: npm @20minutes/s3rver 4.0.4 (it checks AWS SigV4
signatures; account S3RVER / secret S3RVER), pinned in tools/s3rver and installed there with
`npm ci` on first use, started on a free 127.0.0.1 port with its objects in a directory of its
own. stop() and start() again on the same port and directory simulate an outage."""

import os
import pathlib
import signal
import subprocess
import time

import helpers

TOOLS = pathlib.Path(helpers.REPO) / "tools" / "s3rver"
ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"


def ensure_installed():
    """`npm ci` in tools/s3rver when node_modules is missing or older than the lock file."""
    stamp = TOOLS / "node_modules" / ".package-lock.json"
    lock = TOOLS / "package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=TOOLS,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"npm ci in {TOOLS} failed:\n{r.stdout}\n{r.stderr}")
    stamp.touch()


class S3Server:
    def __init__(self, workdir, bucket="docket-avatars"):
        ensure_installed()
        self.dir = pathlib.Path(workdir) / "s3"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bucket = bucket
        self.port = helpers.free_port()
        self.log_path = pathlib.Path(workdir) / "s3rver.log"
        self.proc = None

    @property
    def endpoint(self):
        # *.localhost resolves to the loopback address inside libcurl. The tests use path style:
        # s3rver 4.0.4 checks a virtual-host request's signature against /bucket/key (the SigV2
        # convention) where S3 signs the request's own path, so a correct virtual-host client
        # fails there; virtual-host addressing is covered by tests/unit/test_blob_s3.c.
        return f"http://s3.localhost:{self.port}"

    def env(self, secret=SECRET_KEY):
        return {"S3_ENDPOINT": self.endpoint, "S3_BUCKET": self.bucket,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret,
                "DOCKET_S3_URL_STYLE": "path", "DOCKET_S3_RETRY_BACKOFF": "20ms"}

    def start(self):
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                ["node", str(TOOLS / "s3-server.mjs"), str(self.port), str(self.dir), self.bucket],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        helpers.wait_until(lambda: "ready" in self.log_path.read_text()[offset:] or self._died(),
                           20, what="s3rver ready")
        if self.proc.poll() is not None:
            raise RuntimeError(f"s3rver exited: {self.log_path.read_text()}")
        return self

    def _died(self):
        return self.proc.poll() is not None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def object_keys(self):
        """The keys stored in the bucket (read from s3rver's directory)."""
        root = self.dir / self.bucket
        keys = []
        for dirpath, _, files in os.walk(root):
            for f in files:
                if f.endswith("._S3rver_object"):
                    full = os.path.join(dirpath, f[:-len("._S3rver_object")])
                    keys.append(os.path.relpath(full, root))
        return sorted(keys)
