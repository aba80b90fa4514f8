// decollama._core.Model: the model, its KV cache and evaluation (see cpp/model/model.h); and,
// for tests, the KV formats' fused attention on a one-layer cache (kv_attention).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <limits>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "bindings/bindings.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/attention.h"
#include "model/model.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace decollama::py {

namespace {

using FormatNames = std::variant<std::string, std::vector<std::string>>;
using FloatMatrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

std::vector<std::string> format_names(const FormatNames& v) {
    if (const auto* one = std::get_if<std::string>(&v)) return {*one};
    return std::get<std::vector<std::string>>(v);
}

LogitsMode logits_mode(const std::string& s) {
    if (s == "last") return LogitsMode::Last;
    if (s == "all") return LogitsMode::All;
    if (s == "none") return LogitsMode::None;
    throw InvalidArgument("logits must be 'last', 'all' or 'none', got '" + s + "'");
}

// Token ids from a list / tuple / integer array; the model checks them against n_vocab.
std::vector<int32_t> token_ids(nb::handle tokens) {
    using Int32Array = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
    Int32Array array;
    if (nb::try_cast(tokens, array, false)) return {array.data(), array.data() + array.shape(0)};
    if (PyLong_Check(tokens.ptr()) || PyUnicode_Check(tokens.ptr()))
        throw nb::type_error("tokens must be a sequence of ints");
    std::vector<int32_t> ids;
    for (nb::handle item : nb::iter(tokens)) {
        int64_t id = 0;
        if (!nb::try_cast(item, id))
            throw nb::type_error(("token at index " + std::to_string(ids.size()) + " is not an int").c_str());
        if (id < std::numeric_limits<int32_t>::min() || id > std::numeric_limits<int32_t>::max())
            throw InvalidArgument("token id " + std::to_string(id) + " at index " + std::to_string(ids.size()) +
                                  " is out of range");
        ids.push_back(int32_t(id));
    }
    return ids;
}

template <class T>
nb::ndarray<nb::numpy, T> owned_array(std::unique_ptr<T[]> data, std::initializer_list<size_t> shape) {
    nb::capsule owner(data.get(), [](void* p) noexcept { delete[] static_cast<T*>(p); });
    return nb::ndarray<nb::numpy, T>(data.release(), shape, owner);
}

KVKind kv_kind(const std::string& s) {
    if (s == "k") return KVKind::K;
    if (s == "v") return KVKind::V;
    throw InvalidArgument("kind must be 'k' or 'v', got '" + s + "'");
}

CpuPath checked_path(const std::string& cpu_path) {
    if (cpu_path.empty()) return default_cpu_path();
    const CpuPath path = cpu_path_from_name(cpu_path);
    if (!cpu_path_supported(path, detect_cpu_features()))
        throw InvalidArgument("cpu_path '" + cpu_path + "' is not supported by this CPU");
    return path;
}

// Effective bits per element of n positions: everything that holds them (blocks with their
// scales and factors, sink rows, fp16 ring rows and their query energies) over n * head_dim *
// n_head_kv; at n = 0 the full-context allocation.
double effective_bits(const KVCache& c, int64_t layer, KVKind kind, int64_t n) {
    const int64_t hd = kind == KVKind::K ? c.head_dim_k() : c.head_dim_v();
    if (n == 0) n = c.n_ctx();
    return 8.0 * c.bytes_in_use(layer, kind, n) / double(n * hd * c.n_head_kv());
}

nb::dict kv_info(const Model& m) {
    const KVCache& c = m.kv_cache();
    const int64_t n = m.n_past();
    nb::list layers;
    double k_bits = 0.0, v_bits = 0.0, in_use = 0.0;
    std::vector<int64_t> codebook_c;
    for (int64_t il = 0; il < c.n_layer(); ++il) {
        nb::dict layer;
        layer["k"] = c.k_format(il).name;
        layer["v"] = c.v_format(il).name;
        layer["k_nominal_bits"] = kv_bits_per_element(c.k_format(il), c.head_dim_k());
        layer["v_nominal_bits"] = kv_bits_per_element(c.v_format(il), c.head_dim_v());
        const double kb = effective_bits(c, il, KVKind::K, n), vb = effective_bits(c, il, KVKind::V, n);
        layer["k_bits_per_element"] = kb;
        layer["v_bits_per_element"] = vb;
        layer["bytes_per_token"] = c.layer_bytes_per_token(il);
        k_bits += kb / double(c.n_layer());
        v_bits += vb / double(c.n_layer());
        for (KVKind kind : {KVKind::K, KVKind::V}) {
            in_use += c.bytes_in_use(il, kind, n);
            const int64_t cc = c.format(il, kind).codebook_c;
            if (cc > 0 && std::find(codebook_c.begin(), codebook_c.end(), cc) == codebook_c.end())
                codebook_c.push_back(cc);
        }
        layers.append(layer);
    }
    size_t codebook_bytes = 0;
    if (const KVCodebooks* books = m.kv_codebooks())
        for (int64_t cc : codebook_c) codebook_bytes += books->bytes(cc);
    nb::dict info;
    info["n_ctx"] = c.n_ctx();
    info["n_past"] = n;
    info["window"] = c.window();
    info["bytes_allocated"] = c.bytes_allocated();
    info["bytes_per_token"] = c.bytes_per_token();
    info["bytes_in_use"] = in_use;
    info["k_bits_per_element"] = k_bits;  // effective at n_past (n_ctx when empty), mean over layers
    info["v_bits_per_element"] = v_bits;
    const double elements = double(c.n_layer() * c.n_head_kv() * (c.head_dim_k() + c.head_dim_v()));
    info["bits_per_element"] = 8.0 * (n > 0 ? in_use / (double(n) * elements) : c.bytes_per_token() / elements);
    info["codebook_bytes"] = codebook_bytes;  // model-level constants, not per token
    info["codebook_file"] = m.kv_codebooks() ? nb::cast(m.kv_codebooks()->path()) : nb::none();
    info["layers"] = layers;
    return info;
}

nb::list kv_formats() {
    nb::list out;
    for (const std::string& name : kv_format_names()) {
        const KVFormat& f = kv_format(name);
        nb::dict d;
        d["name"] = name;
        d["dim_block"] = f.dim_block;
        d["tokens_per_block"] = f.tokens_per_block;
        d["n_sink"] = f.n_sink;
        d["wants_query_energy"] = f.wants_query_energy;
        d["codebook_c"] = f.codebook_c;
        d["bits_per_element_256"] = kv_bits_per_element(f, 256);
        out.append(d);
    }
    return out;
}

using FloatArray = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using OptFloatArray = std::optional<FloatArray>;

// Test hooks' stream constants from numpy: codebook [n_head_kv, G, 256, c], metric [n_head_kv, D].
struct HookConsts {
    std::vector<KVStreamConsts> consts;
    std::vector<float> storage;  // keeps the arrays' copies alive
};

void add_consts(const KVFormat& f, int64_t n_head_kv, int64_t hd, const OptFloatArray& book,
                const OptFloatArray& metric, const char* which, std::vector<float>& store,
                std::vector<std::pair<size_t, size_t>>& offsets) {
    if (f.codebook_c == 0) {
        for (int64_t h = 0; h < n_head_kv; ++h) offsets.push_back({SIZE_MAX, SIZE_MAX});
        return;
    }
    const size_t per_head = size_t(hd * 256);
    if (!book || book->size() != size_t(n_head_kv) * per_head)
        throw InvalidArgument(std::string(which) + "_codebook: expected n_head_kv * head_dim * 256 floats for " +
                              f.name);
    std::vector<float> m(size_t(n_head_kv * hd), 1.0f);
    if (metric) {
        if (metric->size() != m.size()) throw InvalidArgument(std::string(which) + "_metric: expected n_head_kv * head_dim floats");
        std::copy_n(metric->data(), m.size(), m.begin());
    }
    for (int64_t h = 0; h < n_head_kv; ++h) {
        const size_t at = store.size();
        store.insert(store.end(), book->data() + size_t(h) * per_head, book->data() + size_t(h + 1) * per_head);
        const size_t mat = store.size();
        store.insert(store.end(), m.begin() + h * hd, m.begin() + (h + 1) * hd);
        offsets.push_back({at, mat});
    }
}

// Stores k and v (n_kv rows, heads side by side) in a one-layer cache, append_batch rows at a
// time (0: all at once), then attends with the last n_q positions' queries q. q_cache: the
// queries of all n_kv positions, for key formats fitted to them. Returns the attention output
// and the cache as attention reads it, for a numpy reference.
// multi_query false: attention loops the formats' single-query kernels (kv_attention_single_query).
nb::tuple kv_attention_run(const FloatMatrix& q, const FloatMatrix& k, const FloatMatrix& v, int64_t n_head,
                           int64_t n_head_kv, const std::string& kv_k, const std::string& kv_v, int64_t window,
                           const std::string& cpu_path, int n_threads, int64_t append_batch, int64_t kv_window,
                           const OptFloatArray& q_cache, const OptFloatArray& k_codebook,
                           const OptFloatArray& k_metric, const OptFloatArray& v_codebook,
                           const OptFloatArray& v_metric, bool multi_query) {
    const int64_t n_q = int64_t(q.shape(0)), n_kv = int64_t(k.shape(0));
    if (n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv != 0 || q.shape(1) % size_t(n_head) != 0 ||
        k.shape(1) % size_t(n_head_kv) != 0 || v.shape(1) % size_t(n_head_kv) != 0)
        throw InvalidArgument("kv_attention: head counts do not divide the row widths");
    const int64_t hd_k = int64_t(k.shape(1)) / n_head_kv, hd_v = int64_t(v.shape(1)) / n_head_kv;
    if (int64_t(v.shape(0)) != n_kv || int64_t(q.shape(1)) != n_head * hd_k || n_q > n_kv || n_q == 0 ||
        n_threads < 0 || append_batch < 0)
        throw InvalidArgument("kv_attention: inconsistent shapes or arguments");
    const KVFormat& kf = kv_format(kv_k);
    const KVFormat& vf = kv_format(kv_v);
    if (q_cache && q_cache->size() != size_t(n_kv * n_head * hd_k))
        throw InvalidArgument("kv_attention: q_cache must hold n_kv query rows");
    if (kf.wants_query_energy && !q_cache) throw InvalidArgument("kv_attention: " + kv_k + " keys need q_cache");
    const CpuPath path = checked_path(cpu_path);
    std::vector<float> store;
    std::vector<std::pair<size_t, size_t>> offsets;
    add_consts(kf, n_head_kv, hd_k, k_codebook, k_metric, "k", store, offsets);
    add_consts(vf, n_head_kv, hd_v, v_codebook, v_metric, "v", store, offsets);
    KVCacheOptions options;
    options.window = kv_window;
    if (kf.codebook_c > 0 || vf.codebook_c > 0)
        for (const auto& [book, metric] : offsets)
            options.consts.push_back(book == SIZE_MAX ? KVStreamConsts{}
                                                      : KVStreamConsts{store.data() + book, store.data() + metric});
    KVCache cache(n_kv, n_head_kv, hd_k, hd_v, {{&kf, &vf}}, options);
    std::unique_ptr<float[]> out(new float[size_t(n_q * n_head * hd_v)]);
    std::unique_ptr<float[]> k_read(new float[size_t(n_kv * n_head_kv * hd_k)]);
    std::unique_ptr<float[]> v_read(new float[size_t(n_kv * n_head_kv * hd_v)]);
    {
        nb::gil_scoped_release no_gil;
        ThreadPool pool(n_threads);
        const int64_t batch = append_batch > 0 ? append_batch : n_kv;
        for (int64_t t = 0; t < n_kv; t += batch) {
            const int64_t n = std::min(batch, n_kv - t);
            cache.store(0, t, n, k.data() + t * n_head_kv * hd_k, v.data() + t * n_head_kv * hd_v,
                        q_cache ? q_cache->data() + t * n_head * hd_k : nullptr, n_head, pool);
        }
        Attention attention(cache, pool.size(), n_q, n_head);
        attention.set_multi_query(multi_query);
        attention.run(q.data(), n_q, n_kv - n_q, 0, window, out.get(), pool, path);

        std::vector<float> rows(size_t(n_kv * std::max(hd_k, hd_v)));
        for (int64_t h = 0; h < n_head_kv; ++h) {
            cache.read(0, KVKind::K, h, 0, n_kv, rows.data());
            for (int64_t t = 0; t < n_kv; ++t)
                std::copy_n(rows.data() + t * hd_k, hd_k, k_read.get() + (t * n_head_kv + h) * hd_k);
            cache.read(0, KVKind::V, h, 0, n_kv, rows.data());
            for (int64_t t = 0; t < n_kv; ++t)
                std::copy_n(rows.data() + t * hd_v, hd_v, v_read.get() + (t * n_head_kv + h) * hd_v);
        }
    }
    return nb::make_tuple(owned_array(std::move(out), {size_t(n_q), size_t(n_head * hd_v)}),
                          owned_array(std::move(k_read), {size_t(n_kv), size_t(n_head_kv * hd_k)}),
                          owned_array(std::move(v_read), {size_t(n_kv), size_t(n_head_kv * hd_v)}));
}

nb::tuple kv_attention(const FloatMatrix& q, const FloatMatrix& k, const FloatMatrix& v, int64_t n_head,
                       int64_t n_head_kv, const std::string& kv_k, const std::string& kv_v, int64_t window,
                       const std::string& cpu_path, int n_threads, int64_t append_batch, int64_t kv_window,
                       const OptFloatArray& q_cache, const OptFloatArray& k_codebook, const OptFloatArray& k_metric,
                       const OptFloatArray& v_codebook, const OptFloatArray& v_metric) {
    return kv_attention_run(q, k, v, n_head, n_head_kv, kv_k, kv_v, window, cpu_path, n_threads, append_batch,
                            kv_window, q_cache, k_codebook, k_metric, v_codebook, v_metric, true);
}

nb::tuple kv_attention_single_query(const FloatMatrix& q, const FloatMatrix& k, const FloatMatrix& v, int64_t n_head,
                                    int64_t n_head_kv, const std::string& kv_k, const std::string& kv_v,
                                    int64_t window, const std::string& cpu_path, int n_threads, int64_t append_batch,
                                    int64_t kv_window, const OptFloatArray& q_cache, const OptFloatArray& k_codebook,
                                    const OptFloatArray& k_metric, const OptFloatArray& v_codebook,
                                    const OptFloatArray& v_metric) {
    return kv_attention_run(q, k, v, n_head, n_head_kv, kv_k, kv_v, window, cpu_path, n_threads, append_batch,
                            kv_window, q_cache, k_codebook, k_metric, v_codebook, v_metric, false);
}

// One format's kernels on a raw stream, for bit-exact tests against the numpy reference.
KVStreamConsts codec_consts(const KVFormat& f, int64_t hd, const OptFloatArray& book, const OptFloatArray& metric,
                            std::vector<float>& store) {
    std::vector<std::pair<size_t, size_t>> offsets;
    add_consts(f, 1, hd, book, metric, "stream", store, offsets);
    if (f.codebook_c == 0) return {};
    return {store.data() + offsets[0].first, store.data() + offsets[0].second};
}

// Encodes rows [n, D] as tokens [t0, t0 + n) of a fresh stream; returns the stream bytes
// (whole blocks up to t0 + n).
nb::bytes kv_codec_append(const std::string& name, const FloatMatrix& rows, int64_t t0, const OptFloatArray& energy,
                          const OptFloatArray& codebook, const OptFloatArray& metric) {
    const KVFormat& f = kv_format(name);
    const int64_t n = int64_t(rows.shape(0)), hd = int64_t(rows.shape(1));
    if (hd % f.dim_block != 0 || t0 % f.tokens_per_block != 0 || n % f.tokens_per_block != 0 || t0 < 0)
        throw InvalidArgument("kv_codec_append: head_dim, t0 or row count does not fit the format's blocks");
    if (energy && energy->size() != size_t(n * hd)) throw InvalidArgument("kv_codec_append: energy must match rows");
    std::vector<float> store;
    const KVStreamConsts c = codec_consts(f, hd, codebook, metric, store);
    std::string raw(kv_stream_bytes(f, hd, t0 + n), '\0');
    f.append(rows.data(), hd, n, reinterpret_cast<uint8_t*>(raw.data()), hd, t0, energy ? energy->data() : nullptr, c);
    return nb::bytes(raw.data(), raw.size());
}

nb::ndarray<nb::numpy, float> kv_codec_read(const std::string& name, nb::bytes raw, int64_t head_dim, int64_t t,
                                             int64_t n, const OptFloatArray& codebook, const OptFloatArray& metric) {
    const KVFormat& f = kv_format(name);
    if (kv_stream_bytes(f, head_dim, t + n) > raw.size()) throw InvalidArgument("kv_codec_read: stream too short");
    std::vector<float> store;
    const KVStreamConsts c = codec_consts(f, head_dim, codebook, metric, store);
    std::unique_ptr<float[]> out(new float[size_t(n * head_dim)]);
    f.read(reinterpret_cast<const uint8_t*>(raw.c_str()), head_dim, t, n, out.get(), c);
    return owned_array(std::move(out), {size_t(n), size_t(head_dim)});
}

// scores (q [D]) or accumulate (p [n]) over tokens [t, t + n) of a raw stream on one path.
nb::ndarray<nb::numpy, float> kv_codec_attend(const std::string& name, const std::string& op, nb::bytes raw,
                                               const FloatArray& x, int64_t head_dim, int64_t t, int64_t n,
                                               const std::string& cpu_path, const OptFloatArray& codebook,
                                               const OptFloatArray& metric) {
    const KVFormat& f = kv_format(name);
    const CpuPath path = checked_path(cpu_path);
    if (kv_stream_bytes(f, head_dim, t + n) > raw.size() || n > kKVTileTokens || t / kKVTileTokens != (t + n - 1) / kKVTileTokens)
        throw InvalidArgument("kv_codec_attend: range outside the stream or across a tile");
    std::vector<float> store;
    const KVStreamConsts c = codec_consts(f, head_dim, codebook, metric, store);
    const uint8_t* stream = reinterpret_cast<const uint8_t*>(raw.c_str());
    if (op == "scores") {
        if (x.size() != size_t(head_dim)) throw InvalidArgument("kv_codec_attend: q must hold head_dim values");
        std::vector<uint8_t> prepared(kv_query_bytes(f, head_dim) + 64);
        const void* query = x.data();
        if (f.prepare_query) {
            f.prepare_query(x.data(), head_dim, path, prepared.data(), c);
            query = prepared.data();
        }
        std::unique_ptr<float[]> s(new float[size_t(n)]);
        kv_scores_for(f, path)(query, stream, head_dim, t, n, s.get(), c);
        return owned_array(std::move(s), {size_t(n)});
    }
    if (op == "accumulate") {
        if (x.size() != size_t(n)) throw InvalidArgument("kv_codec_attend: p must hold n values");
        std::unique_ptr<float[]> out(new float[size_t(head_dim)]());
        kv_accumulate_for(f, path)(x.data(), stream, head_dim, t, n, out.get(), c);
        return owned_array(std::move(out), {size_t(head_dim)});
    }
    throw InvalidArgument("kv_codec_attend: op must be 'scores' or 'accumulate'");
}

// The multi-query kernels: scores (x = queries [n_q, D]) or accumulate (x = probabilities
// [n_q, n]) over tokens [t, t + n) of a raw stream on one path, as attention calls them: the
// format's multi kernel for the path, or the single-query kernel per head where it has none.
// Returns (result [n_q, n] or [n_q, D], whether a multi kernel ran).
nb::tuple kv_codec_attend_multi(const std::string& name, const std::string& op, nb::bytes raw, const FloatMatrix& x,
                                int64_t head_dim, int64_t t, int64_t n, const std::string& cpu_path,
                                const OptFloatArray& codebook, const OptFloatArray& metric) {
    const KVFormat& f = kv_format(name);
    const CpuPath path = checked_path(cpu_path);
    if (kv_stream_bytes(f, head_dim, t + n) > raw.size() || n < 1 || n > kKVTileTokens ||
        t / kKVTileTokens != (t + n - 1) / kKVTileTokens)
        throw InvalidArgument("kv_codec_attend_multi: range outside the stream or across a tile");
    std::vector<float> store;
    const KVStreamConsts c = codec_consts(f, head_dim, codebook, metric, store);
    const uint8_t* stream = reinterpret_cast<const uint8_t*>(raw.c_str());
    const int64_t n_q = int64_t(x.shape(0));
    if (op == "scores") {
        if (int64_t(x.shape(1)) != head_dim) throw InvalidArgument("kv_codec_attend_multi: q must be [n_q, head_dim]");
        // As attention lays them out: prepared queries on 64-byte strides, else the fp32 rows.
        const size_t qb = (kv_query_bytes(f, head_dim) + 63) / 64 * 64;
        std::vector<uint8_t> prepared(size_t(n_q) * qb + 64);
        uint8_t* base = prepared.data() + (64 - reinterpret_cast<uintptr_t>(prepared.data()) % 64) % 64;
        const void* query = x.data();
        size_t stride = size_t(head_dim) * sizeof(float);
        if (f.prepare_query) {
            for (int64_t h = 0; h < n_q; ++h) f.prepare_query(x.data() + h * head_dim, head_dim, path, base + h * qb, c);
            query = base;
            stride = qb;
        }
        std::unique_ptr<float[]> s(new float[size_t(n_q * n)]);
        const KVScoresMultiFn multi = kv_scores_multi_for(f, path);
        if (multi) {
            multi(query, stride, n_q, stream, head_dim, t, n, s.get(), n, c);
        } else {
            for (int64_t h = 0; h < n_q; ++h)
                kv_scores_for(f, path)(static_cast<const uint8_t*>(query) + h * stride, stream, head_dim, t, n,
                                       s.get() + h * n, c);
        }
        return nb::make_tuple(owned_array(std::move(s), {size_t(n_q), size_t(n)}), multi != nullptr);
    }
    if (op == "accumulate") {
        if (int64_t(x.shape(1)) != n) throw InvalidArgument("kv_codec_attend_multi: p must be [n_q, n]");
        std::unique_ptr<float[]> out(new float[size_t(n_q * head_dim)]());
        const KVAccumulateMultiFn multi = kv_accumulate_multi_for(f, path);
        if (multi) {
            multi(x.data(), n, n_q, stream, head_dim, t, n, out.get(), head_dim, c);
        } else {
            for (int64_t h = 0; h < n_q; ++h)
                kv_accumulate_for(f, path)(x.data() + h * n, stream, head_dim, t, n, out.get() + h * head_dim, c);
        }
        return nb::make_tuple(owned_array(std::move(out), {size_t(n_q), size_t(head_dim)}), multi != nullptr);
    }
    throw InvalidArgument("kv_codec_attend_multi: op must be 'scores' or 'accumulate'");
}

nb::object offload_info(const Model& self) {
    if (!self.offload()) return nb::none();
    const OffloadInfo i = self.offload()->info();
    nb::dict d;
    d["device"] = i.device;
    d["first_layer"] = i.first_layer;
    d["n_layers"] = i.n_layers;
    d["output"] = i.output;
    d["weight_bytes"] = i.weight_bytes;
    d["kv_bytes"] = i.kv_bytes;
    d["scratch_bytes"] = i.scratch_bytes;
    return d;
}

}  // namespace

void bind_model(nb::module_& m) {
    nb::class_<Model>(m, "Model",
                      "A GGUF model and its KV cache. Tokens are evaluated at n_past and extend the cache.")
        .def(
            "__init__",
            [](Model* self, const std::string& path, int64_t n_ctx, int n_threads, int64_t n_batch,
               const FormatNames& kv_k, const FormatNames& kv_v, const std::string& cpu_path,
               bool precise_activations, int64_t kv_window, const std::string& kv_codebook,
               bool track_query_energy, int n_gpu_layers, const std::string& offload_backend) {
                ModelOptions o;
                o.n_ctx = n_ctx;
                o.n_threads = n_threads;
                o.n_batch = n_batch;
                o.kv_k = format_names(kv_k);
                o.kv_v = format_names(kv_v);
                o.cpu_path = cpu_path;
                o.precise_activations = precise_activations;
                o.kv_window = kv_window;
                o.kv_codebook = kv_codebook;
                o.track_query_energy = track_query_energy;
                o.n_gpu_layers = n_gpu_layers;
                if (offload_backend == "cuda")
                    o.offload_backend = OffloadBackend::Cuda;
                else if (offload_backend == "host-twin")
                    o.offload_backend = OffloadBackend::HostTwin;
                else
                    throw InvalidArgument("offload_backend must be 'cuda' or 'host-twin', got '" + offload_backend + "'");
                nb::gil_scoped_release no_gil;
                new (self) Model(path, o);
            },
            "path"_a, "n_ctx"_a = 4096, "n_threads"_a = 0, "n_batch"_a = 512, "kv_k"_a = "f16", "kv_v"_a = "f16",
            "cpu_path"_a = "", "precise_activations"_a = false, "kv_window"_a = 0, "kv_codebook"_a = "",
            "track_query_energy"_a = false, "n_gpu_layers"_a = 0, "offload_backend"_a = "cuda",
            "n_threads 0: physical cores. kv_k / kv_v: a KV format name for every layer, or a list with one per "
            "layer. cpu_path '': the default kernel path (DECOLLAMA_CPU honoured). precise_activations: quantized "
            "weights are dequantized a few rows at a time and dotted with the fp32 activations instead of "
            "quantizing the activations to q8_* (slower; close to a dequantize-then-fp32 reference). kv_window: newest "
            "positions kept in fp16. kv_codebook: CQ codebook GGUF. track_query_energy: sum q^2 per layer, KV head "
            "and channel (query_energy(), calibration). n_gpu_layers: llama.cpp's -ngl, the last min(N, n_layer) "
            "layers' weights and KV cache on the GPU; N > n_layer or -1 also the output head. offload_backend "
            "'host-twin': the same offload program on host memory with the CPU kernels (tests without a GPU).")
        .def(
            "eval",
            [](Model& self, nb::handle tokens, const std::string& logits) {
                const std::vector<int32_t> ids = token_ids(tokens);
                const LogitsMode mode = logits_mode(logits);
                const int64_t n = int64_t(ids.size()), n_vocab = self.hparams().n_vocab;
                const int64_t rows = Model::logits_rows(mode, n);
                std::unique_ptr<float[]> out(new float[size_t(rows * n_vocab)]);
                {
                    nb::gil_scoped_release no_gil;
                    self.eval(ids.data(), n, mode, out.get());
                }
                return owned_array(std::move(out), {size_t(rows), size_t(n_vocab)});
            },
            "tokens"_a, "logits"_a = "last",
            "Evaluates tokens (list or int array) at n_past. logits: 'last' -> [1, n_vocab], 'all' -> "
            "[n, n_vocab], 'none' -> [0, n_vocab] float32.")
        .def(
            "nll",
            [](Model& self, nb::handle tokens, int64_t first) {
                const std::vector<int32_t> ids = token_ids(tokens);
                const int64_t n = int64_t(ids.size());
                const int64_t count = std::max<int64_t>(0, n - 1 - first);
                std::unique_ptr<double[]> out(new double[size_t(count)]);
                {
                    nb::gil_scoped_release no_gil;
                    self.nll(ids.data(), n, first, out.get());
                }
                return owned_array(std::move(out), {size_t(count)});
            },
            "tokens"_a, "first"_a,
            "Evaluates tokens at n_past and returns float64 [-log p(tokens[i+1] | tokens[..i]) for i in "
            "[first, len - 1)].")
        .def("reset", &Model::reset, "Empties the KV cache (n_past = 0).")
        .def("truncate", &Model::truncate, "n"_a,
             "Drops cache positions >= n, to reuse a prompt prefix; returns n_past, which is below n when a block "
             "KV format must re-evaluate the start of its block.")
        .def(
            "read_kv",
            [](Model& self, int64_t layer, const std::string& kind, int64_t head, int64_t t, int64_t n) {
                const int64_t hd = kind == "k" ? self.hparams().head_dim_k : self.hparams().head_dim_v;
                const KVKind kk = kv_kind(kind);
                std::unique_ptr<float[]> out(new float[size_t(std::max<int64_t>(n, 0) * hd)]);
                self.read_kv(layer, kk, head, t, n, out.get());
                return owned_array(std::move(out), {size_t(n), size_t(hd)});
            },
            "layer"_a, "kind"_a, "head"_a, "t"_a, "n"_a,
            "Positions [t, t + n) of one K ('k') or V ('v') stream as attention reads them, float32 [n, head_dim].")
        .def(
            "query_energy",
            [](const Model& self, int64_t layer, int64_t head) {
                const KVCache& c = self.kv_cache();
                if (!c.wants_queries(layer) || layer < 0 || layer >= c.n_layer() || head < 0 || head >= c.n_head_kv())
                    throw InvalidArgument("query_energy: needs track_query_energy=True and a valid layer/head");
                std::unique_ptr<double[]> out(new double[size_t(c.head_dim_k())]);
                std::copy_n(c.query_energy(layer, head), c.head_dim_k(), out.get());
                return owned_array(std::move(out), {size_t(c.head_dim_k())});
            },
            "layer"_a, "head"_a, "Sum of q^2 per channel over stored positions and the KV head's query heads.")
        .def("kv_info", &kv_info,
             "KV cache layout: n_ctx, bytes_allocated, bytes_per_token, mean k/v bits_per_element and per-layer "
             "formats.")
        .def_prop_ro("n_gpu_layers",
                     [](const Model& self) -> int64_t { return self.offload() ? self.offload()->info().n_layers : 0; })
        .def_prop_ro("offload_info", &offload_info,
                     "None without offloaded layers; else dict: device, first_layer, n_layers, output (the output "
                     "head offloaded), weight_bytes, kv_bytes, scratch_bytes.")
        .def_prop_ro("n_past", &Model::n_past)
        .def_prop_ro("n_ctx", &Model::n_ctx)
        .def_prop_ro("n_batch", &Model::n_batch)
        .def_prop_ro("n_threads", &Model::n_threads)
        .def_prop_ro("cpu_path", [](const Model& self) { return std::string(cpu_path_name(self.cpu_path())); })
        .def_prop_ro("precise_activations", &Model::precise_activations)
        .def_prop_ro("architecture", [](const Model& self) { return self.hparams().arch_name; })
        .def_prop_ro("n_vocab", [](const Model& self) { return self.hparams().n_vocab; })
        .def_prop_ro("n_embd", [](const Model& self) { return self.hparams().n_embd; })
        .def_prop_ro("n_layer", [](const Model& self) { return self.hparams().n_layer; })
        .def_prop_ro("n_head", [](const Model& self) { return self.hparams().n_head; })
        .def_prop_ro("n_head_kv", [](const Model& self) { return self.hparams().n_head_kv; })
        .def_prop_ro("head_dim", [](const Model& self) { return self.hparams().head_dim_k; });

    m.def("kv_formats", &kv_formats, "The KV cache formats: name, dim_block, tokens_per_block.");
    m.def("kv_attention", &kv_attention, "q"_a, "k"_a, "v"_a, "n_head"_a, "n_head_kv"_a, "kv_k"_a = "f16",
          "kv_v"_a = "f16", "window"_a = 0, "cpu_path"_a = "", "n_threads"_a = 1, "append_batch"_a = 0,
          "kv_window"_a = 0, "q_cache"_a = nb::none(), "k_codebook"_a = nb::none(), "k_metric"_a = nb::none(),
          "v_codebook"_a = nb::none(), "v_metric"_a = nb::none(),
          "Test hook: the fused attention of the KV formats on a one-layer cache holding k and v; the queries "
          "are the last len(q) positions. Returns (out, k as read, v as read).");
    m.def("kv_attention_single_query", &kv_attention_single_query, "q"_a, "k"_a, "v"_a, "n_head"_a, "n_head_kv"_a,
          "kv_k"_a = "f16", "kv_v"_a = "f16", "window"_a = 0, "cpu_path"_a = "", "n_threads"_a = 1,
          "append_batch"_a = 0, "kv_window"_a = 0, "q_cache"_a = nb::none(), "k_codebook"_a = nb::none(),
          "k_metric"_a = nb::none(), "v_codebook"_a = nb::none(), "v_metric"_a = nb::none(),
          "Test hook: kv_attention with the formats' single-query kernels looped over the query heads (no "
          "multi-query kernels).");
    m.def("kv_codec_append", &kv_codec_append, "format"_a, "rows"_a, "t0"_a = 0, "energy"_a = nb::none(),
          "codebook"_a = nb::none(), "metric"_a = nb::none(),
          "Test hook: one format's append of rows as tokens [t0, t0 + n) of a fresh stream; the stream bytes.");
    m.def("kv_codec_read", &kv_codec_read, "format"_a, "raw"_a, "head_dim"_a, "t"_a, "n"_a,
          "codebook"_a = nb::none(), "metric"_a = nb::none(), "Test hook: one format's read of a raw stream.");
    m.def("kv_codec_attend", &kv_codec_attend, "format"_a, "op"_a, "raw"_a, "x"_a, "head_dim"_a, "t"_a, "n"_a,
          "cpu_path"_a = "", "codebook"_a = nb::none(), "metric"_a = nb::none(),
          "Test hook: one format's scores (x = q) or accumulate (x = p) kernel on a raw stream, on one path.");
    m.def("kv_codec_attend_multi", &kv_codec_attend_multi, "format"_a, "op"_a, "raw"_a, "x"_a, "head_dim"_a, "t"_a,
          "n"_a, "cpu_path"_a = "", "codebook"_a = nb::none(), "metric"_a = nb::none(),
          "Test hook: one format's multi-query scores (x = q [n_q, D]) or accumulate (x = p [n_q, n]) on a raw "
          "stream, on one path, as attention calls them (the single-query kernel per head where the format has "
          "no multi kernel for the path). Returns (result, whether a multi-query kernel ran).");
}

}  // namespace decollama::py
