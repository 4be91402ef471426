#!/usr/bin/env bash
# The fault, worker, signal, study, trial-loop, storage and resume tests N times in a row with every core kept busy by a spinning shell loop: the
# check that they do not depend on wall-clock luck (issue 11). Issue 29's tests with FIFOs, signals, pipes and threads
# joined the list: mid-run faults (a closed stdout, NaN, a full disk), planted and special files, links out of a
# results folder, files read back, the dashboard's signals. Prints one line per run and the tally.
#
#   benchmarks/fault_loop.sh [RUNS=20]
#   TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:PORT/postgres benchmarks/fault_loop.sh 20
#
#   SPIN=0 benchmarks/fault_loop.sh 20   # no spinning loops: the machine is already held busy by real work
#                                         # (e.g. a retrain on each core); each run's line prints the load average
#
# Without TEST_POSTGRES_URL the PostgreSQL tests skip (pytest says so in the run's log).
set -u
cd "$(dirname "$0")/.."
runs=${1:-20}
logs=$(mktemp -d /tmp/fault-loop.XXXX)
busy=()
if [ "${SPIN:-1}" != 0 ]; then
  for _ in $(seq "$(nproc)"); do ( while :; do :; done ) & busy+=($!); done
  trap 'kill "${busy[@]}" 2>/dev/null' EXIT
fi
passed=0
for i in $(seq "$runs"); do
  start=$(date +%s)
  if .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_faults.py tests/search/study/test_supervisor.py tests/search/study/test_stop.py \
      tests/search/study/test_study.py tests/search/study/test_trial_loop.py tests/search/test_storage.py tests/search/test_resume.py \
      tests/test_midrun_faults.py tests/search/test_safe_files.py tests/search/test_safe_paths.py tests/search/test_read_back.py \
      tests/search/test_dashboard.py > "$logs/run_$i.log" 2>&1; then
    result=pass; passed=$((passed + 1))
  else
    result=FAIL
  fi
  echo "run $i $result $(( $(date +%s) - start ))s: $(tail -1 "$logs/run_$i.log"), load average $(cut -d' ' -f1 /proc/loadavg)"
done
echo "$passed of $runs runs passed (logs in $logs)"
[ "$passed" = "$runs" ]
