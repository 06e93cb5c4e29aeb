#!/usr/bin/env bash
# Real PC/SC stack test for kessai-card-io.
#
# Installs pcsc-lite (pcscd), vsmartcard's virtual reader driver (vpcd),
# libpcsclite-dev (to build the `pcsc` feature), opensc and pcsc-tools;
# starts pcscd in the background (unless a running one already shows the
# reader) with vpcd on 127.0.0.1:35963, or on another free port if that one is
# taken (exported to the tests as KESSAI_VPCD_ADDR); waits until a PC/SC client sees the
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
READER_NAME="Virtual PCD"
STOCK_CONF=/etc/reader.conf.d/vpcd
PACKAGES=(pcscd vsmartcard-vpcd libpcsclite-dev opensc pcsc-tools pkg-config iproute2)

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
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    for p in "${missing[@]}"; do
        if ! apt-cache policy "$p" | grep 'Candidate: [^(]' >/dev/null; then
            die "package $p is not available in this Debian release"
        fi
    done
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    log "packages already installed"
fi

# --- 2. vpcd configuration ------------------------------------------------
# vpcd's DEVICENAME "/dev/null:<port>" means: listen (server mode) on <port>
# for slot 0 and <port>+1 for slot 1; the card side (`kessai card emulate`,
# `serve_vpcd`) connects to it. The script always runs pcscd on a private
# reader.conf.d so it can choose the port: 35963 (vpcd's default) if it and
# 35964 are free, else another free pair. A port already taken makes vpcd's
# bind() fail and pcscd silently drops the reader, so check first and say who
# holds it. The tests find the port in KESSAI_VPCD_ADDR.
VPCD_LIB="$(dpkg -L vsmartcard-vpcd | grep -m1 -E '/libifdvpcd\.so(\.[0-9.]+)?$' || true)"
[ -n "$VPCD_LIB" ] || die "libifdvpcd.so not found in vsmartcard-vpcd"

port_listening() { ss -Hltn "( sport = :$1 )" 2>/dev/null | grep . >/dev/null; }
pair_free() { ! port_listening "$1" && ! port_listening "$(($1 + 1))"; }

write_conf() { # <port> -> prints the conf dir
    local port="$1" dir="$STATE/reader.conf.d"
    mkdir -p "$dir"
    cat >"$dir/vpcd" <<CONF
FRIENDLYNAME "$READER_NAME"
DEVICENAME   /dev/null:$port
LIBPATH      $VPCD_LIB
CHANNELID    $port
CONF
    printf '%s' "$dir"
}

# --- 3. pcscd -------------------------------------------------------------
vpcd_reader_visible() {
    opensc-tool --list-readers 2>/dev/null | grep -F "$READER_NAME" >/dev/null
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
    if [ -n "$STARTED_PID" ]; then
        log "stopping pcscd (pid $STARTED_PID)"
        "${SUDO[@]}" kill "$STARTED_PID" 2>/dev/null || true
        wait "$STARTED_PID" 2>/dev/null || true
        rm -f "$PIDFILE"
        STARTED_PID=""
    fi
}
on_exit() { [ "${KESSAI_PCSC_KEEP:-0}" = 1 ] || stop_started_pcscd; }
trap on_exit EXIT

# Start pcscd with vpcd on <port>; true once a PC/SC client lists the reader.
# On failure print pcscd's start-up lines (where vpcd reports a failed bind)
# and who listens on the ports, stop it, and return false.
try_pcscd() {
    local port="$1" conf log_file="$STATE/pcscd-$1.log"
    conf="$(write_conf "$port")"
    log "starting: pcscd --foreground --debug --config $conf (vpcd on port $port; log: $log_file)"
    "${SUDO[@]}" pcscd --foreground --debug --config "$conf" >"$log_file" 2>&1 &
    STARTED_PID=$!
    echo "$STARTED_PID" >"$PIDFILE"
    local deadline=$((SECONDS + 30))
    until vpcd_reader_visible; do
        if ! kill -0 "$STARTED_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            log "pcscd did not show the $READER_NAME reader (vpcd port $port); its start-up:"
            grep -v -E 'winscard_svc|winscard_msg_srv|SVCServiceRunLoop|winscard\.c' "$log_file" | head -n 40 >&2 || true
            log "listeners on ports $port-$((port + 1)):"
            ss -Hltnp "( sport = :$port or sport = :$((port + 1)) )" >&2 || true
            stop_started_pcscd
            return 1
        fi
        sleep 0.2
    done
    log "pcscd ready (pid $STARTED_PID, vpcd on 127.0.0.1:$port)"
    export KESSAI_VPCD_ADDR="127.0.0.1:$port"
    echo "$port" >"$STATE/vpcd.port"
    ln -sf "$log_file" "$STATE/pcscd.log"
}

if vpcd_reader_visible; then
    # Kept from an earlier run of this script: it recorded its port.
    port="$VPCD_PORT"
    if [ -f "$PIDFILE" ] && is_live_pcscd "$(cat "$PIDFILE")" && [ -f "$STATE/vpcd.port" ]; then
        port="$(cat "$STATE/vpcd.port")"
    fi
    log "a running pcscd already shows the $READER_NAME reader; reusing it (vpcd on 127.0.0.1:$port)"
    export KESSAI_VPCD_ADDR="127.0.0.1:$port"
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
    # Candidate ports: the default, then a few others; skip taken ones.
    ready=0
    for port in "$VPCD_PORT" 36963 37963 38963 45963; do
        if ! pair_free "$port"; then
            log "port $port or $((port + 1)) is taken:"
            ss -Hltnp "( sport = :$port or sport = :$((port + 1)) )" >&2 || true
            continue
        fi
        if try_pcscd "$port"; then ready=1; break; fi
    done
    [ "$ready" = 1 ] || die "no pcscd start showed the $READER_NAME reader"
fi
opensc-tool --list-readers >&2 || true
log "tests use KESSAI_VPCD_ADDR=$KESSAI_VPCD_ADDR"

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
