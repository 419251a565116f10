#!/usr/bin/env bash
# Runs every unit test binary (and the fuzz corpus replays) of a plain debug build under
# Valgrind's memcheck: invalid reads and writes, uses of uninitialised values and definite
# leaks fail the run. Slow (tens of times the native speed): not part of make test; run by
# `make valgrind`. Usage: scripts/valgrind-unit.sh BUILD_DIR [TEST_REGEX]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?build directory}
filter=${2:-.}
export DOCKET_TEST_TMP=$PWD/$build/unit-tmp
mkdir -p "$DOCKET_TEST_TMP"
vg=(valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite --track-origins=no --num-callers=24 --quiet
    --suppressions=tests/valgrind.supp)
failed=()
ran=0
for t in "$build"/test_* "$build"/replay_*; do
  name=$(basename "$t")
  [ -x "$t" ] && [[ $name =~ $filter ]] || continue
  args=()
  if [[ $name == replay_* ]]; then args=("tests/fuzz/corpus/${name#replay_}"); fi
  start=$(date +%s)
  if "${vg[@]}" --log-file="$build/valgrind-$name.log" "$t" "${args[@]}" >"$build/valgrind-$name.out" 2>&1; then
    echo "valgrind: ok   $name ($(($(date +%s) - start)) s)"
  else
    rc=$?
    echo "valgrind: FAIL $name (exit $rc; $build/valgrind-$name.log)"
    grep -E '^==[0-9]+== (Invalid|Conditional|Use of|.*definitely lost|Syscall param)' "$build/valgrind-$name.log" | head -5
    tail -5 "$build/valgrind-$name.out"
    failed+=("$name")
  fi
  ran=$((ran + 1))
done
echo "valgrind: $ran test binaries, ${#failed[@]} failed${failed[*]:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
