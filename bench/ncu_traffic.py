#!/usr/bin/env python3
"""DRAM traffic and tensor-pipe activity of one UNet forward's kernels, by kind of kernel.

Reads Nsight Compute's CSV (one row per kernel and metric) of a run with the metrics
gpu__time_duration.sum, dram__bytes_read.sum, dram__bytes_write.sum and
sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed (bench/device_run.sh step
`traffic`), and prints per kind (cuDNN convolutions, cuBLASLt GEMMs, attention, the fused GEGLU, GroupNorm,
LayerNorm, concatenation, the rest): launches, GPU time, DRAM bytes, the DRAM rate over that time and the
tensor pipe's busy share (time-weighted); then the same per launch into a file (second argument).
ncu runs kernels one at a time with the clock unlocked, so times are those of isolated kernels.
  python3 bench/ncu_traffic.py traffic.csv [launches.txt]
"""
import collections
import csv
import sys

M_TIME, M_RD, M_WR, M_TC = ('gpu__time_duration.sum', 'dram__bytes_read.sum', 'dram__bytes_write.sum',
                            'sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed')
SCALE = {'ns': 1e-3, 'nsecond': 1e-3, 'us': 1.0, 'usecond': 1.0, 'ms': 1e3, 'msecond': 1e3,
         'byte': 1.0, 'Kbyte': 1e3, 'Mbyte': 1e6, 'Gbyte': 1e9, 'KB': 1e3, 'MB': 1e6, 'GB': 1e9, '%': 1.0}


def kind(name):
    n = name.lower()
    for key, k in (('fprop', 'conv (cuDNN)'), ('cudnn', 'conv (cuDNN)'), ('conv_', 'conv (ours)'), ('nvjet', 'GEMM (cuBLASLt)'),
                   ('gemm', 'GEMM (cuBLASLt)'), ('flash', 'attention'), ('geglu', 'GEGLU (fused)'), ('gn_', 'GroupNorm'),
                   ('group_norm', 'GroupNorm'), ('layer_norm', 'LayerNorm'), ('concat', 'concatenation')):
        if key in n:
            return k
    return 'other'


def main():
    rows = list(csv.reader(open(sys.argv[1])))
    hdr, launches = None, collections.OrderedDict()
    for r in rows:
        if hdr is None:
            if 'Kernel Name' in r:
                hdr = r
            continue
        if len(r) != len(hdr):
            continue
        d = dict(zip(hdr, r))
        key = d.get('ID', str(len(launches)))
        L = launches.setdefault(key, {'name': d['Kernel Name'], 'grid': d.get('Grid Size', '')})
        try:
            v = float(d['Metric Value'].replace(',', ''))
        except ValueError:
            continue
        L[d.get('Metric Name')] = v * SCALE.get(d.get('Metric Unit', ''), 1.0)
    data = [L for L in launches.values() if M_TIME in L]
    tot_us = sum(L[M_TIME] for L in data)
    tot_b = sum(L.get(M_RD, 0) + L.get(M_WR, 0) for L in data)
    print(f"kernels {len(data)}  sum {tot_us / 1000:.3f} ms  DRAM {tot_b / 1e9:.2f} GB ({tot_b / 1e6 / max(tot_us, 1e-9):.2f} TB/s over the sum)")
    agg = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    for L in data:
        a = agg[kind(L['name'])]
        a[0] += 1
        a[1] += L[M_TIME]
        a[2] += L.get(M_RD, 0) + L.get(M_WR, 0)
        a[3] += L.get(M_TC, 0) * L[M_TIME]
    print(f"{'kind':18} {'launches':>8} {'ms':>8} {'share':>6} {'DRAM GB':>8} {'TB/s':>6} {'tensor busy':>11}")
    for k, (c, us, b, tc) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"{k:18} {c:8d} {us / 1000:8.3f} {100 * us / tot_us:5.1f}% {b / 1e9:8.2f} {b / 1e6 / max(us, 1e-9):6.2f} {tc / max(us, 1e-9):10.1f}%")
    if len(sys.argv) > 2:
        with open(sys.argv[2], 'w') as f:
            for L in data:
                b = L.get(M_RD, 0) + L.get(M_WR, 0)
                f.write(f"{L[M_TIME]:9.2f} us {b / 1e6:9.2f} MB {b / 1e6 / max(L[M_TIME], 1e-9):5.2f} TB/s tensor {L.get(M_TC, 0):5.1f}%  "
                        f"grid {L['grid']:>14}  {L['name'][:100]}\n")


if __name__ == '__main__':
    main()
