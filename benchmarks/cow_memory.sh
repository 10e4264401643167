#!/bin/bash
# Where a big zone's memory goes under traffic: starts our server (supervisor + one
# worker) on ZONE, then prints Rss/Pss/Shared_Dirty/Private_Dirty of both processes
# (/proc/PID/smaps_rollup) at the first answer and after each 30 s dnsperf run (DO) of
# every QUERY_FILE given, in order. Pages the worker writes (reference counts of the
# zone objects it reads) stop being shared with the supervisor's snapshot: they show
# up as Private_Dirty in both. Used for benchmarks/RESULTS.md.
#
#   bash benchmarks/cow_memory.sh ZONE QUERY_FILE... [PORT]   (PORT: env, default 5496)
set -euo pipefail
zone=$1; shift
port=${PORT:-5496}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
ctl=$(mktemp -d); chmod 700 "$ctl"
"$py" -m nameserver serve --zone "coop.=$zone" --listen "127.0.0.1@$port" \
    --control "$ctl/c.sock" >"$ctl/server.log" 2>&1 &
sup=$!
trap 'kill $sup 2>/dev/null; wait $sup 2>/dev/null; rm -rf "$ctl"' EXIT
start=$(date +%s.%N)
for _ in $(seq 1200); do
    kdig @127.0.0.1 -p "$port" coop SOA +short +time=1 +retry=0 >/dev/null 2>&1 && break
    kill -0 $sup 2>/dev/null || { cat "$ctl/server.log"; exit 1; }
    sleep 0.5
done
echo "first answer after $(echo "$(date +%s.%N) - $start" | bc) s"
worker=$(pgrep -P $sup | head -1)
show() {
    for pid in $sup $worker; do
        echo "$1 pid $pid $(grep -E '^(Rss|Pss|Shared_Dirty|Private_Dirty):' /proc/$pid/smaps_rollup \
            | awk '{printf "%s %d MB  ", $1, $2 / 1024}')"
    done
}
show start
for queries in "$@"; do
    timeout 60 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -l 30 -c 8 -q 500 -D \
        | grep -E "Queries per second"
    show "after $(basename "$queries")"
done
