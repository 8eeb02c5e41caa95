#!/usr/bin/env python3
"""Sums Nsight Compute's per-kernel GPU times by kernel name.

Run on the GPU machine, for the kernels of one UNet forward replayed from its CUDA graph:
  ncu --profile-from-start off --metrics gpu__time_duration.sum --csv --cache-control none \
      --clock-control none ./build/bench_unet_forward --backend cuda --precision fp16 \
      --model random:sd15 --batch 2 --repeats 1 --warmup 2 --profile-range > kernels.csv
  python3 bench/ncu_summary.py kernels.csv
ncu runs kernels one at a time, so the sum exceeds a graph replay's time; the tactic timing of the
build runs under the profiler too, so its choices may differ from a run without it.
A third argument (a file name) also writes every launch in order: GPU time, grid, block, name.
"""
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
hdr = None
data = []
for r in rows:
    if hdr is None:
        if 'Kernel Name' in r: hdr = r
        continue
    if len(r) != len(hdr): continue
    d = dict(zip(hdr, r))
    if d.get('Metric Name') != 'gpu__time_duration.sum': continue
    v = float(d['Metric Value'].replace(',', ''))
    unit = d.get('Metric Unit', 'ns')
    us = v / 1000 if unit in ('ns', 'nsecond') else v if unit in ('us', 'usecond') else v * 1000
    data.append((d['Kernel Name'], d.get('Grid Size', ''), d.get('Block Size', ''), us))
tot = sum(x[3] for x in data)
print(f"kernels {len(data)}  sum {tot/1000:.3f} ms")
agg = collections.defaultdict(lambda: [0, 0.0])
for n, g, b, us in data:
    k = n[:90]
    agg[k][0] += 1; agg[k][1] += us
for k, (c, us) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:int(sys.argv[2]) if len(sys.argv) > 2 else 40]:
    print(f"{us/1000:8.3f} ms {100*us/tot:5.1f}% x{c:4d}  {k}")
if len(sys.argv) > 3:
    with open(sys.argv[3], 'w') as f:
        for n, g, b, us in data:
            f.write(f"{us:9.2f} us  grid {g:>14}  block {b:>12}  {n[:110]}\n")
