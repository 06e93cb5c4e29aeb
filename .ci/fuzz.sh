#!/usr/bin/env bash
# Smoke run of the card applet's libFuzzer target (coverage-guided, with
# AddressSanitizer): arbitrary bytes into Card::transmit must never panic
# and never break the purse invariants. cargo-fuzz needs nightly compiler
# flags; the machine has only the stable toolchain, so RUSTC_BOOTSTRAP=1
# unlocks them for this build only (the shipped code never uses them).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_BUDGET="${KESSAI_FUZZ_SECONDS:-60}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz from crates.io"
  cargo install --locked cargo-fuzz --version 0.13.2
fi
cd crates/kessai-card/fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer address transmit -- \
  -max_total_time="$SECONDS_BUDGET" -rss_limit_mb=2048 -print_final_stats=1
