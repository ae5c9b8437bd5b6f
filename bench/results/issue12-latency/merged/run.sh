#!/bin/bash
for round in 1 2 3; do
  for variant in base ours; do
    if [ $variant = base ]; then dir=/tmp/today   # git archive 46c0cd4 | tar -x -C /tmp/today; else dir=/work/main; fi
    (cd $dir && PYTHONPATH=$dir timeout 900 /work/main/.venv/bin/python -m speaker_grouping.cli bench latency \
       --episodes hard-seed1 --cold 3 --warm 5 --corrections 10 --out /tmp/lat/$variant-$round.json) \
       > /tmp/lat/$variant-$round.log 2>&1
    echo "$variant $round rc=$? $(date -u +%T) load=$(cut -d' ' -f1 /proc/loadavg)" >> /tmp/lat/progress
  done
done
