#!/bin/bash
# Interleaved: today's code (46c0cd4 + lead's test/doc commits, /tmp/wtb-base) and this branch.
for round in 1 2 3 4 5; do
  for variant in base ours; do
    if [ $variant = base ]; then dir=/tmp/wtb-base; else dir=/work/wt-backend; fi
    (cd $dir && PYTHONPATH=$dir timeout 900 /work/main/.venv/bin/python -m speaker_grouping.cli bench latency \
       --episodes hard-seed1 --cold 3 --warm 5 --corrections 10 --out /tmp/wtb-lat/$variant-$round.json) \
       > /tmp/wtb-lat/$variant-$round.log 2>&1
    echo "$variant $round rc=$? $(date -u +%T)" >> /tmp/wtb-lat/progress
  done
done
