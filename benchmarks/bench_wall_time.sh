#!/bin/bash
# Whole-search wall time, like for like, of two checkouts (e.g. before and after a speed change): the same
# YAML, one fixed design (no solved widths, no pruning, no baselines), so both trees train the same trials.
#   benchmarks/bench_wall_time.sh OLD_TREE NEW_TREE SPACE.yaml DATA_ROOT
# SPACE.yaml must parse in both trees (e.g. the old tree's spaces/smoke.yaml); DATA_ROOT holds
# train/<class>/ and test/<class>/ images (the imagefolder case) or is "synthetic" for generated images.
set -u
old=$1 new=$2 space=$3 root=$4
py=${PYTHON:-$(cd "$new" && pwd)/.venv/bin/python}
sets=(--set budget.params=1000000 --set space.stages=2 --set space.blocks=2 --set space.width=32
      --set space.kernel=3 --set space.separable=false --set space.fill=1.0 --set train.epochs=3
      --set search.pruner=none)
if [ "$root" = synthetic ]; then
  sets+=(--set data.synthetic_train=5000 --set data.synthetic_size=32 --set data.num_workers=0)
  trials=3
else
  sets+=(--set data.dataset=imagefolder --set data.root="$root" --set data.num_workers=2)
  trials=2
fi
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
for v in old new; do
  dir=$([ $v = old ] && echo "$old" || echo "$new")
  out=$(mktemp -d)
  rm -rf "$root/.decoded"  # the new tree's decode cache is built inside the timed run
  s=$(date +%s.%N)
  (cd "$dir" && PYTHONPATH="$dir" "$py" -m search.run "$space" --results-dir "$out" --device cpu \
      --n-trials $trials "${sets[@]}" > "$out/log" 2>&1)
  e=$(date +%s.%N)
  echo "$v: $(echo "$e - $s" | bc) s, $(grep -E "complete" "$out/log" | tail -1)"
  grep -E "epoch [0-9]+/" "$out/log" | cut -c1-100
done
