#!/usr/bin/env bash
# The README's first command on a fresh clone, before anything else has installed a thing:
# in a clone of this commit in a temporary folder, with REDIS_URL unset, `make run` builds
# its own virtualenv, writes .env and starts the broker with the embedded Redis on a free
# port. Then the demo agent asks, the CLI approves as alice, the demo completes, and SIGINT
# stops the broker and its embedded redis-server. (A green `make test` once hid a
# `make run` that crashed on a fresh clone: this step runs first, in its own venv.)
set -euo pipefail
src=$(pwd)
work=$(mktemp -d)
pgid=""
cleanup() {
  if [ -n "${pgid}" ] && kill -0 -- "-${pgid}" 2>/dev/null; then kill -KILL -- "-${pgid}" 2>/dev/null || true; fi
  pkill -KILL -f "${work}/" 2>/dev/null || true
  rm -rf "${work}"
}
trap cleanup EXIT
git clone -q "${src}" "${work}/jitgate"
cd "${work}/jitgate"
git -c advice.detachedHead=false checkout -q "$(git -C "${src}" rev-parse HEAD)"
unset REDIS_URL JITGATE_TEST_REDIS_URL
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# `make run` in its own process group, as a terminal would run it (Ctrl-C reaches the group).
setsid make run PORT="${port}" >"${work}/run.log" 2>&1 &
pgid=$!
deadline=$(( $(date +%s) + 600 ))
until curl -fsS "http://127.0.0.1:${port}/healthz" >/dev/null 2>&1; do
  if ! kill -0 "${pgid}" 2>/dev/null; then echo "make run exited before the broker was healthy:"; cat "${work}/run.log"; exit 1; fi
  if [ "$(date +%s)" -gt "${deadline}" ]; then echo "broker not healthy after 600 s:"; cat "${work}/run.log"; exit 1; fi
  sleep 1
done
echo "make run: healthy on port ${port} (REDIS_URL unset)"
# It prints the console sign-in link (the first-run banner) for a newcomer.
for _ in $(seq 1 20); do grep -q "/console/login?token=" "${work}/run.log" && break; sleep 0.5; done
grep -q "/console/login?token=" "${work}/run.log" || { echo "make run printed no sign-in link:"; cat "${work}/run.log"; exit 1; }
test -S .jitgate/redis/redis.sock || { echo "no embedded Redis socket under .jitgate/redis"; exit 1; }

J=.venv/bin/jitgate
timeout 120 "${J}" demo --work 1 >"${work}/demo.log" 2>&1 &
demo=$!
rid=""
for _ in $(seq 1 60); do
  rid=$("${J}" requests list --status pending | awk '$3 == "demo-agent" {print $1; exit}')
  [ -n "${rid}" ] && break
  sleep 1
done
[ -n "${rid}" ] || { echo "the demo's request never appeared:"; cat "${work}/demo.log"; exit 1; }
"${J}" requests approve "${rid}" --as alice
if ! wait "${demo}"; then echo "jitgate demo failed:"; cat "${work}/demo.log"; exit 1; fi
grep -q "done; reported completion" "${work}/demo.log" || { echo "the demo did not complete:"; cat "${work}/demo.log"; exit 1; }
echo "jitgate demo: approved by alice from the CLI, completed (request ${rid})"

# Ctrl-C: the broker and its embedded redis-server stop.
kill -INT -- "-${pgid}"
for _ in $(seq 1 30); do kill -0 -- "-${pgid}" 2>/dev/null || break; sleep 0.5; done
if kill -0 -- "-${pgid}" 2>/dev/null; then echo "make run still running 15 s after SIGINT:"; cat "${work}/run.log"; exit 1; fi
if pgrep -f "${work}/jitgate/.jitgate/redis" >/dev/null || pgrep -f "${work}/jitgate/.venv/.*redis-server" >/dev/null; then
  echo "the embedded redis-server outlived the broker"; pgrep -af redis-server; exit 1
fi
test ! -S .jitgate/redis/redis.sock || { echo "the embedded Redis left its socket behind"; exit 1; }
pgid=""
echo "SIGINT stopped the broker and the embedded Redis"
