#!/usr/bin/env bash
# Runs every libFuzzer target built in build-fuzz (make fuzz) for SECONDS each (default 60),
# starting from the committed corpus tests/fuzz/corpus/<name>. New interesting inputs go to
# build-fuzz/corpus/<name> (copy the ones worth keeping into tests/fuzz/corpus/<name>: make test
# replays that directory); a crash, sanitizer report, 500 or timeout is written to
# build-fuzz/findings/ and makes the run fail. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in build-fuzz/fuzz_*; do [ -x "$f" ] && targets+=("$(basename "$f" | sed 's/^fuzz_//')"); done
fi
mkdir -p build-fuzz/findings
failed=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  log=build-fuzz/fuzz_$t.log
  start=$(date +%s)
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$PWD/tests/fuzz/lsan.supp \
     "build-fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
       -artifact_prefix="build-fuzz/findings/$t-" "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    result=ok
  else
    result=FAILED; failed=1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
  echo "fuzz: $t: $result — ${runs:-?} inputs in $(($(date +%s) - start)) s, coverage ${cov:-?} edges, corpus $(ls "build-fuzz/corpus/$t" | wc -l) (+ $(ls "tests/fuzz/corpus/$t" | wc -l) committed)"
  [ $result = ok ] || grep -E 'ERROR|SUMMARY|fuzz_request:|Test unit written' "$log" | head -n 12 | sed 's/^/fuzz:   /'
done
exit $failed
