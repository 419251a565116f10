"""api/openapi.yaml and the binary's route tables describe the same operations."""

import os
import subprocess

import yaml

import helpers

METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}


def test_every_route_is_documented_and_every_documented_route_exists():
    out = subprocess.run([helpers.DOCKET_BIN, "routes"], stdout=subprocess.PIPE, text=True,
                         check=True, timeout=30).stdout
    served = {tuple(line.split(" ", 1)) for line in out.splitlines() if line.strip()}
    assert len(served) >= 10, out
    with open(os.path.join(helpers.REPO, "api", "openapi.yaml")) as f:
        doc = yaml.safe_load(f)
    documented = {(m.upper(), path) for path, item in doc["paths"].items()
                  for m in item if m in METHODS}
    assert served - documented == set(), f"served but not in openapi.yaml: {served - documented}"
    assert documented - served == set(), f"documented but not served: {documented - served}"
