#!/usr/bin/env bash
# Storage tier: random single-row reads through io_uring, mmap and the pread pool,
# against fio's 4 KiB O_DIRECT io_uring random reads on the same table file.
#   benches/storage_vs_fio.sh [FILE] [extra `strata bench storage` flags]
# FILE defaults to out/bench/storage.strata (4 GiB, created when missing). A file this
# script created is removed after the run unless KEEP_TABLE=1; an existing one is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v fio >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq fio
fi

FILE=${1:-out/bench/storage.strata}
shift || true
CREATED=0
[ -e "$FILE" ] || CREATED=1
TARGET=${CARGO_TARGET_DIR:-target}
${CARGO:-cargo} build --release --quiet
"$TARGET/release/strata" bench storage --file "$FILE" "$@"
if [ "$CREATED" = 1 ] && [ "${KEEP_TABLE:-0}" != 1 ]; then
    rm -f "$FILE"
fi
