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
DEFS=(-DDECOLLAMA_X86=1 '-DDECOLLAMA_VERSION="fuzz"' '-DDECOLLAMA_COMPILER="fuzz"')  # as CMake defines them

# The reader and the code it links against (weight-type table, kernels, common), instrumented
# for coverage and archived so the link pulls in only the objects the target needs. Not the
# CMake build: Debian's clang 14 rejects a few SIMD/cpuid constructs GCC accepts, so a file
# clang cannot compile is built with g++ instead, uninstrumented (never a file of the reader).
mkdir -p "$BUILD/obj"
OBJS=()
for src in "$ROOT"/cpp/gguf/*.cpp "$ROOT"/cpp/quant/*.cpp "$ROOT"/cpp/quant/types/*.cpp "$ROOT"/cpp/common/*.cpp; do
  [ -e "$src" ] || continue
  isa=""
  case "$src" in
    *_avx512.cpp) isa="-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c -mbmi2" ;;
    *_avx2.cpp) isa="-mavx2 -mfma -mf16c -mbmi2" ;;
  esac
  obj="$BUILD/obj/$(basename "$(dirname "$src")")_$(basename "$src" .cpp).o"
  # Rebuild when the source or any header is newer than the object.
  if [ ! -e "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find "$ROOT/cpp" -name '*.h' -newer "$obj" -print -quit)" ]; then
    echo "compile $src"
    # shellcheck disable=SC2086
    if ! "$CXX" -std=c++17 -O1 -g $SANITIZE -fsanitize=fuzzer-no-link $isa "${DEFS[@]}" \
        -I"$ROOT/cpp" -c "$src" -o "$obj" 2>"$obj.log"; then
      case "$src" in
        */cpp/gguf/*) cat "$obj.log" >&2; exit 1 ;;
      esac
      echo "warning: clang cannot compile $src (see $obj.log); using g++ -O3 (as the release build), uninstrumented" >&2
      # shellcheck disable=SC2086
      g++ -std=c++17 -O3 -g $isa "${DEFS[@]}" -I"$ROOT/cpp" -c "$src" -o "$obj"
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
