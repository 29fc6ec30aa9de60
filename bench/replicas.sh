#!/bin/sh
# Replica benchmark of issue 16: aggregate blob pull throughput through
# Debian's haproxy (configs/haproxy.cfg) in front of 1, 2 and 3 read-only
# replicas on a real Ceph (../shared/ceph), beside one appliance on the
# filesystem behind the same haproxy, in one run.
#
#   bench/replicas.sh                                        # full run
#   bench/replicas.sh -layer-mib 8 -clients 4 -rounds 1      # smoke run
#
# The Markdown report goes to stdout and to $OUT (default
# ${TMPDIR:-/tmp}/replicas-<UTC time>.md), the figures to $OUT.json.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
OUT=${OUT:-${TMPDIR:-/tmp}/replicas-$(date -u +%Y%m%dT%H%M%SZ).md}
case $OUT in /*) ;; *) OUT=$(pwd)/$OUT ;; esac
work=$(mktemp -d "${TMPDIR:-/tmp}/replicas-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

cd "$here"
"$GO" build -o "$work/appliance" ./cmd/appliance
"$GO" build -o "$work/replicas" ./bench/replicas
"$work/replicas" -appliance "$work/appliance" -haproxy-config configs/haproxy.cfg -out "$OUT" -json "$OUT.json" "$@"
echo "report: $OUT" >&2
