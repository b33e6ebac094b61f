#!/usr/bin/env bash
# The GPU suite in one call, from the repo root on the GPU machine, with .carry/ packed by
# scripts/gpu-pack.sh: GPU tests, then NVDEC and pipeline benchmarks against PyNvVideoCodec
# on the same clips. Results are written to a work folder and packed into one file,
# $OUT/results.tar (the device tool brings back at most 8 files), with steps.txt beside it;
# bench/gpu/collect.py turns them into bench/results/*.json.
set -uo pipefail
FETCH=${OUT:-/tmp/reel-gpu-out}
# Results of a run with another BIN (e.g. an older commit's, to compare on the same card)
# get this prefix: TAG=old- BIN=.carry/old bash bench/gpu/run.sh
TAG=${TAG:-}
OUT=/tmp/reel-gpu-results${TAG:+-$TAG}
rm -rf "$OUT" && mkdir -p "$OUT" "$FETCH"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
BIN=${BIN:-.carry/bin}
log="$OUT/gpu-tests.log"
{ nvidia-smi; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; } > "$log" 2>&1
python3 -m pip install -q --no-index --no-deps .carry/wheels/*.whl >> "$log" 2>&1

clips=/tmp/reel-clips
mkdir -p "$clips"
for c in h264 hevc; do
  src=$(ls .carry/clips/seg_$c.*); ext=${src##*.}
  for i in 1 2 3 4 5; do cat "$src"; done > "$clips/${c}_30s.$ext"
done
for i in $(seq 50); do cat .carry/clips/seg_h264.h264; done > "$clips/h264_5min.h264"
h264=$clips/h264_30s.h264; hevc=$clips/hevc_30s.hevc

step() { echo "== $1: rc=$2" | tee -a "$OUT/steps.txt"; }
# Steps to run (comma-separated): tests, decode, frames, encoder, qwen3, batching, client, e2e,
# handoff, transcode, scaling, split, host, logical, color, headline.
ONLY=${ONLY:-tests,decode,frames}
want() { [[ ",$ONLY," == *",$1,"* ]]; }
# The random 7B tower (written once per machine) and the Python plugin, for the steps
# that need them.
model=/tmp/reel-qwen2.5-vl-7b
model_7b() { [ -f "$model/model.safetensors" ] || "$BIN/reel" model init --arch qwen2.5-vl-7b --random --seed 0 -o "$model" >> "$OUT/steps.txt" 2>&1; }
install_client() { python3 -m pip install -q --no-deps --no-build-isolation -e clients/python >> "$log" 2>&1; }

# 1. Correctness on the GPU (fails, not skips, without a usable GPU).
if want tests; then
REEL_REQUIRE_GPU=1 REEL_TEST_DATA=$PWD/tests/data/video timeout 300 "$BIN/gpu-tests" --test-threads=1 --nocapture >> "$log" 2>&1
step gpu-tests $?
fi

# 2. NVDEC throughput, reel then PyNvVideoCodec, same clips, same session counts.
if want decode; then
timeout 240 "$BIN/reel" bench decode "$h264" "$hevc" --sessions ${DECODE_SESSIONS:-1,2,4,7,8,14,16} > "$OUT/reel-decode.json" 2>> "$OUT/steps.txt"
step reel-decode $?
timeout 300 python3 bench/gpu/peer_pynvc.py decode "$h264" "$hevc" --sessions ${DECODE_SESSIONS:-1,2,4,7,8,14,16} > "$OUT/peer-decode.json" 2>> "$OUT/steps.txt"
step peer-decode $?

# 3. Decoder utilization at a high session count, on the 5-minute clip.
nvidia-smi dmon -s u -d 1 > "$OUT/dmon.txt" 2>&1 &
dmon=$!
timeout 120 "$BIN/reel" bench decode "$clips/h264_5min.h264" --sessions 14 --repeat 1 > "$OUT/reel-decode-5min.json" 2>> "$OUT/steps.txt"
step reel-decode-5min $?
kill $dmon 2>/dev/null
fi

# 4. One video's latency to preprocessed frames on the GPU (2 fps sampling): reel on one
#    NVDEC session, reel on every engine (the GPU's session share, GOP segments balanced by
#    cost), PyNvVideoCodec single decoder + HF processor; 30 s H.264 and HEVC, 5 min H.264.
#    Then 64 videos at once (aggregate decode rate against the all-engine ceiling of
#    `reel bench decode`), and a --trace timeline of one video.
if want frames; then
long=$clips/h264_5min.h264
"$BIN/reel" frames "$h264" --device cuda -o /tmp/reel-frames.safetensors --json >> "$OUT/steps.txt" 2>&1
timeout 240 "$BIN/reel" bench frames "$h264" "$hevc" "$long" --device cuda --sessions 1 --iterations 3 > "$OUT/reel-frames-1session.json" 2>> "$OUT/steps.txt"
step reel-frames-1session $?
timeout 180 "$BIN/reel" bench frames "$h264" "$hevc" "$long" --device cuda --iterations 5 > "$OUT/reel-frames.json" 2>> "$OUT/steps.txt"
step reel-frames $?
# With several GPUs the run above decodes on all of them; this one on GPU 0 alone.
if [ "$(nvidia-smi -L | wc -l)" -gt 1 ]; then
CUDA_VISIBLE_DEVICES=0 timeout 180 "$BIN/reel" bench frames "$h264" "$hevc" "$long" --device cuda --iterations 5 \
  > "$OUT/reel-frames-1gpu.json" 2>> "$OUT/steps.txt"
step reel-frames-1gpu $?
fi
timeout 300 python3 bench/gpu/peer_pynvc.py pipeline "$h264" "$hevc" "$long" --iterations 3 > "$OUT/peer-frames.json" 2>> "$OUT/steps.txt"
step peer-frames $?
timeout 200 "$BIN/reel" bench frames "$h264" --device cuda --concurrent 64 --iterations 4 > "$OUT/reel-frames-64.json" 2>> "$OUT/steps.txt"
step reel-frames-64 $?
timeout 120 "$BIN/reel" bench decode "$h264" --sessions 14,16 > "$OUT/reel-decode-ceiling.json" 2>> "$OUT/steps.txt"
step reel-decode-ceiling $?
"$BIN/reel" --trace "$OUT/trace-h264-30s.json" frames "$h264" --device cuda -o /tmp/reel-frames.safetensors >> "$OUT/steps.txt" 2>&1
step trace $?
fi

# 5. The CUDA vision tower: parity tests, then the 7B tower against HF transformers (sdpa,
#    bf16) on the same seeded inputs, and reel's embeddings checked against HF's.
if want encoder; then
REEL_REQUIRE_GPU=1 REEL_REPO=$PWD timeout 300 "$BIN/encoder-cuda-tests" --test-threads=1 --nocapture >> "$log" 2>&1
step encoder-cuda-tests $?
model_7b
timeout 300 "$BIN/reel" bench encode --model "$model" --device cuda --profile --save /tmp/reel-encode-out ${ENCODE_BATCHES:-} > "$OUT/reel-encode.json" 2>> "$OUT/steps.txt"
step reel-encode $?
# f32 on the three single-video grids: exactness on the full-size tower.
timeout 120 "$BIN/reel" bench encode --model "$model" --device cuda --dtype f32 --iterations 1 --save /tmp/reel-encode-f32 \
  --batch 30x32x32 --batch 1x74x136 --batch 150x16x16 > "$OUT/reel-encode-f32.json" 2>> "$OUT/steps.txt"
step reel-encode-f32 $?
timeout 400 python3 bench/encoder/bench_gpu.py --model "$model" --reel-out /tmp/reel-encode-out \
  --reel-f32-out /tmp/reel-encode-f32 ${ENCODE_BATCHES:-} > "$OUT/peer-encode.json" 2>> "$OUT/steps.txt"
step peer-encode $?
fi

# 5a. The Qwen3-VL family's towers: CUDA parity tests (in the encoder tests above), then
#     full-size random Qwen3-VL-8B (head_dim 72, deepstack) and 2B (head_dim 64) towers
#     against HF transformers (sdpa, bf16) on the same seeded inputs, with reel's packed
#     [main | deepstack] embeddings checked against HF's, and f32 exactness on the GPU.
if want qwen3; then
timeout 120 python3 bench/gpu/check_qwen3_e2e.py "$PWD/$BIN/reel" > "$OUT/qwen3-e2e.json" 2>> "$OUT/steps.txt"
step qwen3-e2e $?
for arch in ${QWEN3_ARCHES:-qwen3-vl-8b qwen3-vl-2b}; do
  dir=/tmp/reel-$arch
  [ -f "$dir/model.safetensors" ] || "$BIN/reel" model init --arch $arch --random --seed 0 -o "$dir" >> "$OUT/steps.txt" 2>&1
  timeout 300 "$BIN/reel" bench encode --model "$dir" --device cuda --profile --save /tmp/reel-encode-$arch ${QWEN3_BATCHES:-} \
    > "$OUT/reel-encode-$arch.json" 2>> "$OUT/steps.txt"
  step "reel-encode-$arch" $?
  timeout 120 "$BIN/reel" bench encode --model "$dir" --device cuda --dtype f32 --iterations 1 --save /tmp/reel-encode-f32-$arch \
    --batch 30x32x32 --batch 1x74x136 > "$OUT/reel-encode-f32-$arch.json" 2>> "$OUT/steps.txt"
  step "reel-encode-f32-$arch" $?
  timeout 400 python3 bench/encoder/bench_gpu.py --model "$dir" --reel-out /tmp/reel-encode-$arch \
    --reel-f32-out /tmp/reel-encode-f32-$arch ${QWEN3_BATCHES:-} > "$OUT/peer-encode-$arch.json" 2>> "$OUT/steps.txt"
  step "peer-encode-$arch" $?
done
fi

# 5b. Cross-request batching (64 small requests through the batcher vs one forward each),
#     and one video end to end: slices streamed to the tower during decoding vs after it,
#     and a repeat answered by the embedding cache.
if want batching; then
model_7b
timeout 200 "$BIN/reel" bench batch --model "$model" --requests 64 --grid 2x16x16 > "$OUT/reel-batch.json" 2>> "$OUT/steps.txt"
step reel-batch $?
timeout 200 "$BIN/reel" bench batch --model "$model" --requests 8 --grid 30x32x32 --encoder-memory-mib 8192 \
  > "$OUT/reel-batch-large.json" 2>> "$OUT/steps.txt"
step reel-batch-large $?
timeout 300 "$BIN/reel" bench embed "$h264" --model "$model" --device cuda > "$OUT/reel-embed.json" 2>> "$OUT/steps.txt"
step reel-embed $?
fi

# 6. The Python plugin against a GPU server: CUDA IPC zero-copy, and the HF generate proof
#    with reel's embeddings handed over through CUDA IPC.
if want client; then
install_client
REEL_BIN=$PWD/$BIN/reel REEL_TEST_CUDA=1 REEL_TEST_PYTHON=python3 REEL_TEST_DATA=$PWD/tests/data/video \
  timeout 400 bash clients/python/run_tests.sh -v -s tests/test_cuda_ipc.py > "$OUT/client-tests.log" 2>&1
step client-tests $?
tail -25 "$OUT/client-tests.log"
fi

# 7. End to end: 30 s 1080p H.264 → 7B embeddings through reel serve + CUDA IPC, against
#    OpenCV decode + HF processor + HF tower on the same GPU.
if want e2e; then
model_7b
install_client
timeout 500 python3 bench/serve/bench_e2e.py --reel-bin "$PWD/$BIN/reel" --model "$model" --clip "$h264" \
  > "$OUT/e2e.json" 2>> "$OUT/steps.txt"
step e2e $?
fi

# 7b. Handoff: CUDA IPC vs INLINE for the same result (a 1080p clip of the transcode set).
if want handoff; then
model_7b
install_client
timeout 200 python3 bench/serve/bench_e2e.py --reel-bin "$PWD/$BIN/reel" --model "$model" --handoff-only --videos 1 \
  --clip "$(ls .carry/clips/transcode/clip02_*)" --workdir /tmp/reel-handoff > "$OUT/handoff.json" 2>> "$OUT/steps.txt"
step handoff $?
fi

# 8. Transcode: 200 mixed clips (20 distinct x 10) → 7B embeddings, against PyNvVideoCodec +
#    HF processor + HF tower.
if want transcode; then
model_7b
rm -rf /tmp/tx-in /tmp/tx-out && mkdir -p /tmp/tx-in
for f in .carry/clips/transcode/*; do b=$(basename "$f"); for k in $(seq 0 9); do cp "$f" "/tmp/tx-in/r${k}_$b"; done; done
start=$(date +%s.%N)
timeout 300 "$BIN/reel" transcode /tmp/tx-in -o /tmp/tx-out --what embeddings --model "$model" --device cuda \
  --jobs ${TRANSCODE_JOBS:-6} --quiet --json > "$OUT/reel-transcode.json" 2>> "$OUT/steps.txt"
step reel-transcode $?
python3 -c "import sys; print('{\"wall_s\": %.3f}' % (float(sys.argv[2]) - float(sys.argv[1])))" "$start" "$(date +%s.%N)" > "$OUT/reel-transcode-wall.json"
timeout 400 python3 bench/transcode/peer.py /tmp/tx-in --model "$model" > "$OUT/peer-transcode.json" 2>> "$OUT/steps.txt"
step peer-transcode $?
fi

# 9. Scaling over GPUs (1, 2, 4, 8 where the machine has them): one video's latency to
#    preprocessed frames with GOP segments on every visible GPU, and reel serve's throughput
#    at 64 and 256 requests in flight, a copy of the 7B tower on each GPU.
if want scaling; then
model_7b
install_client
gpus=$(nvidia-smi -L | wc -l)
for n in 1 2 4 8; do
  [ "$n" -le "$gpus" ] || continue
  visible=$(seq -s, 0 $((n - 1)))
  CUDA_VISIBLE_DEVICES=$visible timeout 200 "$BIN/reel" bench frames "$h264" "$clips/h264_5min.h264" --device cuda \
    --iterations 5 > "$OUT/scaling-frames-$n.json" 2>> "$OUT/steps.txt"
  step "scaling-frames-$n" $?
  for c in 64 256; do
    CUDA_VISIBLE_DEVICES=$visible timeout 400 python3 bench/serve/bench_e2e.py --reel-bin "$PWD/$BIN/reel" --model "$model" \
      --clip "$h264" --skip-baseline --concurrency $c --requests $c --workers $((8 * n)) --latency-runs 3 \
      --workdir /tmp/reel-scaling > "$OUT/scaling-serve-$n-$c.json" 2>> "$OUT/steps.txt"
    step "scaling-serve-$n-$c" $?
  done
done
fi

# 12. One video's embedding latency with every GPU encoding the slices it decoded
#     (`reel embed --split-encode`) against decoding on every GPU and encoding on GPU 0
#     (plain `reel embed`), 7B tower, 30 s and 5 min H.264, on 1/2/4/8 GPUs where present;
#     4 runs each, the first a warm-up. Then the two outputs are compared.
if want split; then
model_7b
gpus=$(nvidia-smi -L | wc -l)
for n in 1 2 4 8; do
  [ "$n" -le "$gpus" ] || continue
  visible=$(seq -s, 0 $((n - 1)))
  for clip in "$h264" "$clips/h264_5min.h264"; do
    name=$(basename "$clip" .h264)
    for mode in plain split; do
      flag=; [ $mode = split ] && flag=--split-encode
      for r in 0 1 2 3; do
        CUDA_VISIBLE_DEVICES=$visible timeout 120 "$BIN/reel" embed "$clip" --model "$model" --device cuda $flag \
          -o "/tmp/reel-split-$mode.safetensors" --json > "$OUT/split-$n-$name-$mode-$r.json" 2>> "$OUT/steps.txt"
      done
      step "split-$n-$name-$mode" $?
    done
    python3 bench/gpu/compare_embeddings.py /tmp/reel-split-plain.safetensors /tmp/reel-split-split.safetensors \
      > "$OUT/split-$n-$name-compare.json" 2>> "$OUT/steps.txt"
    step "split-$n-$name-compare" $?
  done
done
fi

# 13. Host CPU that GPU decoding takes (demux, bitstream parsing, launches): cores kept busy
#     and CPU time per decoded picture, for one video and for 64 at once, beside the NVDEC
#     ceiling; what several GPUs would need of the host's cores.
if want host; then
timeout 120 "$BIN/reel" bench decode "$h264" --sessions 14 --repeat 2 > "$OUT/host-decode.json" 2>> "$OUT/steps.txt"
step host-decode $?
timeout 120 "$BIN/reel" bench frames "$h264" "$clips/h264_5min.h264" --device cuda --iterations 3 > "$OUT/host-frames.json" 2>> "$OUT/steps.txt"
step host-frames $?
timeout 200 "$BIN/reel" bench frames "$h264" --device cuda --concurrent 64 --iterations 3 > "$OUT/host-frames-64.json" 2>> "$OUT/steps.txt"
step host-frames-64 $?
fi

# 14. The multi-GPU code paths on one device: REEL_GPUS_PER_DEVICE=2 opens it as two GPUs,
#     each with its own decoder pool, session share, models and result pool. Split encoding
#     end to end against one GPU's plain embeddings, then `reel serve` with two replicas and
#     split encoding under load, through the plugin's CUDA IPC. Correctness, not scaling.
if want logical; then
model_7b
for clip in "$h264" "$clips/h264_5min.h264"; do
  name=$(basename "$clip" .h264)
  timeout 120 "$BIN/reel" embed "$clip" --model "$model" --device cuda:0 -o /tmp/reel-logical-plain.safetensors --json \
    > "$OUT/logical-$name-plain.json" 2>> "$OUT/steps.txt"
  step "logical-$name-plain" $?
  REEL_GPUS_PER_DEVICE=2 timeout 120 "$BIN/reel" embed "$clip" --model "$model" --device cuda --split-encode \
    -o /tmp/reel-logical-split.safetensors --json > "$OUT/logical-$name-split.json" 2>> "$OUT/steps.txt"
  step "logical-$name-split" $?
  python3 bench/gpu/compare_embeddings.py /tmp/reel-logical-plain.safetensors /tmp/reel-logical-split.safetensors \
    > "$OUT/logical-$name-compare.json" 2>> "$OUT/steps.txt"
  step "logical-$name-compare" $?
done
install_client
REEL_GPUS_PER_DEVICE=2 timeout 300 python3 bench/serve/bench_e2e.py --reel-bin "$PWD/$BIN/reel" --model "$model" \
  --clip "$h264" --skip-baseline --concurrency 16 --requests 32 --latency-runs 2 --workers 16 \
  --workdir /tmp/reel-logical --serve-arg=--split-encode --serve-arg=true > "$OUT/logical-serve.json" 2>> "$OUT/steps.txt"
step logical-serve $?
grep -E "replica|model q7b|split|error|panic" /tmp/reel-logical/serve.log | head -20 >> "$OUT/steps.txt"
fi

# 14b. HF-exact from the file on the GPU: `reel frames --device cuda` on every clip of the
#      colour goldens, pixel values against HF's from PyAV/OpenCV frames.
if want color; then
timeout 120 python3 bench/gpu/check_color.py "$PWD/$BIN/reel" > "$OUT/color.json" 2>> "$OUT/steps.txt"
step color $?
fi

# 15. The headline numbers of reel alone, no peers (frames on every engine, the 7B tower,
#     serve end to end), to compare one build with another on the same card: run it again
#     with BIN=<other build> TAG=<name>- in the same call.
if want headline; then
model_7b
timeout 180 "$BIN/reel" bench frames "$h264" "$hevc" "$clips/h264_5min.h264" --device cuda --iterations 5 \
  > "$OUT/${TAG}headline-frames.json" 2>> "$OUT/steps.txt"
step "${TAG}headline-frames" $?
timeout 300 "$BIN/reel" bench encode --model "$model" --device cuda > "$OUT/${TAG}headline-encode.json" 2>> "$OUT/steps.txt"
step "${TAG}headline-encode" $?
install_client
timeout 300 python3 bench/serve/bench_e2e.py --reel-bin "$PWD/$BIN/reel" --model "$model" --clip "$h264" \
  --skip-baseline --workdir "/tmp/reel-${TAG}headline" > "$OUT/${TAG}headline-e2e.json" 2>> "$OUT/steps.txt"
step "${TAG}headline-e2e" $?
fi

grep -E "^test |test result|CUDA vs CPU|worst|max rel|bit-identical|max abs diff|sessions:|Unsupported|reported" "$log" | tail -60
cat "$OUT/steps.txt" | tail -30
tar -C "$OUT" -cf "$FETCH/${TAG}results.tar" . && cp "$OUT/steps.txt" "$FETCH/${TAG}steps.txt" 2>/dev/null
