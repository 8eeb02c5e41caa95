#!/usr/bin/env bash
# Runs the GPU checks and benchmarks on a machine without this project's build tree: binaries built
# elsewhere (sdrt, sdrt_tests, bench_unet_forward, bench_attention) in .carry/bin (or packed by bench/pack_carry.sh), libraries the machine
# lacks in .carry/lib, the conformance data in .carry/conformance. Each argument is a step; logs go to
# $OUT (or ./out), at most 8 files back from the device tool: pick steps accordingly. Steps: tests, attn,
# gn, geglu, geglu-se, geglu-ncu, unet, kernels, bench, ab, ab-bench, split, attn-pipe, exp16, subpixel, loop-gap, pdl, search, conv-engines,
# conv-graph, clocks, png-env, overlap, ncu-attn, shared-prefix, pack-temb, latemax, gn-cluster,
# attn-small, ab-all, ncu-gn, gn8, gn16, gntest, ksplit, gn-bench, gn-block, gn-block32, env-ab, lanes, stage, narrow, splitk, splitk-fence, figures, loop-trace, s16, traffic,
# s16w, vae-traffic, wgmma-rate, conv-wx, wx-test, wx-ncu.
#   bash bench/device_run.sh tests attn unet bench
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/out}
mkdir -p "$out"
bin=$root/.carry/bin
# binaries may travel compressed (.carry/bin.tar.xz, `tar cJf .carry/bin.tar.xz -C DIR bin`: the stripped
# binaries take about a seventh of the 64 MiB the device tool carries that way)
if [ ! -x "$bin/sdrt" ] && [ -f "$root/.carry/bin.tar.xz" ]; then tar xJf "$root/.carry/bin.tar.xz" -C "$root/.carry"; fi
cudnn=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/cudnn/lib 2>/dev/null | head -1)
export LD_LIBRARY_PATH=$root/.carry/lib:${cudnn}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# the tests look for ../shared/conformance beside the checkout they were built in, and for the sdrt binary
# where it was built
mkdir -p /work/shared
[ -e /work/main ] || ln -s "$root" /work/main
[ -e /work/shared/conformance ] || ln -s "$root/.carry/conformance" /work/shared/conformance
mkdir -p "$root/build-cuda/tests" && cp "$bin/sdrt" "$root/build-cuda/sdrt"
tok=$root/.carry/conformance/tiny-sd15/diffusers/tokenizer
export SDRT_HOME=/tmp/sdrt-home
# one UNet forward's median time at batch $1, replayed on the device loop (the prompt held), as sampling runs it
fwd() {  # FWD_TIMEOUT: seconds (120), longer for builds that time more tactics; FWD_FLAGS: more options (--guided)
  timeout "${FWD_TIMEOUT:-120}" "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch "$1" --repeats 20 --warmup 3 --device-loop ${FWD_FLAGS:-} 2>&1 |
    grep -E 'median|error'
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
for step in "$@"; do
  echo "=== $step $(date +%T)"
  case $step in
    tests)  # the GPU tests and those of the pipeline, plan and server that run on it (the CPU-only ones, *OnCpu, run in CI).
            # TEST_SHARDS=n (default 1): n processes side by side on the GPU, each a gtest shard with its own TMPDIR and
            # SDRT_HOME (the tests are independent: CI runs each in a process of its own); one log, tests.log. Not faster
            # so far: the twenty-third session's three shards (before the thread shares below) timed out
      filter='*Cuda*:*BackendOps*:Passes*:Plan*:Pipeline*:Server*-*OnCpu*'
      shards=${TEST_SHARDS:-1}
      if [ "$shards" -le 1 ]; then
        timeout 420 "$bin/sdrt_tests" --gtest_filter="$filter" > "$out/tests.log" 2>&1
        echo "rc $?"
      else
        # each shard a share of the cores for OpenMP and OpenBLAS: without it three shards on the H100 host (16 cores)
        # ran the CPU side of the pipeline tests 40-60x slower (threads spinning against each other) and hit the timeout
        threads=$(( $(nproc) / shards )); [ "$threads" -ge 1 ] || threads=1
        pids=()
        for i in $(seq 0 $((shards - 1))); do
          mkdir -p "/tmp/shard$i/home"
          TMPDIR=/tmp/shard$i SDRT_HOME=/tmp/shard$i/home GTEST_TOTAL_SHARDS=$shards GTEST_SHARD_INDEX=$i OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads \
            timeout 420 "$bin/sdrt_tests" --gtest_filter="$filter" > "/tmp/shard$i/tests.log" 2>&1 &
          pids+=($!)
        done
        for i in "${!pids[@]}"; do wait "${pids[$i]}"; echo "shard $i rc $?"; done
        for i in $(seq 0 $((shards - 1))); do echo "=== shard $i of $shards"; cat "/tmp/shard$i/tests.log"; done > "$out/tests.log"
      fi
      grep -E '^\[  (PASSED|FAILED)|FAILED|nmse|max' "$out/tests.log" | tail -25 ;;
    attn)
      for b in 2 16; do "$bin/bench_attention" --batch $b --repeats 20; done 2>&1 | tee "$out/attn.txt" ;;
    geglu)  # the GEGLU projection: cuBLASLt + GEGLU pass vs the fused kernel's forms (bench_geglu_gemm); then, each in
            # a process of its own, the experimental warp-specialized forms' op test and timings
      for b in 2 16; do "$bin/bench_geglu_gemm" --batch $b --repeats 15; done 2>&1 | grep -v checking | tee "$out/geglu.txt"
      SDRT_GEGLU_EXPERIMENTAL=1 timeout 120 "$bin/sdrt_tests" --gtest_filter='BackendOps.EveryGegluProjectionFormMatchesTheCpu' > "$out/geglu-ws-test.log" 2>&1
      echo "experimental forms' op test rc $?"; grep -E "ws64|PASSED|FAILED" "$out/geglu-ws-test.log" | tail -12
      for b in 2 16; do SDRT_GEGLU_EXPERIMENTAL=1 timeout 120 "$bin/bench_geglu_gemm" --batch $b --repeats 15; done 2>&1 | tee "$out/geglu-ws.txt" ;;
    geglu-se)  # the staged-epilogue GEGLU forms (se*): their op test, bench_geglu_gemm at batch 2 and 16 (every form), then
               # (GEGLU_SE_AB=1) the guided forward with them timed at build (the default) or not (SDRT_GEGLU_STAGED=0), alternating
      timeout 120 "$bin/sdrt_tests" --gtest_filter='BackendOps.EveryGegluProjectionFormMatchesTheCpu' > "$out/geglu-se-test.log" 2>&1
      echo "op test rc $?"; grep -E "se64|se128|PASSED|FAILED" "$out/geglu-se-test.log" | tail -12
      for b in 2 16; do timeout 120 "$bin/bench_geglu_gemm" --batch $b --repeats 15; done 2>&1 | grep -v checking | tee "$out/geglu-se.txt"
      if [ "${GEGLU_SE_AB:-0}" = 1 ]; then
        AB="SDRT_GEGLU_STAGED=0" AB_BATCHES="${AB_BATCHES:-2 16}" AB_ROUNDS="${AB_ROUNDS:-2}" OUT=$out bash "$0" env-ab | grep -v '^===\|^NVIDIA'
        mv "$out/env-ab.txt" "$out/geglu-se-ab.txt"
      fi ;;
    geglu-ncu)  # what limits the fused GEGLU kernel: its forms (NCU_KERNELS: mangled-name patterns, default two of the
                # cp.async forms) on the batch-16 first-level shape (the first launch of each is that shape's correctness
                # check), with the stall reasons and pipe utilisation (--print-details all)
      for k in ${NCU_KERNELS:-geglu_gemm_kILi128ELi4ELb1ELb0ELi0E geglu_gemm_kILi64ELi3ELb0ELb1ELi0E}; do
        timeout 100 ncu --kernel-name-base mangled -k regex:$k --launch-count 1 --section SpeedOfLight --section WarpStateStats --section Occupancy \
          --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section SchedulerStats --print-details all \
          "$bin/bench_geglu_gemm" --batch 16 --repeats 1 > "$out/ncu-$k.txt" 2>&1
        grep -E "Duration|Throughput|Warp Cycles Per Issued|Issue Slots Busy|Registers Per|Shared Memory|Stall|highest-utilized|Pipe" "$out/ncu-$k.txt" | head -30
      done ;;
    attn-small)  # the mma.sync attention (SD's d-160 levels) in blocks of 16 or 32 rows where 64-row blocks leave SMs idle
                 # (SDRT_ATTN_SMALL=16|32): the op tests with each, bench_attention and the batch-2 forward, alternating
      for v in 16 32; do
        SDRT_ATTN_SMALL=$v timeout 300 "$bin/sdrt_tests" --gtest_filter='Precisions/BackendOpsP.*' > "$out/attn-small-$v-test.log" 2>&1
        echo "SDRT_ATTN_SMALL=$v op tests rc $?"; grep -E "d 160|PASSED|FAILED" "$out/attn-small-$v-test.log" | tail -8
      done
      for r in 1 2; do for v in 0 16 32; do
        echo "--- SDRT_ATTN_SMALL=$v batch 2"; SDRT_ATTN_SMALL=$v timeout 100 "$bin/bench_attention" --batch 2 --repeats 20 --graphs 2>&1 | grep -E "d 160|error"
      done; done 2>&1 | tee "$out/attn-small.txt"
      for r in 1 2; do for v in 0 16 32; do
        echo "batch 2 SDRT_ATTN_SMALL=$v: $(SDRT_ATTN_SMALL=$v fwd 2)"
      done; done 2>&1 | tee -a "$out/attn-small.txt" ;;
    gn-cluster)  # GroupNorm with a thread-block cluster per image and slab of groups (SDRT_GN_CLUSTER=1): the op tests,
                 # bench_group_norm (three-pass, one-pass, cluster) and the forward with and without, alternating
      timeout 200 "$bin/sdrt_tests" --gtest_filter='BackendOps.GroupNorm*:Passes.Tiny*' > "$out/gn-cluster-test.log" 2>&1
      echo "op tests rc $?"; grep -E "cluster launches|FAIL|PASSED|FAILED" "$out/gn-cluster-test.log" | tail -12
      for b in 2 16; do timeout 120 "$bin/bench_group_norm" --batch $b --repeats 15; done 2>&1 | tee "$out/gn-cluster.txt"
      for r in 1 2; do for b in 2 16; do for v in 0 1; do
        echo "batch $b SDRT_GN_CLUSTER=$v: $(SDRT_GN_CLUSTER=$v fwd $b)"
      done; done; done 2>&1 | tee -a "$out/gn-cluster.txt" ;;
    gn)  # GroupNorm: one-pass vs three-pass on the UNet's shapes
      for b in 2 16; do "$bin/bench_group_norm" --batch $b --repeats 15; done 2>&1 | tee "$out/gn.txt" ;;
    kernels)  # GPU time per kernel of one UNet forward (Nsight Compute, summed by kernel name); batch KB (default 2);
              # FWD_FLAGS=--guided: the guided UNet the pipeline runs
      # (the tactics chosen by a plain run first, so that the profiled build does not time them under ncu: its choices
      # differed there, e.g. cuDNN for the 8x8 convolutions that a plain build runs as im2col + GEMM)
      kb=${KB:-2}
      rm -f /tmp/tactics-b$kb.json
      "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch $kb --repeats 1 ${FWD_FLAGS:-} --tactics /tmp/tactics-b$kb.json | grep -E 'tactics|error'
      timeout 300 ncu --profile-from-start off --metrics gpu__time_duration.sum --csv --cache-control none --clock-control none \
        "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch $kb --repeats 1 --warmup 2 --profile-range ${FWD_FLAGS:-} \
        --tactics /tmp/tactics-b$kb.json > /tmp/k$kb.csv 2>/dev/null
      python3 "$root/bench/ncu_summary.py" /tmp/k$kb.csv 40 "$out/launches-b$kb.txt" > "$out/kernels-b$kb.txt"; head -20 "$out/kernels-b$kb.txt" ;;
    traffic)  # DRAM bytes and tensor-pipe activity per kind of kernel of one UNet forward (Nsight Compute, batch KB,
              # default 16, guided; the tactics of a plain run first, as in `kernels`): which kernels move memory at
              # the bandwidth and which keep the tensor cores busy (bench/ncu_traffic.py)
      kb=${KB:-16}
      rm -f /tmp/tactics-t$kb.json
      "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch $kb --repeats 1 --guided --tactics /tmp/tactics-t$kb.json | grep -E 'tactics|error'
      timeout 480 ncu --profile-from-start off --csv --cache-control none --clock-control none \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed \
        "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch $kb --repeats 1 --warmup 2 --profile-range --guided \
        --tactics /tmp/tactics-t$kb.json > /tmp/t$kb.csv 2>/dev/null
      echo "ncu rc $?"; python3 "$root/bench/ncu_traffic.py" /tmp/t$kb.csv "$out/traffic-launches-b$kb.txt" | tee "$out/traffic-b$kb.txt" ;;
    unet)
      for b in 2 16 2 16; do
        echo "batch $b: $("$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch $b --repeats 20 --warmup 3 2>&1 | grep median)"
      done 2>&1 | tee "$out/unet.txt" ;;
    bench)  # at most 8 files come back from the device tool: the CSVs, b1's JSON. BENCH_CFGS: "batch repeats opts" items
            # separated by ';' (default: batch 1 baseline then optimized, 16 and 50); BENCH_PREFIX: the files' prefix
      IFS=';' read -ra cfgs <<< "${BENCH_CFGS:-1 3 baseline,optimized;16 3 optimized;50 2 optimized}"
      for cfg in "${cfgs[@]}"; do
        read -r nb reps opts <<< "$cfg"
        "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" --batch "$nb" --repeats "$reps" --warmup 1 --opt "$opts" --no-engine-cache -o /tmp/bench/b$nb 2>&1 | grep -v '^wrote'
        cp /tmp/bench/b$nb/bench.csv "$out/${BENCH_PREFIX:-}b$nb.csv"
      done
      cp /tmp/bench/b1/bench.json "$out/${BENCH_PREFIX:-}b1.json"
      for i in 1 2; do ( cd /tmp && "$bin/sdrt" build -m random:sd15 -o sd15.plan --batch 1 --timing-cache tc.json 2>&1 | grep -E 'tactics:|build took' ); done ;;
    loop-trace)  # where the sampling loop's time goes besides its steps (SDRT_TRACE_TIMES=1: setup, staging, the first
                 # step with the held work, the later steps' mean), batch 1, optimized
      # (SDRT_HELD_GRAPH=0: the prompt's held work eagerly, as before the twenty-first session)
      for v in 0 1 0 1; do echo "--- SDRT_HELD_GRAPH=$v"; SDRT_HELD_GRAPH=$v SDRT_TRACE_TIMES=1 "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" \
        --batch 1 --repeats 4 --warmup 1 --opt optimized --no-engine-cache -o /tmp/bench/trace 2>&1 | grep -v '^wrote'; done | tee "$out/loop-trace.txt" |
        grep -E 'sample:|HELD|optimized' ;;
    figures)  # the speed issue's figures in one go: sdrt bench at batch 1 (the optimized engine first, then the baseline,
              # 5 repeats) and 16 (3), the SD 1.5 build twice with a timing cache (cold, warm); files fig-*
      BENCH_CFGS="1 5 optimized,baseline;16 3 optimized" BENCH_PREFIX=fig- OUT=$out bash "$0" bench | grep -v '^===\|^NVIDIA' ;;
    ab)  # a change against the engine before it, in one session: bench_attention_base and
         # bench_unet_forward_base (built from the previous commit) beside the current binaries
      for b in 2 16; do
        echo "--- base, batch $b"; "$bin/bench_attention_base" --batch $b --repeats 20
        echo "--- new, batch $b"; "$bin/bench_attention" --batch $b --repeats 20
      done > "$out/attn.txt" 2>&1; cat "$out/attn.txt"
      for r in 1 2; do for b in 2 16; do
        for v in base new; do
          exe="$bin/bench_unet_forward"; [ $v = base ] && exe="${exe}_base"
          echo "batch $b $v: $("$exe" --backend cuda --precision fp16 --model random:sd15 --batch $b --repeats 20 --warmup 3 2>&1 | grep median)"
        done
      done; done 2>&1 | tee "$out/unet-ab.txt" ;;
    ab-bench)  # sdrt bench of the engine before a change (sdrt_base, built from the previous commit) and of
               # this one, alternating, batch 1 and 16 (AB_BATCH1_ONLY=1: batch 1 only), in one session
      cfgs=("1 3" "16 2"); [ "${AB_BATCH1_ONLY:-0}" = 1 ] && cfgs=("1 4")
      for cfg in "${cfgs[@]}"; do read -r nb reps <<< "$cfg"; for r in 1 2; do for v in base new; do
        exe="$bin/sdrt"; [ $v = base ] && exe="$bin/sdrt_base"
        echo "$v batch $nb: $("$exe" bench --backend cuda --model random:sd15 --tokenizer "$tok" --batch "$nb" --repeats "$reps" --warmup 1 --opt optimized \
          --no-engine-cache -o "/tmp/ab/$v$nb$r" 2>&1 | grep '^optimized') (png p50 $(awk -F, 'NR==2{print $23}' "/tmp/ab/$v$nb$r/bench.csv") s)"
      done; done; done 2>&1 | tee "$out/bench-ab.txt" ;;
    split)  # the batch in two parts on two streams (SDRT_SPLIT=2) against the whole batch on one stream,
            # alternating; the parts on one stream (SDRT_LANES=1, the cost of the smaller kernels alone); the parts
            # with GroupNorm's one-pass kernel on half the SMs (SDRT_GN_ONEPASS=1, time-limited: a cooperative grid
            # beside another stream's kernels); sdrt bench at batch 1 both ways
      for r in 1 2; do for b in 2 16; do for v in 1 2; do
        echo "batch $b split $v: $(SDRT_SPLIT=$v fwd $b)"
      done; done; done 2>&1 | tee "$out/split.txt"
      { echo "batch 2 split 2 on one stream: $(SDRT_SPLIT=2 SDRT_LANES=1 fwd 2)"
        echo "batch 16 split 4 (two parts per stream): $(SDRT_SPLIT=4 fwd 16)"
        for b in 2 16; do echo "batch $b split 2 with the pipelined attention: $(SDRT_SPLIT=2 SDRT_ATTN_PIPE=1 fwd $b)"; done
        for b in 2 16; do echo "batch $b split auto: $(SDRT_SPLIT=auto SDRT_VERBOSE=1 timeout 150 "$bin/bench_unet_forward" --backend cuda --precision fp16 \
          --model random:sd15 --batch $b --repeats 20 --warmup 3 --device-loop 2>&1 | grep -E 'batch split|median|error')"; done
        for b in 2 16; do echo "batch $b split 2 one-pass GroupNorm: $(SDRT_SPLIT=2 SDRT_GN_ONEPASS=1 fwd $b)"; done
        for r in 1 2; do for v in 1 2; do
          echo "split $v batch 1: $(SDRT_SPLIT=$v timeout 180 "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" --batch 1 --repeats 3 --warmup 1 \
            --opt optimized --no-engine-cache -o "/tmp/split/$v$r" 2>&1 | grep '^optimized')"
        done; done; } 2>&1 | tee -a "$out/split.txt" ;;
    attn-pipe)  # the intra-warpgroup pipelined attention (SDRT_ATTN_PIPE=1 heads of 40, 2 also 80): its op tests, then
                # bench_attention and the UNet forward against the kept kernel, alternating, and the forms the engine
                # picks by timing
      timeout 200 "$bin/sdrt_tests" --gtest_filter='BackendOps.PipelinedAttentionMatchesTheCpu:BackendOps.AttentionForm*' > "$out/attn-pipe-test.log" 2>&1
      echo "op test rc $?"; grep -E "SDRT_ATTN_PIPE|launches|attn_form|PASSED|FAILED" "$out/attn-pipe-test.log" | tail -30
      for r in 1 2; do for b in 2 16; do for v in 0 2; do
        echo "--- SDRT_ATTN_PIPE=$v batch $b"; SDRT_ATTN_PIPE=$v timeout 100 "$bin/bench_attention" --batch $b --repeats 20 2>&1 | grep -E "self \[|error"
      done; done; done 2>&1 | tee "$out/attn-pipe.txt"
      for r in 1 2; do for b in 2 16; do for v in 0 2; do
        echo "batch $b SDRT_ATTN_PIPE=$v: $(SDRT_ATTN_PIPE=$v timeout 120 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 \
          --batch $b --repeats 20 --warmup 3 --device-loop 2>&1 | grep -E 'median|error')"
      done; done; done 2>&1 | tee -a "$out/attn-pipe.txt"
      for b in 2 16; do  # the engine's own choice per shape (timed at build, SDRT_ATTN_PIPE unset)
        echo "batch $b timed choice:"; SDRT_VERBOSE=1 timeout 120 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 \
          --batch $b --repeats 20 --warmup 3 --device-loop 2>&1 | grep -E 'sdrt: attention|engine tactics|median|error'
      done 2>&1 | tee -a "$out/attn-pipe.txt" ;;
    exp16)  # the d-40 attention's exponentials in FP16, two per MUFU instruction (SDRT_ATTN_EXP16=1): the SASS it
            # compiles to, the op tests against the CPU, bench_attention and the forward with and without, alternating,
            # the forms the engine picks by timing; then sdrt bench at batch 1 and 16 (the engine's choice)
      /usr/local/cuda/bin/cuobjdump -sass "$bin/bench_attention" 2>/dev/null | grep -oE 'MUFU\.EX2[.A-Z0-9_]*' | sort | uniq -c
      timeout 200 "$bin/sdrt_tests" --gtest_filter='BackendOps.PipelinedAttentionMatchesTheCpu:BackendOps.AttentionForm*' > "$out/exp16-test.log" 2>&1
      echo "op test rc $?"; grep -E "4096|launches|PASSED|FAILED" "$out/exp16-test.log" | tail -16
      for r in 1 2; do for b in 2 16; do for v in 0 1; do
        echo "--- SDRT_ATTN_EXP16=$v batch $b"; SDRT_ATTN_EXP16=$v timeout 100 "$bin/bench_attention" --batch $b --repeats 20 2>&1 | grep -E "self \[4096|error"
      done; done; done 2>&1 | tee "$out/exp16.txt"
      for r in 1 2; do for b in 2 16; do for v in 0 1; do  # 0: never, 1: forced on the kept kernel
        echo "batch $b SDRT_ATTN_EXP16=$v: $(SDRT_ATTN_EXP16=$v fwd $b)"
      done; done; done 2>&1 | tee -a "$out/exp16.txt"
      for b in 2 16; do  # the engine's own choice (the FP16-exponential forms timed with the others)
        echo "batch $b timed choice:"; SDRT_VERBOSE=1 timeout 120 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 \
          --batch $b --repeats 20 --warmup 3 --device-loop 2>&1 | grep -E 'sdrt: attention|engine tactics|median|error'
      done 2>&1 | tee -a "$out/exp16.txt"
      for cfg in "1 3" "16 2"; do
        read -r nb reps <<< "$cfg"
        timeout 120 "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" --batch "$nb" --repeats "$reps" --warmup 1 --opt optimized \
          --no-engine-cache -o /tmp/bench16/b$nb 2>&1 | grep -E '^optimized|error'
      done 2>&1 | tee -a "$out/exp16.txt" ;;
    latemax)  # (and the d-40 cross-attention kernel "cross80", SDRT_ATTN_CROSS80, in the same runs)
              # the d-40 kept attention kernel's late-maximum form ("wgmma-lm", SDRT_ATTN_LATEMAX=1): P made against the
              # running row maxima and checked afterwards on its FP16 pairs; on base-2 scores (pass fold_attention_scale)
              # the maxima also taken off inside the MMAs. The op tests (its rare path included), bench_attention (the
              # "base2" line: the scale folded) and the forward without it (0), forced (1), forced without the scale
              # folded (1, SDRT_ATTN_SCALE_FOLD=0) and timed against the others (the default)
      timeout 200 "$bin/sdrt_tests" --gtest_filter='BackendOps.PipelinedAttentionMatchesTheCpu:BackendOps.*AttentionForm*' > "$out/latemax-test.log" 2>&1
      echo "op test rc $?"; grep -E "LATEMAX=1|rising|launches|attn_form|PASSED|FAILED" "$out/latemax-test.log" | tail -24
      for r in 1 2; do for b in 2 16; do for v in 0 1; do
        echo "--- SDRT_ATTN_LATEMAX=$v SDRT_ATTN_CROSS80=$v batch $b"
        SDRT_ATTN_LATEMAX=$v SDRT_ATTN_CROSS80=$v timeout 100 "$bin/bench_attention" --batch $b --repeats 20 2>&1 | grep -E "self \[4096|cross \[4096|error"
      done; done; done 2>&1 | tee "$out/latemax.txt"
      for r in 1 2; do for b in 2 16; do for v in "0 1" "1 1" "1 0"; do
        read -r lm fold <<< "$v"
        echo "batch $b SDRT_ATTN_LATEMAX=$lm SDRT_ATTN_SCALE_FOLD=$fold: $(SDRT_ATTN_LATEMAX=$lm SDRT_ATTN_SCALE_FOLD=$fold fwd $b)"
      done; done; done 2>&1 | tee -a "$out/latemax.txt"
      for b in 2 16; do  # the engine's own choice
        echo "batch $b timed choice:"; SDRT_VERBOSE=1 timeout 120 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 \
          --batch $b --repeats 20 --warmup 3 --device-loop 2>&1 | grep -E 'sdrt: attention|median|error'
      done 2>&1 | tee -a "$out/latemax.txt" ;;
    subpixel)  # upsamplers as 2x2 phase convolutions (pass subpixel_upsample_conv) against Upsample2x + 3x3 (SDRT_SUBPIXEL=0):
               # the op tests, the UNet forward at batch 2 and 16 and the VAE decoder at batch 1 and 4, alternating
      timeout 200 "$bin/sdrt_tests" --gtest_filter='Precisions/BackendOpsP.*:BackendOps.EveryConvolutionFormMatchesTheCpu:Passes.Tiny*' > "$out/subpixel-test.log" 2>&1
      echo "op tests rc $?"; grep -E "upsampler|phase|FAIL|PASSED|FAILED|rel err" "$out/subpixel-test.log" | tail -16
      for r in 1 2; do for b in 2 16; do for v in 0 1; do
        echo "batch $b SDRT_SUBPIXEL=$v: $(SDRT_SUBPIXEL=$v fwd $b)"
      done; done; done 2>&1 | tee "$out/subpixel.txt"
      for r in 1 2; do for b in 1 4; do for v in 0 1; do
        echo "VAE batch $b SDRT_SUBPIXEL=$v: $(SDRT_SUBPIXEL=$v timeout 120 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --vae \
          --batch $b --repeats 10 --warmup 2 --device-loop 2>&1 | grep -E 'median|error')"
      done; done; done 2>&1 | tee -a "$out/subpixel.txt" ;;
    ab-all)  # the twelfth to fifteenth sessions' changes in one call (after `tests`, which runs their op tests): the
             # forward at batch 2 and 16 as the pipeline runs it (guided), all on, then each one off (SDRT_GN_FORM=timed:
             # GroupNorm's forms timed, on; SDRT_ATTN_SMALL=0: the d-160 attentions in 64-row blocks), alternating
             # over ROUNDS rounds (2); about 4.5 minutes a round
      for r in $(seq "${ROUNDS:-2}"); do for b in 2 16; do
        for v in "all" "SDRT_SHARE_PREFIX=0" "SDRT_PACK_TEMB=0" "SDRT_ATTN_LATEMAX=0" "SDRT_ATTN_SCALE_FOLD=0" "SDRT_ATTN_CROSS80=0" "SDRT_GN_FORM=timed" "SDRT_ATTN_SMALL=0"; do
          f=--guided; [ "$v" = SDRT_SHARE_PREFIX=0 ] && f=""
          echo "batch $b $v: $( [ "$v" != all ] && export "$v"; FWD_FLAGS=$f fwd $b )"
        done
      done; done 2>&1 | tee "$out/ab-all.txt" ;;
    shared-prefix)  # the guidance halves sharing what depends only on the latents and timestep (build_guided_unet, the
                    # pipeline's default) against the whole batch computing everything: its tests, the forward at batch 2
                    # and 16 both ways, alternating, and sdrt bench at batch 1 and 16 with SDRT_SHARE_PREFIX=0 and without
      timeout 300 "$bin/sdrt_tests" --gtest_filter='Passes.Guidance*:Plan.CudaBuild*:Precisions/CudaConformanceP.*:Pipeline*' > "$out/shared-test.log" 2>&1
      echo "tests rc $?"; grep -E "guided|^\[  (PASSED|FAILED)|FAILED" "$out/shared-test.log" | tail -12
      for r in 1 2; do for b in 2 16; do for v in whole guided; do
        f=""; [ $v = guided ] && f=--guided
        echo "batch $b $v: $(FWD_FLAGS=$f fwd $b)"
      done; done; done 2>&1 | tee "$out/shared-prefix.txt"
      for r in 1 2; do for nb in 1 16; do for v in 0 1; do
        echo "SDRT_SHARE_PREFIX=$v batch $nb: $(SDRT_SHARE_PREFIX=$v timeout 200 "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" \
          --batch $nb --repeats 3 --warmup 1 --opt optimized --no-engine-cache -o "/tmp/share/$v$r$nb" 2>&1 | grep '^optimized')"
      done; done; done 2>&1 | tee -a "$out/shared-prefix.txt" ;;
    pack-temb)  # the ResNets' time projections as one GEMM (pass pack_time_projections) against 22 (SDRT_PACK_TEMB=0):
                # the GroupNorm op cases (packed vectors among them) and the tiny UNet's passes, then the guided forward
                # at batch 2 and 16 both ways, alternating, and sdrt bench at batch 1 both ways
      timeout 300 "$bin/sdrt_tests" --gtest_filter='BackendOps.GroupNorm*:Precisions/BackendOpsP.*:Passes.*' > "$out/pack-temb-test.log" 2>&1
      echo "tests rc $?"; grep -E "packed|^\[  (PASSED|FAILED)|FAILED" "$out/pack-temb-test.log" | tail -12
      for r in 1 2; do for b in 2 16; do for v in 0 1; do
        echo "batch $b SDRT_PACK_TEMB=$v: $(SDRT_PACK_TEMB=$v FWD_FLAGS=--guided fwd $b)"
      done; done; done 2>&1 | tee "$out/pack-temb.txt"
      for r in 1 2; do for v in 0 1; do
        echo "SDRT_PACK_TEMB=$v batch 1: $(SDRT_PACK_TEMB=$v timeout 200 "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" \
          --batch 1 --repeats 3 --warmup 1 --opt optimized --no-engine-cache -o "/tmp/pack/$v$r" 2>&1 | grep '^optimized')"
      done; done 2>&1 | tee -a "$out/pack-temb.txt" ;;
    loop-gap)  # why sdrt bench's UNet step (5.52 ms at batch 1) is above the forward's 5.32-5.39: 51 forwards back to back
               # against 51 steps of the sampling loop's device work (bench_unet_forward --steps), with the SM clock, power
               # and throttle reasons sampled meanwhile
      nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv -lms 100 > "$out/loop-gap-clocks.csv" &
      smi=$!; sleep 0.5
      for b in 2 16; do
        timeout 150 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch $b --repeats 20 --warmup 3 --device-loop \
          --steps 51 2>&1 | grep -E 'median|back to back|error'
      done 2>&1 | tee "$out/loop-gap.txt"
      kill $smi; sleep 0.3
      awk -F', ' 'NR>1{c[$2" "$5]++} END{for (k in c) print c[k], k}' "$out/loop-gap-clocks.csv" | sort -rn | head -8 ;;
    pdl)  # programmatic dependent launch (SDRT_PDL=1): the GPU tests with every kernel of ours launched so, then the
          # forward with and without it, alternating, whole and in two batch parts, and sdrt bench at batch 1 both ways
      SDRT_PDL=1 timeout 300 "$bin/sdrt_tests" --gtest_filter='*BackendOps*:Passes*:Pipeline*' > "$out/pdl-tests.log" 2>&1
      echo "tests with SDRT_PDL=1 rc $?"; grep -E 'dependent|^\[  (PASSED|FAILED)|FAILED' "$out/pdl-tests.log" | tail -12
      for r in 1 2; do for b in 2 16; do for v in 0 1; do
        echo "batch $b SDRT_PDL=$v: $(SDRT_PDL=$v fwd $b)"
      done; done; done 2>&1 | tee "$out/pdl.txt"
      { for v in 0 1; do echo "batch 2 split 2 SDRT_PDL=$v: $(SDRT_SPLIT=2 SDRT_PDL=$v fwd 2)"; done
        for r in 1 2; do for v in 0 1; do
          echo "SDRT_PDL=$v batch 1: $(SDRT_PDL=$v timeout 180 "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" --batch 1 --repeats 3 \
            --warmup 1 --opt optimized --no-engine-cache -o "/tmp/pdl/$v$r" 2>&1 | grep '^optimized')"
        done; done; } 2>&1 | tee -a "$out/pdl.txt" ;;
    search)  # the GEMM tactic search widened: cuBLASLt's first 64 heuristic candidates timed instead of 16, alternating
      for r in 1 2; do for b in 2 16; do for v in 16 64; do
        echo "batch $b SDRT_GEMM_CANDIDATES=$v: $(SDRT_GEMM_CANDIDATES=$v fwd $b)"
      done; done; done 2>&1 | tee "$out/search.txt" ;;
    png-env)  # the PNG time inside sdrt bench (4.5-10 ms on the H200 host against 3 ms in bench_png_encode) under
              # OpenMP settings: default, 8 threads, passive and active waiting; the host's CPU quota
      echo "nproc $(nproc); cpu.max $(cat /sys/fs/cgroup/cpu.max 2>/dev/null); governor $(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null)"
      for r in 1 2; do for env in "X=1" "OMP_NUM_THREADS=8" "OMP_WAIT_POLICY=passive" "OMP_WAIT_POLICY=active"; do
        env "$env" timeout 120 "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" --batch 1 --repeats 5 --warmup 1 --opt optimized \
          --no-engine-cache -o /tmp/pngenv > /dev/null 2>&1
        echo "$env: whole p50 $(awk -F, 'NR==2{print $5}' /tmp/pngenv/bench.csv) s, png p50 $(awk -F, 'NR==2{print $23}' /tmp/pngenv/bench.csv) s"
      done; done 2>&1 | tee "$out/png-env.txt" ;;
    conv-engines)  # the engine's cuDNN algorithm (legacy find) against every graph-API engine configuration, per 3x3 shape
      for b in 2 16; do timeout 250 "$bin/bench_conv_engines" --batch $b --repeats 10; done 2>&1 | tee "$out/conv-engines.txt" ;;
    conv-graph)  # the engine's graph-API convolution form (SDRT_CONV_GRAPH): its op test forced, the forward with it or not
      timeout 200 "$bin/sdrt_tests" --gtest_filter='BackendOps.EveryConvolutionFormMatchesTheCpu' > "$out/conv-graph-test.log" 2>&1
      echo "convolution forms' op test rc $?"; grep -E "SDRT_CONV_GRAPH|operation graph|PASSED|FAILED" "$out/conv-graph-test.log" | tail -16
      for r in 1 2; do for b in 2 16; do for v in 0 1; do
        echo "batch $b SDRT_CONV_GRAPH=$v: $(SDRT_CONV_GRAPH=$v FWD_TIMEOUT=300 fwd $b)"
      done; done; done 2>&1 | tee "$out/conv-graph.txt" ;;
    clocks)  # SM clock, power and throttle reasons while batch-16 forwards run back to back (is the graph's time
             # over its kernels' sum under ncu the clock, not gaps?)
      nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv -lms 250 > "$out/clocks.csv" &
      smi=$!; sleep 1
      "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch 16 --repeats 150 --warmup 3 --device-loop 2>&1 | grep -E 'median|error'
      kill $smi; sleep 0.5
      awk -F', ' 'NR>1{c[$2" "$5]++; p+=$3; n++} END{for (k in c) print c[k], k; if (n) print "mean power", p/n, "W,", n, "samples"}' "$out/clocks.csv" | sort -rn | head -10 ;;
    overlap)  # eight batches of one image (50 steps) with each batch's VAE decode beside the next batch's sampling or after
              # it (--no-decode-overlap), alternating; the engines built into the engine cache by a first, untimed run
      gen() { "$bin/sdrt" generate --backend cuda -m random:sd15 --tokenizer "$tok" -p "a photo of an astronaut riding a horse on mars" \
                --sampler pndm --steps 50 --cfg-scale 7.5 --seed 1 -o /tmp/overlap "$@" 2>&1 | grep -E '^seed|error'; }
      gen --batch-count 2 > /dev/null
      for r in 1 2; do for v in on off; do
        flag=""; [ $v = off ] && flag=--no-decode-overlap
        t0=$(date +%s.%N); line=$(gen --batch-count 8 $flag); t1=$(date +%s.%N)
        echo "decode overlap $v: $(awk "BEGIN{print $t1 - $t0}") s wall for 8 images; $line"
      done; done 2>&1 | tee "$out/overlap.txt" ;;
    ncu-attn)  # the kept Hopper kernel on the batch-16 4096-token d-40 self-attention: throughput, issue, occupancy, the
               # instruction mix by opcode and by pipe (which unit bounds its ~8 instructions per score)
      # NCU_ATTN: name:regex items (default the kept kernel's d-40 256-row instantiation, every such launch's
      # third); a file ncu-attn-NAME.txt each
      for item in ${NCU_ATTN:-kept:flash_wgmma_k}; do
        name=${item%%:*}; rx=${item#*:}
        timeout 150 ncu --clock-control none --kernel-name-base mangled -k "regex:$rx" --launch-skip 2 --launch-count 1 --section SpeedOfLight \
          --section ComputeWorkloadAnalysis --section InstructionStats --section WarpStateStats --section SchedulerStats --section Occupancy \
          --section LaunchStats --print-details all --metrics sass__inst_executed_per_opcode,smsp__inst_executed_pipe_alu.sum,smsp__inst_executed_pipe_fma.sum,smsp__inst_executed_pipe_xu.sum,smsp__inst_executed_pipe_fp16.sum,smsp__inst_executed.sum,smsp__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active \
          --print-metric-instances values "$bin/bench_attention" --batch 16 --repeats 1 > "$out/ncu-attn-$name.txt" 2>&1
        echo "--- $name"
        grep -E 'Duration|Issue Slots Busy|Executed Ipc A|Warp Cycles Per Issued|pipe_|inst_executed.sum|Registers Per|Achieved Occ|hmma|Stall' "$out/ncu-attn-$name.txt" | head -24
      done ;;
    ncu-gn)  # the GroupNorm kernels on SD's most frequent shape ([320,64,64]: the one-pass kernel at batch 2, the three
             # passes at batch 16): duration, DRAM throughput, achieved occupancy, where warps stall
      for b in 2 16; do
        timeout 120 ncu --clock-control none -k regex:'gn_(onepass|stats|apply|finalize)' --launch-count 4 --section SpeedOfLight \
          --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
          "$bin/bench_group_norm" --batch $b --repeats 1 > "$out/ncu-gn-b$b.txt" 2>&1
        grep -E 'gn_|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Stall|Block Size|Grid Size' "$out/ncu-gn-b$b.txt" | head -40
      done ;;
    gn8)  # GroupNorm's one-pass kernel in 16-byte vectors with batch slices (form onepass8, the default where it
          # applies) against the half2 one-pass / three-pass order before it (SDRT_GN_ONEPASS8=0): the GroupNorm op
          # tests, every form per shape (bench_group_norm), then the guided forward alternating, two rounds
      timeout 200 "$bin/sdrt_tests" --gtest_filter='*GroupNorm*' > "$out/gn8-test.log" 2>&1
      echo "tests rc $?"; grep -E 'onepass8|launches|PASSED|FAILED' "$out/gn8-test.log" | tail -12
      for b in 2 16; do "$bin/bench_group_norm" --batch $b --repeats 15; done 2>&1 | tee "$out/gn8.txt"
      for r in 1 2; do for b in 2 16; do
        echo "b$b onepass8: $(FWD_FLAGS=--guided fwd $b)"
        echo "b$b before:   $(SDRT_GN_ONEPASS8=0 FWD_FLAGS=--guided fwd $b)"
      done; done 2>&1 | tee -a "$out/gn8.txt" ;;
    ksplit)  # the d-160 attention's key-split blocks (forms ks4, ks2; SDRT_ATTN_KSPLIT=0: never timed, as before): their
             # op tests, every d-160 form per shape in CUDA graphs, the guided forward at batch 2 alternating, two rounds
      timeout 200 "$bin/sdrt_tests" --gtest_filter='*Attention*' > "$out/ksplit-test.log" 2>&1
      echo "tests rc $?"; grep -E ' -> |recorded (ks|rows|wgmma )|PASSED|FAILED' "$out/ksplit-test.log" | tail -16
      for b in 2 16; do "$bin/bench_attention" --batch $b --repeats 20 --graphs; done 2>&1 | grep -E 'shape|d 160' | tee "$out/ksplit.txt"
      for r in 1 2; do
        echo "b2 ksplit timed: $(FWD_FLAGS=--guided fwd 2)"
        echo "b2 SDRT_ATTN_KSPLIT=0: $(SDRT_ATTN_KSPLIT=0 FWD_FLAGS=--guided fwd 2)"
      done 2>&1 | tee -a "$out/ksplit.txt" ;;
    gn-bench)  # sdrt bench at batch 16 and 50 (the UNet on 32 and 100 rows) with the 16-byte one-pass GroupNorm in the
               # untimed order and without it (SDRT_GN_ONEPASS8=0), alternating on one machine
      for cfg in "16 2" "50 1"; do
        read -r nb reps <<< "$cfg"
        for v in on off; do
          env_set=""; [ $v = off ] && env_set="SDRT_GN_ONEPASS8=0"
          echo "batch $nb, onepass8 $v:"
          env $env_set "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" --batch "$nb" --repeats "$reps" --warmup 1 --opt optimized \
            --no-engine-cache -o /tmp/bench/gn$nb$v 2>&1 | grep -E '^optimized'
        done
      done 2>&1 | tee "$out/gn-bench.txt" ;;
    gntest)  # the GroupNorm op tests alone (every form against the CPU, the recorded forms)
      timeout 200 "$bin/sdrt_tests" --gtest_filter='*GroupNorm*' > "$out/gn-tests.log" 2>&1
      echo "rc $?"; grep -E ' cases|PASSED|FAILED' "$out/gn-tests.log" | tail -8 ;;
    gn16)  # GroupNorm, sixteenth session: the 16-byte one-pass kernel in batch slices where the half2 one does not fit
           # (SDRT_GN_ONEPASS8=0: three passes there, as before): the GroupNorm op tests, every form per shape, then
           # the guided forward alternating, two rounds. (Its first run also timed the half2 kernel's normalisation
           # values loaded before the grid barrier, SDRT_GN_PREFETCH: no gain, removed.)
      timeout 200 "$bin/sdrt_tests" --gtest_filter='*GroupNorm*' > "$out/gn16-test.log" 2>&1
      echo "tests rc $?"; grep -E ' cases|PASSED|FAILED' "$out/gn16-test.log" | tail -12
      for b in 2 16; do "$bin/bench_group_norm" --batch $b --repeats 15; done 2>&1 | tee "$out/gn16.txt"
      for r in 1 2; do
        echo "b16 new:    $(FWD_FLAGS=--guided fwd 16)"
        echo "b16 SDRT_GN_ONEPASS8=0: $(SDRT_GN_ONEPASS8=0 FWD_FLAGS=--guided fwd 16)"
      done 2>&1 | tee -a "$out/gn16.txt" ;;
    gn-block)  # GroupNorm, seventeenth session: a block per (image, slab of groups) holding it in registers (form "block";
               # in the default order by group_norm_block's rules, SDRT_GN_BLOCK=0: never): the GroupNorm op tests,
               # every form per shape (batch 1: the guided UNet's shared prefix) and the default order's time, then the
               # guided forward with and without, two rounds.
               # (Its first run had SDRT_GN_BLOCK as a size threshold, 0 / 8 / 64 MB, for every shape it applies to.)
      timeout 200 "$bin/sdrt_tests" --gtest_filter='*GroupNorm*' > "$out/gn-block-test.log" 2>&1
      echo "tests rc $?"; grep -E ' cases|recorded|PASSED|FAILED| -> ' "$out/gn-block-test.log" | tail -16
      for b in 1 2 16; do "$bin/bench_group_norm" --batch $b --repeats 15; done 2>&1 | tee "$out/gn-block.txt"
      for r in 1 2; do
        for b in 2 16; do
          echo "b$b block rules: $(FWD_FLAGS=--guided fwd $b)"
          echo "b$b SDRT_GN_BLOCK=0: $(SDRT_GN_BLOCK=0 FWD_FLAGS=--guided fwd $b)"
        done
      done 2>&1 | tee -a "$out/gn-block.txt" ;;
    gn-block32)  # the block form's rules at the UNet's 32 rows (sdrt bench --batch 16): every form per shape, then sdrt bench
                 # with and without (SDRT_GN_BLOCK=0)
      "$bin/bench_group_norm" --batch 32 --repeats 10 2>&1 | tee "$out/gn-block32.txt"
      for v in on off; do
        env_set=""; [ $v = off ] && env_set="SDRT_GN_BLOCK=0"
        echo "batch 16, block $v: $(env $env_set "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" --batch 16 --repeats 2 --warmup 1 \
          --opt optimized --no-engine-cache -o /tmp/bench/gb$v 2>&1 | grep -E '^optimized')"
      done 2>&1 | tee -a "$out/gn-block32.txt" ;;
    lanes)  # the second lane (SDRT_LANES=branches, eighteenth session, not yet measured: only the time embedding and its
            # projections beside conv_in and the first ResNet; SDRT_LANES=2: everything off the critical path): the side-lane
            # test, then the guided forward at batch 2 (three rounds) and 16 (two) against one stream
      timeout 120 "$bin/sdrt_tests" --gtest_filter='Passes.TinyUnetSideLane*:Passes.GuidanceHalves*' > "$out/lanes-test.log" 2>&1
      echo "tests rc $?"; grep -E 'differ|PASSED|FAILED' "$out/lanes-test.log" | tail -8
      AB="SDRT_LANES=branches SDRT_LANES=2" AB_BATCHES=2 AB_ROUNDS=3 OUT=$out bash "$0" env-ab | grep -v '^===\|^NVIDIA'; mv "$out/env-ab.txt" "$out/lanes-b2.txt"
      AB="SDRT_LANES=branches" AB_BATCHES=16 AB_ROUNDS=2 OUT=$out bash "$0" env-ab | grep -v '^===\|^NVIDIA'; mv "$out/env-ab.txt" "$out/lanes-b16.txt" ;;
    stage)  # the timestep's work ahead for a whole schedule (DeviceLoop::stage_input, the default since the nineteenth
            # session; SDRT_STAGE=0 turns it off): the staging test, the pipeline and server tests, the guided forward selecting
            # one of 50 staged timesteps before each run at batch 2 (three rounds) and 16 (two) with and without, the loop's
            # steps against back-to-back forwards (--steps 51), then sdrt bench at batch 1 with and without, alternating
      timeout 200 "$bin/sdrt_tests" --gtest_filter='Passes.TinyUnetStaged*' > "$out/stage-test.log" 2>&1
      echo "test rc $?"; grep -E 'staged|PASSED|FAILED' "$out/stage-test.log" | tail -10
      timeout 300 "$bin/sdrt_tests" --gtest_filter='Pipeline*:Server*:*CudaConformance*' > "$out/stage-pipeline.log" 2>&1
      echo "pipeline tests rc $?"; grep -E '^\[  (PASSED|FAILED)|FAILED' "$out/stage-pipeline.log" | tail -8
      AB="SDRT_STAGE=0" AB_FLAGS="--staged 50" AB_BATCHES=2 AB_ROUNDS=3 OUT=$out bash "$0" env-ab | grep -v '^===\|^NVIDIA'; mv "$out/env-ab.txt" "$out/stage-fwd-b2.txt"
      AB="SDRT_STAGE=0" AB_FLAGS="--staged 50" AB_BATCHES=16 AB_ROUNDS=2 OUT=$out bash "$0" env-ab | grep -v '^===\|^NVIDIA'; mv "$out/env-ab.txt" "$out/stage-fwd-b16.txt"
      for v in 1 0 1 0; do  # the loop's steps (staged timesteps, folded guidance) against back-to-back forwards
        echo "--- SDRT_STAGE=$v"; SDRT_STAGE=$v timeout 120 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch 2 --guided \
          --repeats 20 --warmup 3 --device-loop --steps 51 2>&1 | grep -E 'median|back to back|error'
      done 2>&1 | tee "$out/stage-loop.txt"
      for r in 1 2; do for v in 1 0; do
        echo "--- SDRT_STAGE=$v"
        SDRT_STAGE=$v "$bin/sdrt" bench --backend cuda --model random:sd15 --tokenizer "$tok" --batch 1 --repeats 3 --warmup 1 --opt optimized --no-engine-cache -o /tmp/bench/stage 2>&1 | grep -E '^opt|^optimized|error'
      done; done 2>&1 | tee "$out/stage-bench.txt" ;;
    narrow)  # convolution form "narrow" (nineteenth session: our kernel for at most 8 output channels, an experiment timed
             # only under SDRT_CONV_NARROW=timed): the convolution op tests, the build's timings for SD's conv_out
             # (SDRT_VERBOSE), the guided forward at batch 2 (three rounds) with 50 staged timesteps timing it or not, the VAE
             # decoder at batch 1 likewise
      timeout 200 "$bin/sdrt_tests" --gtest_filter='BackendOps.EveryConvolutionForm*:Precisions/BackendOpsP.EveryCudaOp*' > "$out/narrow-test.log" 2>&1
      echo "tests rc $?"; grep -E 'NARROW|conv_out|VAE|narrow|PASSED|FAILED' "$out/narrow-test.log" | tail -14
      SDRT_CONV_NARROW=timed SDRT_VERBOSE=1 timeout 120 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch 2 --guided --repeats 3 2>&1 |
        grep -E 'narrow' | grep -E 'o4 |c4 |narrow [0-9.]+ ms -> narrow' | tee "$out/narrow-timing.txt"
      AB="SDRT_CONV_NARROW=timed" AB_FLAGS="--staged 50" AB_BATCHES=2 AB_ROUNDS=3 OUT=$out bash "$0" env-ab | grep -v '^===\|^NVIDIA'; mv "$out/env-ab.txt" "$out/narrow-fwd.txt"
      for v in 1 0 1 0; do
        echo "--- SDRT_CONV_NARROW=$([ $v = 1 ] && echo timed || echo 0): $(export SDRT_CONV_NARROW=$([ $v = 1 ] && echo timed || echo 0); timeout 120 "$bin/bench_unet_forward" --backend cuda \
          --precision fp16 --model random:sd15 --vae --batch 1 --repeats 10 --warmup 2 --device-loop 2>&1 | grep -E 'median|error')"
      done 2>&1 | tee "$out/narrow-vae.txt" ;;
    splitk)  # the split-K implicit-GEMM kernel (twentieth session; an experiment, timed only under SDRT_CONV_SPLITK=timed /
             # SDRT_GEMM_SPLITK=timed): the convolution op tests with its forms forced, the build's timings per shape
             # (SDRT_VERBOSE), the guided forward with 50 staged timesteps at batch 2 (two rounds) and 16 (one): timed as
             # convolutions and GEMMs, as convolutions only, not at all (the default)
      timeout 240 "$bin/sdrt_tests" --gtest_filter='BackendOps.EveryConvolutionForm*:Precisions/BackendOpsP.EveryCudaOp*' > "$out/splitk-test.log" 2>&1
      echo "tests rc $?"; grep -E 'ran as split-K|FAIL|PASSED|FAILED' "$out/splitk-test.log" | tail -30
      SDRT_CONV_SPLITK=timed SDRT_GEMM_SPLITK=timed SDRT_VERBOSE=1 timeout 150 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 \
        --batch 2 --guided --repeats 3 2>&1 | grep -E 'split-K|^gemm' > "$out/splitk-timing.txt"
      echo "shapes that chose it: $(grep -cE 'splitk$| -> b[0-9]+c[0-9]+$' "$out/splitk-timing.txt")"
      AB="SDRT_CONV_SPLITK=timed,SDRT_GEMM_SPLITK=timed SDRT_CONV_SPLITK=timed" AB_FLAGS="--staged 50" AB_BATCHES=2 AB_ROUNDS=2 OUT=$out bash "$0" env-ab | grep -v '^===\|^NVIDIA'
      mv "$out/env-ab.txt" "$out/splitk-fwd-b2.txt"
      AB="SDRT_CONV_SPLITK=timed,SDRT_GEMM_SPLITK=timed" AB_FLAGS="--staged 50" AB_BATCHES=16 AB_ROUNDS=1 OUT=$out bash "$0" env-ab | grep -v '^===\|^NVIDIA'
      mv "$out/env-ab.txt" "$out/splitk-fwd-b16.txt" ;;
    splitk-fence)  # diagnostic (twentieth session's open question): the split-K kernel's per-shape timings with and without
                   # its proxy fence (SDRT_SPLITK_NOFENCE=1, unsafe) - if the ~0.5 us per K step goes, the fence waited for every
                   # copy in flight; if not, the bytes in flight per SM are capped (cp.async) and TMA is the way
      for v in 0 1; do
        SDRT_SPLITK_NOFENCE=$v SDRT_CONV_SPLITK=timed SDRT_GEMM_SPLITK=timed SDRT_VERBOSE=1 timeout 150 "$bin/bench_unet_forward" --backend cuda --precision fp16 \
          --model random:sd15 --batch 2 --guided --repeats 3 2>&1 | grep -E 'split-K|^gemm' > "$out/splitk-fence$v.txt"
        echo "--- SDRT_SPLITK_NOFENCE=$v"; grep -E 'conv n2 c1280 h8 w8 o1280 k3x3 s1|m128 n1280 k1280 bias residual|m1 n1280 k1280' "$out/splitk-fence$v.txt" | cut -c1-260
      done ;;
    s16)  # the kept Hopper attention with FP16 scores (form "wgmma-s16", twenty-fourth session): the attention op tests
          # (every case forced to it, the recorded form), bench_attention at batch 2 and 16 (10 launches a CUDA graph; modes
          # wgmma / wgmma-s16 and base2 / base2-s16), the engine's timed choices at batch 16 (SDRT_VERBOSE), then the guided
          # forward with SDRT_ATTN_S16=0 (never timed, as before) against the default, alternating (env-ab)
      timeout 300 "$bin/sdrt_tests" --gtest_filter='BackendOps.PipelinedAttention*:BackendOps.AttentionFormIsChosen*' > "$out/s16-test.log" 2>&1
      echo "rc $?"; grep -E 'S16=1 .*(FAIL|e-0[0-6])|FP16-score|recorded wgmma-s16|PASSED|FAILED' "$out/s16-test.log" | tail -30
      for b in 2 16; do "$bin/bench_attention" --batch $b --repeats 15 --graphs; done 2>&1 | tee "$out/s16-attn.txt"
      SDRT_VERBOSE=1 timeout 120 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch 16 --repeats 5 --warmup 2 --guided 2>&1 |
        grep -E 'attention|median' | tee "$out/s16-choice.txt"
      AB="SDRT_ATTN_S16=0" OUT=$out bash "$0" env-ab | grep -v '^===\|^NVIDIA' ;;
    s16w)  # twenty-sixth session: the d-40 FP16-score attention in 320-row blocks (form wgmma-s16w, five warpgroups):
           # its op tests, bench_attention's wgmma-s16w column, the engine's choice at batch 16, then the forward with
           # it never timed against the default (env-ab). (The GroupNorm statistics pass in 16-byte loads that this
           # step also ran in the twenty-seventh session was slower and is gone: bench/results/session27.)
      timeout 200 "$bin/sdrt_tests" --gtest_filter='BackendOps.*Attention*' > "$out/s16w-test.log" 2>&1
      echo "rc $?"; grep -E 'PASSED|FAILED|S16W=1:|recorded wgmma-s16w' "$out/s16w-test.log" | tail -12
      for b in 16 2; do "$bin/bench_attention" --batch $b --repeats 15 --graphs | grep -E '4096'; done 2>&1 | tee "$out/s16w-attn.txt"
      SDRT_VERBOSE=1 timeout 100 "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --batch 16 --repeats 3 --guided 2>&1 |
        grep -E 'attention.*4096|median' | tee "$out/s16w-choice.txt"
      AB="SDRT_ATTN_S16W=0" OUT=$out bash "$0" env-ab | grep -v '^===\|^NVIDIA' ;;
    vae-traffic)  # the VAE decoder's kernels at the pipeline's slice of batch 50 (5 images): DRAM bytes and tensor-pipe
                  # activity per kind (bench/ncu_traffic.py), after its median time at 5 and 8 images
      for b in 5 8; do echo "vae batch $b: $("$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --vae --batch $b --repeats 10 --warmup 2 2>&1 | grep -E 'median|error')"; done | tee "$out/vae.txt"
      "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --vae --batch 5 --repeats 1 --tactics /tmp/tactics-vae.json | grep -E 'tactics|error'
      timeout 300 ncu --profile-from-start off --csv --cache-control none --clock-control none \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed \
        "$bin/bench_unet_forward" --backend cuda --precision fp16 --model random:sd15 --vae --batch 5 --repeats 1 --warmup 1 --profile-range \
        --tactics /tmp/tactics-vae.json > /tmp/vae.csv 2>/dev/null
      echo "ncu rc $?"; python3 "$root/bench/ncu_traffic.py" /tmp/vae.csv "$out/vae-launches.txt" | tee "$out/vae-traffic.txt" ;;
    wgmma-rate)  # warpgroup-MMA rates for a fused Winograd convolution's inner loop (bench_wgmma_rate, packed with BINS=...)
      "$bin/bench_wgmma_rate" --iters 2000 | tee "$out/wgmma-rate.txt" ;;
    wx-test)  # the convolution op test, every form forced in turn (the Winograd kernel's included)
      timeout 300 "$bin/sdrt_tests" --gtest_filter='BackendOps.EveryConvolutionFormMatchesTheCpu' 2>&1 | tee "$out/wx-test.txt" |
        grep -E "ran as Winograd|FAIL|OK \]|PASSED|Failure|Expected|which is" ;;
    conv-wx)  # the fused Winograd F(2,3)-along-x convolution against cuDNN's choice per UNet shape (bench_conv_wx, packed with BINS=...)
      for b in ${WX_BATCHES:-16 2}; do "$bin/bench_conv_wx" --batch "$b" --repeats 10; done 2>&1 | tee "$out/conv-wx.txt" ;;
    wx-ncu)  # wx forms on shapes at batch 16 under Nsight Compute ($WX_NCU: form@C:K:HW items, default wx8x16s@320:320:64):
             # throughput, memory, warp states and each stall reason per issued instruction, the tensor pipe; wx-ncu-<item>.txt each
      for item in ${WX_NCU:-wx8x16s@320:320:64}; do
        f=$out/wx-ncu-${item//[:@]/-}.txt
        timeout 120 ncu --clock-control none --kernel-name-base demangled -k regex:conv_wx_k --launch-skip 1 --launch-count 1 \
          --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
          --section ComputeWorkloadAnalysis --section LaunchStats \
          --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_tensor.*cycles_active\.avg\.pct_of_peak_sustained_active" \
          "$bin/bench_conv_wx" --batch 16 --repeats 1 --shape "${item#*@}" --form "${item%@*}" > "$f" 2>&1
        echo "--- $item: ncu rc $?"
        grep -E "^ +[0-9]+ +[0-9]+ +[0-9]+ |Duration|Throughput|Issue Slots|Eligible|Spilling Req|tensor|stalled" "$f" | awk '$NF != "0" && $NF != "0.00"' | head -50
      done ;;
    env-ab)  # the guided forward with each setting of $AB (space-separated; an item's assignments joined by commas, e.g.
             # "SDRT_PDL=1 SDRT_PDL=1,SDRT_CONV_GRAPH=1") against the default, alternating, at the batches $AB_BATCHES (2 16),
             # $AB_ROUNDS rounds (2); $AB_FLAGS: more bench_unet_forward options for both
      for r in $(seq "${AB_ROUNDS:-2}"); do
        for b in ${AB_BATCHES:-2 16}; do
          for a in $AB; do
            echo "b$b $a: $(export ${a//,/ }; FWD_FLAGS="--guided ${AB_FLAGS:-}" fwd $b)"
          done
          echo "b$b default: $(FWD_FLAGS="--guided ${AB_FLAGS:-}" fwd $b)"
        done
      done 2>&1 | tee "$out/env-ab.txt" ;;
    *) echo "unknown step $step" ;;
  esac
done
