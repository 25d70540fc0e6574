#!/usr/bin/env bash
# Start the local services the test suite talks to, when they are not answering:
# Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (database `test`); and install
# Chromium for the browser tests and docker-compose (to validate docker-compose.yml) when missing.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! redis_up; then
  if ! command -v redis-server >/dev/null; then
    as_root apt-get update -qq && as_root apt-get install -y -qq redis-server >/dev/null
  fi
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "redis did not start" >&2; exit 1; }
fi

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if command -v pg_isready >/dev/null && ! pg_up; then
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  for _ in $(seq 50); do pg_up && break; sleep 0.2; done
fi

# Headless Chromium for the web page's end-to-end tests (tests/web), from Debian's packages:
# Playwright drives it through executable_path and never downloads a browser of its own.
if [ ! -x /usr/bin/chromium ]; then
  as_root apt-get update -qq && as_root apt-get install -y -qq chromium >/dev/null
fi

# Debian's docker-compose checks docker-compose.yml (tests/test_deploy.py); no Docker engine runs.
if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; then
  as_root apt-get update -qq && as_root apt-get install -y -qq docker-compose >/dev/null
fi

echo "services: redis $(redis_up && echo up || echo down), postgres $(pg_up && echo up || echo down)"
