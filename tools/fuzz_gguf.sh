#!/usr/bin/env bash
# Builds the GGUF reader's libFuzzer target (cpp/fuzz/fuzz_gguf.cpp) with clang, ASan and UBSan,
# writes the seed corpus and fuzzes in a single process.
#   tools/fuzz_gguf.sh [SECONDS=600] [extra libFuzzer flags...]
# Needs clang with its runtime (Debian: apt-get install clang libclang-rt-14-dev).
# Crash inputs land in $BUILD/artifacts; the grown corpus stays in $BUILD/corpus (not committed).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${FUZZ_BUILD_DIR:-$ROOT/build/fuzz}
RUN_SECONDS=${1:-600}
shift || true
CXX=${FUZZ_CXX:-clang++}
SANITIZE="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

# The reader and the weight-type table it dequantizes with, instrumented for coverage and
# archived so the link pulls in only the objects the target needs. Not the whole CMake core:
# parts of it (cpuid probes, some SIMD intrinsics) need a newer clang than Debian's 14, so a
# quant file clang cannot compile is skipped with a warning; the link says if it was needed.
mkdir -p "$BUILD/obj"
OBJS=()
for src in "$ROOT"/cpp/gguf/*.cpp "$ROOT"/cpp/quant/*.cpp "$ROOT"/cpp/quant/types/*.cpp; do
  [ -e "$src" ] || continue
  isa=""
  case "$src" in
    *_avx512.cpp) isa="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -mbmi2" ;;
    *_avx2.cpp) isa="-mavx2 -mfma -mf16c -mbmi2" ;;
  esac
  obj="$BUILD/obj/$(basename "$(dirname "$src")")_$(basename "$src" .cpp).o"
  if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ]; then
    echo "compile $src"
    # shellcheck disable=SC2086
    if ! "$CXX" -std=c++17 -O1 -g $SANITIZE -fsanitize=fuzzer-no-link $isa -DDECOLLAMA_X86=1 \
        -I"$ROOT/cpp" -c "$src" -o "$obj" 2>"$obj.log"; then
      case "$src" in
        */cpp/gguf/*) cat "$obj.log" >&2; exit 1 ;;
        *) echo "warning: skipping $src (clang cannot compile it, see $obj.log)" >&2; rm -f "$obj"; continue ;;
      esac
    fi
  fi
  OBJS+=("$obj")
done
rm -f "$BUILD/libgguf_fuzz.a"
ar rcs "$BUILD/libgguf_fuzz.a" "${OBJS[@]}"
# shellcheck disable=SC2086
"$CXX" -std=c++17 -O1 -g $SANITIZE -fsanitize=fuzzer -I"$ROOT/cpp" \
  "$ROOT/cpp/fuzz/fuzz_gguf.cpp" "$BUILD/libgguf_fuzz.a" -lpthread -o "$BUILD/fuzz_gguf"

python3 "$ROOT/tools/fuzz_gguf.py" "$BUILD/seeds"
mkdir -p "$BUILD/corpus" "$BUILD/artifacts"
exec "$BUILD/fuzz_gguf" "$BUILD/corpus" "$BUILD/seeds" \
  -dict="$ROOT/tools/fuzz_gguf.dict" -max_total_time="$RUN_SECONDS" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/" "$@"
