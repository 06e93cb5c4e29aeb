# Sourced by .ci/run: makes sure a PostgreSQL server answers on
# 127.0.0.1:5432 and a fresh database `kessai_ci` exists; sets PG_URL.
# Installs Debian's postgresql package if no server is reachable.

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

ensure_postgres() {
  if ! command -v pg_isready >/dev/null 2>&1 || ! pg_up; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
      echo "installing postgresql from Debian"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local ver
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    if [ -z "$ver" ]; then
      pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -n 1)" main
      ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    fi
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || pg_ctlcluster "$ver" main start
    for _ in $(seq 1 60); do pg_up && break; sleep 1; done
    pg_up || { echo "PostgreSQL did not start" >&2; return 1; }
  fi
  # Trust auth on loopback (as on the CI machines) or a password we set.
  if psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    PG_URL="postgres://postgres@127.0.0.1:5432/kessai_ci"
    PG_URL_REDACTED="$PG_URL"
  else
    su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'kessai-ci'\"" >/dev/null
    export PGPASSWORD=kessai-ci
    PG_URL="postgres://postgres:kessai-ci@127.0.0.1:5432/kessai_ci"
    PG_URL_REDACTED="postgres://postgres:***@127.0.0.1:5432/kessai_ci"
  fi
  psql -h 127.0.0.1 -U postgres -d postgres -qc 'DROP DATABASE IF EXISTS kessai_ci' >/dev/null
  psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE kessai_ci' >/dev/null
}
