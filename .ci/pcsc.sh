#!/usr/bin/env bash
# Real PC/SC stack test for kessai-card-io.
#
# Installs pcsc-lite (pcscd), vsmartcard's virtual reader driver (vpcd),
# libpcsclite-dev (to build the `pcsc` feature), opensc and pcsc-tools;
# makes sure vpcd listens on 127.0.0.1:35963; starts pcscd in the background
# if no suitable one is running; waits until a PC/SC client sees the
# "Virtual PCD" reader; then runs the ignored real-stack tests with
# KESSAI_TEST_PCSC=1 (so a missing stack fails instead of skipping).
#
# Idempotent: packages already installed are left alone, a running pcscd that
# already shows the vpcd reader is reused, and a pcscd this script starts is
# stopped again (by its pid) when the script exits.
#
# Runs as root on Debian bookworm/trixie (CI). Env:
#   KESSAI_PCSC_STATE  state/log directory (default: /tmp/kessai-pcsc)
#   KESSAI_PCSC_KEEP=1 leave the pcscd started here running
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${KESSAI_PCSC_STATE:-/tmp/kessai-pcsc}"
VPCD_PORT=35963
VPCD_PORT_HEX=0x8C7B
READER_NAME="Virtual PCD"
STOCK_CONF=/etc/reader.conf.d/vpcd
PACKAGES=(pcscd vsmartcard-vpcd libpcsclite-dev opensc pcsc-tools pkg-config)

log() { printf '[pcsc.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "must run as root (or with sudo available)"
    SUDO=(sudo)
fi

mkdir -p "$STATE"

# --- 1. packages ---------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    for p in "${missing[@]}"; do
        if ! apt-cache policy "$p" | grep -q 'Candidate: [^(]'; then
            die "package $p is not available in this Debian release"
        fi
    done
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    log "packages already installed"
fi

# --- 2. vpcd configuration ------------------------------------------------
# vpcd's DEVICENAME "/dev/null:<port>" means: listen (server mode) on <port>;
# the card side (our serve_vpcd) connects to it. Use the stock file if it
# says port 35963; otherwise run pcscd on a private reader.conf.d that does.
PCSCD_ARGS=(--foreground --debug)
if [ -f "$STOCK_CONF" ] && grep -Eqi "^[[:space:]]*DEVICENAME[[:space:]]+/dev/null:(${VPCD_PORT_HEX}|${VPCD_PORT})[[:space:]]*$" "$STOCK_CONF"; then
    log "stock $STOCK_CONF already has vpcd on port $VPCD_PORT"
else
    conf_dir="$STATE/reader.conf.d"
    mkdir -p "$conf_dir"
    lib="$(dpkg -L vsmartcard-vpcd | grep -E '/libifdvpcd\.so(\.[0-9.]+)?$' | head -n1)"
    [ -n "$lib" ] || die "libifdvpcd.so not found in vsmartcard-vpcd"
    cat >"$conf_dir/vpcd" <<CONF
FRIENDLYNAME "$READER_NAME"
DEVICENAME   /dev/null:$VPCD_PORT_HEX
LIBPATH      $lib
CHANNELID    $VPCD_PORT_HEX
CONF
    log "stock vpcd config missing or on another port; using $conf_dir"
    PCSCD_ARGS+=(--config "$conf_dir")
fi

# --- 3. pcscd -------------------------------------------------------------
vpcd_reader_visible() {
    opensc-tool --list-readers 2>/dev/null | grep -q "$READER_NAME"
}

# True if <pid> is a live (not zombie) pcscd.
is_live_pcscd() {
    [ "$(cat /proc/"$1"/comm 2>/dev/null)" = pcscd ] || return 1
    case "$(ps -o stat= -p "$1" 2>/dev/null)" in
        Z*|"") return 1 ;;
        *) return 0 ;;
    esac
}
# True if any live pcscd is running.
live_pcscd() {
    local pid
    for pid in $(pgrep -x pcscd || true); do
        is_live_pcscd "$pid" && return 0
    done
    return 1
}

PIDFILE="$STATE/pcscd.pid"
STARTED_PID=""
stop_started_pcscd() {
    if [ -n "$STARTED_PID" ] && [ "${KESSAI_PCSC_KEEP:-0}" != 1 ]; then
        log "stopping pcscd (pid $STARTED_PID)"
        "${SUDO[@]}" kill "$STARTED_PID" 2>/dev/null || true
        wait "$STARTED_PID" 2>/dev/null || true
        rm -f "$PIDFILE"
    fi
}
trap stop_started_pcscd EXIT

if vpcd_reader_visible; then
    log "a running pcscd already shows the $READER_NAME reader; reusing it"
else
    # A pcscd left over by an earlier run of this script (KESSAI_PCSC_KEEP=1)
    # that does not show the reader: stop it by its recorded pid.
    if [ -f "$PIDFILE" ]; then
        old="$(cat "$PIDFILE")"
        if [ -n "$old" ] && is_live_pcscd "$old"; then
            log "stopping stale pcscd from an earlier run (pid $old)"
            "${SUDO[@]}" kill "$old" || true
            stop_deadline=$((SECONDS + 10))
            while is_live_pcscd "$old"; do
                [ "$SECONDS" -lt "$stop_deadline" ] || die "stale pcscd (pid $old) did not stop"
                sleep 0.1
            done
        fi
        rm -f "$PIDFILE"
    fi
    if live_pcscd; then
        die "a pcscd not started by this script is running without the $READER_NAME reader; stop it or restart it with vpcd configured ($STOCK_CONF)"
    fi
    log "starting: pcscd ${PCSCD_ARGS[*]} (log: $STATE/pcscd.log)"
    "${SUDO[@]}" pcscd "${PCSCD_ARGS[@]}" >"$STATE/pcscd.log" 2>&1 &
    STARTED_PID=$!
    echo "$STARTED_PID" >"$PIDFILE"

    # Ready = a PC/SC client lists the vpcd reader. Poll, bounded.
    deadline=$((SECONDS + 30))
    until vpcd_reader_visible; do
        if ! kill -0 "$STARTED_PID" 2>/dev/null; then
            tail -n 50 "$STATE/pcscd.log" >&2 || true
            die "pcscd exited during start-up"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 50 "$STATE/pcscd.log" >&2 || true
            die "pcscd did not show the $READER_NAME reader within 30 s"
        fi
        sleep 0.2
    done
    log "pcscd ready (pid $STARTED_PID)"
fi
opensc-tool --list-readers >&2 || true

# --- 4. the tests -----------------------------------------------------------
cd "$REPO_ROOT"
set +e
KESSAI_TEST_PCSC=1 cargo test -p kessai-card-io --features pcsc -- --ignored --nocapture
status=$?
if [ "$status" -eq 0 ]; then
    # The applet itself through pcsc-lite: `kessai card emulate` on vpcd,
    # SCP03 session and a debit from a PC/SC client, opensc-tool sees it.
    KESSAI_TEST_PCSC=1 cargo test -p kessai --features pcsc --test pcsc_card -- --ignored --nocapture
    status=$?
fi
if [ "$status" -eq 0 ]; then
    # Flow B over PC/SC: kessai serve, kessai card emulate on vpcd, and
    # kessai wallet topup / pay --card pcsc against it.
    KESSAI_TEST_PCSC=1 cargo test -p kessai --features pcsc --test flow_b_pcsc -- --ignored --nocapture
    status=$?
fi
set -e
if [ "$status" -ne 0 ] && [ -f "$STATE/pcscd.log" ]; then
    log "tests failed; last pcscd log lines:"
    tail -n 80 "$STATE/pcscd.log" >&2 || true
fi
exit "$status"
