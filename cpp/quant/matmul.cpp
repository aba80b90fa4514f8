#include "quant/matmul.h"

#include <algorithm>
#include <atomic>
#include <string>

#include "common/error.h"
#include "quant/dot_simd.h"

namespace decollama {

namespace {

// Weight rows whose dots run back to back against one activation row: 16 rows of the widest
// Gemma FFN row (q4_K, 2048 values: 18 KiB) stay in L1 while every token of a block passes.
constexpr int64_t kRowTile = 16;
// Quantized activations of one token block, reused by every weight row tile: sized for L2.
constexpr size_t kTokenBlockBytes = 256 * 1024;
constexpr int64_t kMaxTokensPerBlock = 64;
// Work chunks per thread: enough that a slow or preempted thread does not hold up the rest.
constexpr int64_t kChunksPerThread = 8;
// Below this many activation values one thread converts them: waking the pool costs more.
constexpr int64_t kParallelConversionValues = 1 << 15;

const CpuFeatures& this_cpu() {
    static const CpuFeatures features = detect_cpu_features();  // immutable once initialized
    return features;
}

// Everything one matmul call shares between its threads. The pool jobs capture only a
// reference to it, so std::function stores them inline: no allocation per call.
struct MatmulJob {
    VecDotFn dot = nullptr;
    GemmTileFn tile_fn = nullptr;  // preferred over dot where the path has one
    const uint8_t* weights = nullptr;
    size_t weight_row_bytes = 0;
    // Fp32 precision: rows are dequantized a tile at a time into thread i's kRowTile * n_in floats
    // at dequantized + i * kRowTile * n_in, and dot / tile_fn are the f32 kernels.
    DequantizeRowFn dequantize = nullptr;
    float* dequantized = nullptr;
    int64_t n_in = 0, n_out = 0, n_tokens = 0;

    const float* x = nullptr;
    QuantizeRowFn quantize_activation = nullptr;  // nullptr when x is used as it is (F32)
    uint8_t* converted = nullptr;                 // scratch rows of the vec_dot_type
    const uint8_t* activations = nullptr;         // what the dots read: x or the converted rows
    size_t activation_row_bytes = 0;

    float* y = nullptr;
    // The work split, from plan_chunks().
    int64_t tokens_per_block = 0;
    int64_t rows_per_chunk = 0, n_row_chunks = 0;
    int64_t n_chunks = 0;
    // On its own cache line: claiming a chunk must not evict the read-only fields above from
    // the other cores' caches.
    alignas(64) std::atomic<int64_t> next_chunk{0};

    // Token blocks whose activations fit in L2, each cut into row chunks: whole row tiles,
    // several per thread so dynamic claiming evens out uneven progress.
    void plan_chunks(int n_threads) {
        tokens_per_block = std::clamp<int64_t>(int64_t(kTokenBlockBytes / activation_row_bytes), 1,
                                               std::min(kMaxTokensPerBlock, n_tokens));
        const int64_t n_token_blocks = (n_tokens + tokens_per_block - 1) / tokens_per_block;
        const int64_t wanted_row_chunks = std::max<int64_t>(1, n_threads * kChunksPerThread / n_token_blocks);
        const int64_t rows = (n_out + wanted_row_chunks - 1) / wanted_row_chunks;
        rows_per_chunk = std::max(kRowTile, (rows + kRowTile - 1) / kRowTile * kRowTile);
        n_row_chunks = (n_out + rows_per_chunk - 1) / rows_per_chunk;
        n_chunks = n_row_chunks * n_token_blocks;
    }

    void convert_activations(int64_t token_begin, int64_t token_end) const {
        for (int64_t t = token_begin; t < token_end; ++t)
            quantize_activation(x + t * n_in, converted + size_t(t) * activation_row_bytes, n_in);
    }

    // Chunks are claimed dynamically; chunk c = (token block c / n_row_chunks, row chunk
    // c % n_row_chunks), so all threads sweep the weights against the same, cache-hot tokens.
    void compute_chunks(int thread) {
        float* const rows_scratch = dequantized == nullptr ? nullptr : dequantized + size_t(thread) * kRowTile * n_in;
        for (int64_t c = next_chunk.fetch_add(1, std::memory_order_relaxed); c < n_chunks;
             c = next_chunk.fetch_add(1, std::memory_order_relaxed)) {
            const int64_t token_begin = (c / n_row_chunks) * tokens_per_block;
            const int64_t token_end = std::min(n_tokens, token_begin + tokens_per_block);
            const int64_t row_begin = (c % n_row_chunks) * rows_per_chunk;
            const int64_t row_end = std::min(n_out, row_begin + rows_per_chunk);
            for (int64_t tile = row_begin; tile < row_end; tile += kRowTile)
                compute_tile(tile, std::min(row_end, tile + kRowTile), token_begin, token_end, rows_scratch);
        }
    }

    // rows_scratch: this thread's dequantization rows (Fp32 precision), else nullptr.
    void compute_tile(int64_t row_begin, int64_t row_end, int64_t token_begin, int64_t token_end,
                      float* rows_scratch) const {
        const int64_t n = n_in;
        const int64_t tile_rows = row_end - row_begin;
        const uint8_t* tile = weights + size_t(row_begin) * weight_row_bytes;
        size_t stride = weight_row_bytes;
        if (rows_scratch != nullptr) {
            // Once per tile and token block: the dequantized rows serve every token of the block.
            for (int64_t r = 0; r < tile_rows; ++r) dequantize(tile + size_t(r) * stride, rows_scratch + r * n, n);
            tile = reinterpret_cast<const uint8_t*>(rows_scratch);
            stride = size_t(n) * sizeof(float);
        }
        if (tile_fn != nullptr) {
            compute_gemm_tiles(tile, stride, row_begin, row_end, token_begin, token_end);
            return;
        }
        // Locals: the indirect call would otherwise make the compiler reload every field.
        const VecDotFn dot_fn = dot;
        for (int64_t t = token_begin; t < token_end; ++t) {
            const uint8_t* a = activations + size_t(t) * activation_row_bytes;
            float* y_tile = y + t * n_out + row_begin;
            for (int64_t r = 0; r < tile_rows; ++r) dot_fn(n, &y_tile[r], tile + size_t(r) * stride, a);
        }
    }

    // Groups of kGemmTileTokens tokens sweep the row tile (tile: its first row, rows stride
    // bytes apart), still in L1, kGemmTileRows at a time.
    void compute_gemm_tiles(const uint8_t* tile, size_t stride, int64_t row_begin, int64_t row_end,
                            int64_t token_begin, int64_t token_end) const {
        const GemmTileFn fn = tile_fn;
        const int64_t n = n_in, rows_total = n_out;
        const size_t a_stride = activation_row_bytes;
        for (int64_t t = token_begin; t < token_end; t += kGemmTileTokens) {
            const int n_t = int(std::min<int64_t>(kGemmTileTokens, token_end - t));
            const uint8_t* a = activations + size_t(t) * a_stride;
            float* y_t = y + t * rows_total;
            for (int64_t r = row_begin; r < row_end; r += kGemmTileRows) {
                const int n_r = int(std::min<int64_t>(kGemmTileRows, row_end - r));
                fn(n, tile + size_t(r - row_begin) * stride, stride, a, a_stride, y_t + r, rows_total, n_r, n_t);
            }
        }
    }
};

void check_arguments(const WeightView& w, const WeightTypeTraits& t, const float* x, int64_t n_tokens,
                     const float* y, CpuPath path) {
    if (w.n_in <= 0 || w.n_in % t.block_size != 0)
        throw InvalidArgument(std::string("matmul: ") + t.name + " row length " + std::to_string(w.n_in) +
                              " is not a positive multiple of the block size " +
                              std::to_string(t.block_size));
    if (w.n_out < 0 || n_tokens < 0)
        throw InvalidArgument("matmul: negative row or token count");
    if (w.data == nullptr || x == nullptr || y == nullptr)
        throw InvalidArgument("matmul: null weight, activation or output pointer");
    if (!cpu_path_supported(path, this_cpu()))
        throw InvalidArgument(std::string("matmul: this CPU does not support the ") + cpu_path_name(path) +
                              " kernel path");
}

}  // namespace

void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            CpuPath path, MatmulScratch& scratch, ActivationPrecision precision) {
    const WeightTypeTraits& t = weight_type(w.type);
    check_arguments(w, t, x, n_tokens, y, path);
    if (w.n_out == 0 || n_tokens == 0) return;

    MatmulJob job;
    job.dot = vec_dot_for(t, path);
    job.tile_fn = gemm_tile_for(t, path);
    job.weights = static_cast<const uint8_t*>(w.data);
    job.weight_row_bytes = row_bytes(t, w.n_in);
    job.n_in = w.n_in;
    job.n_out = w.n_out;
    job.n_tokens = n_tokens;
    job.x = x;
    job.y = y;

    if (t.vec_dot_type != GGMLType::F32 && precision == ActivationPrecision::Fp32) {
        const WeightTypeTraits& f32 = weight_type(GGMLType::F32);
        job.dot = vec_dot_for(f32, path);
        job.tile_fn = gemm_tile_for(f32, path);
        job.dequantize = t.dequantize_row;
        scratch.weight_rows.resize(size_t(pool.size()) * kRowTile * size_t(w.n_in));  // keeps its capacity
        job.dequantized = scratch.weight_rows.data();
    }
    if (t.vec_dot_type == GGMLType::F32 || job.dequantize != nullptr) {
        job.quantize_activation = nullptr;
        job.converted = nullptr;
        job.activations = reinterpret_cast<const uint8_t*>(x);
        job.activation_row_bytes = size_t(w.n_in) * sizeof(float);
    } else {
        const WeightTypeTraits& act = *find_weight_type(static_cast<uint32_t>(t.vec_dot_type));
        job.quantize_activation = activation_quantizer(t.vec_dot_type, path);  // SIMD where there is one
        job.activation_row_bytes = row_bytes(act, w.n_in);
        scratch.act.resize(size_t(n_tokens) * job.activation_row_bytes);  // keeps its capacity
        job.converted = scratch.act.data();
        job.activations = job.converted;
        if (n_tokens > 1 && pool.size() > 1 && n_tokens * w.n_in >= kParallelConversionValues)
            pool.parallel_for(n_tokens, [&job](int64_t begin, int64_t end) { job.convert_activations(begin, end); });
        else
            job.convert_activations(0, n_tokens);
    }

    job.plan_chunks(pool.size());
    pool.run([&job](int thread, int) { job.compute_chunks(thread); });
}

}  // namespace decollama
