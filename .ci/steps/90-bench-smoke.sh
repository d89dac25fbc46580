#!/usr/bin/env bash
# Keep the benchmark harness working: small numbers, under a minute; fails only if it breaks.
set -euo pipefail
bash bench/smoke.sh
