# twenty-seventh session, one call: GPU tests of the merged attention form and the pipeline's threaded noise,
# then sdrt bench at batch 50 before (sdrt_old: wip-s16w) and after (the pipeline change), batch 16, batch 1
root=$PWD; out=${OUT:-out}; mkdir -p $out
bash bench/device_run.sh >/dev/null 2>&1  # unpacks, links the conformance data (no step)
cudnn=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/cudnn/lib | head -1)
export LD_LIBRARY_PATH=$root/.carry/lib:$cudnn:/usr/local/cuda/lib64 SDRT_HOME=/tmp/sdrt-home
b=.carry/bin; xz -dc .carry/sdrt_old.xz > $b/sdrt_old; chmod +x $b/sdrt_old
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 240 $b/sdrt_tests --gtest_filter='*CudaConformanceP.DeviceLoop*:*CudaConformanceP.Decode*:BackendOps.*Attention*' > $out/tests.log 2>&1
echo "tests rc $?"; grep -E '^\[  (PASSED|FAILED) |FAILED  \]|S16W=1:|recorded wgmma-s16w' $out/tests.log | tail -8
for v in sdrt_old sdrt sdrt_old sdrt; do
  echo "== $v b50"; SDRT_TRACE_TIMES=1 timeout 150 $b/$v bench --backend cuda --model random:sd15 --batch 50 --repeats 1 --warmup 1 --opt optimized > $out/b50-$v.txt 2>&1
  grep -E '^generate|^decode|^optimized|rror' $out/b50-$v.txt | tail -3
done
echo "== b16"; timeout 100 $b/sdrt bench --backend cuda --model random:sd15 --batch 16 --repeats 3 --warmup 1 --opt optimized 2>&1 | grep -E '^optimized|tactics|rror'
echo "== b1"; timeout 100 $b/sdrt bench --backend cuda --model random:sd15 --batch 1 --repeats 5 --warmup 1 --opt optimized 2>&1 | grep -E '^optimized|rror'
for r in 1 2; do echo "fwd b16: $(timeout 120 $b/bench_unet_forward --backend cuda --precision fp16 --model random:sd15 --batch 16 --repeats 20 --warmup 3 --device-loop --guided 2>&1 | grep -E 'median|rror')"; done
