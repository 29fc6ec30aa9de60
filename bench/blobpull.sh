#!/bin/sh
# Blob pull benchmark of issue 15: curl over HTTP/1.1 and HTTP/2, 1 and 8
# clients, against Debian's docker-registry serving TLS, in one run.
#
#   bench/blobpull.sh                                   # full run (256 MiB, 5 rounds)
#   bench/blobpull.sh -blob-mib 32 -rounds 1            # smoke run
#   BASELINE=main bench/blobpull.sh                     # also the appliance built from git ref main
#
# The Markdown report goes to stdout and to $OUT (default
# ${TMPDIR:-/tmp}/blobpull-<UTC time>.md), the figures to $OUT.json.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
OUT=${OUT:-${TMPDIR:-/tmp}/blobpull-$(date -u +%Y%m%dT%H%M%SZ).md}
case $OUT in /*) ;; *) OUT=$(pwd)/$OUT ;; esac
work=$(mktemp -d "${TMPDIR:-/tmp}/blobpull-bench.XXXXXX")
trap 'rm -rf "$work"; git -C "$here" worktree prune' EXIT
trap 'exit 130' INT TERM

cd "$here"
"$GO" build -o "$work/appliance" ./cmd/appliance
"$GO" build -o "$work/blobpull" ./bench/blobpull
if [ -n "${BASELINE:-}" ]; then
	git worktree add --detach "$work/baseline-src" "$BASELINE" >/dev/null
	(cd "$work/baseline-src" && "$GO" build -o "$work/appliance-baseline" ./cmd/appliance)
	git worktree remove --force "$work/baseline-src"
	set -- -baseline "$work/appliance-baseline" "$@"
fi
"$work/blobpull" -appliance "$work/appliance" -out "$OUT" -json "$OUT.json" "$@"
echo "report: $OUT" >&2
