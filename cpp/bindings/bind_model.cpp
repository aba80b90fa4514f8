// decollama._core.Model: the model, its KV cache and evaluation (see cpp/model/model.h); and,
// for tests, the KV formats' fused attention on a one-layer cache (kv_attention).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
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

nb::dict kv_info(const Model& m) {
    const KVCache& c = m.kv_cache();
    const HParams& hp = m.hparams();
    nb::list layers;
    double k_bits = 0.0, v_bits = 0.0;
    for (int64_t il = 0; il < c.n_layer(); ++il) {
        nb::dict layer;
        layer["k"] = c.k_format(il).name;
        layer["v"] = c.v_format(il).name;
        layer["k_bits_per_element"] = kv_bits_per_element(c.k_format(il), hp.head_dim_k);
        layer["v_bits_per_element"] = kv_bits_per_element(c.v_format(il), hp.head_dim_v);
        layer["bytes_per_token"] = c.layer_bytes_per_token(il);
        k_bits += kv_bits_per_element(c.k_format(il), hp.head_dim_k) / double(c.n_layer());
        v_bits += kv_bits_per_element(c.v_format(il), hp.head_dim_v) / double(c.n_layer());
        layers.append(layer);
    }
    nb::dict info;
    info["n_ctx"] = c.n_ctx();
    info["bytes_allocated"] = c.bytes_allocated();
    info["bytes_per_token"] = c.bytes_per_token();
    info["k_bits_per_element"] = k_bits;  // mean over layers
    info["v_bits_per_element"] = v_bits;
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
        out.append(d);
    }
    return out;
}

// Stores k and v (n_kv rows, heads side by side) in a one-layer cache, append_batch rows at a
// time (0: all at once), then attends with the last n_q positions' queries q. Returns the
// attention output and the cache as the formats decode it, for a numpy reference.
nb::tuple kv_attention(const FloatMatrix& q, const FloatMatrix& k, const FloatMatrix& v, int64_t n_head,
                       int64_t n_head_kv, const std::string& kv_k, const std::string& kv_v, int64_t window,
                       const std::string& cpu_path, int n_threads, int64_t append_batch) {
    const int64_t n_q = int64_t(q.shape(0)), n_kv = int64_t(k.shape(0));
    if (n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv != 0 || q.shape(1) % size_t(n_head) != 0 ||
        k.shape(1) % size_t(n_head_kv) != 0 || v.shape(1) % size_t(n_head_kv) != 0)
        throw InvalidArgument("kv_attention: head counts do not divide the row widths");
    const int64_t hd_k = int64_t(k.shape(1)) / n_head_kv, hd_v = int64_t(v.shape(1)) / n_head_kv;
    if (int64_t(v.shape(0)) != n_kv || int64_t(q.shape(1)) != n_head * hd_k || n_q > n_kv || n_q == 0 ||
        n_threads < 0 || append_batch < 0)
        throw InvalidArgument("kv_attention: inconsistent shapes or arguments");
    CpuPath path = default_cpu_path();
    if (!cpu_path.empty()) {
        path = cpu_path_from_name(cpu_path);
        if (!cpu_path_supported(path, detect_cpu_features()))
            throw InvalidArgument("cpu_path '" + cpu_path + "' is not supported by this CPU");
    }
    KVCache cache(n_kv, n_head_kv, hd_k, hd_v, {{&kv_format(kv_k), &kv_format(kv_v)}});
    std::unique_ptr<float[]> out(new float[size_t(n_q * n_head * hd_v)]);
    std::unique_ptr<float[]> k_read(new float[size_t(n_kv * n_head_kv * hd_k)]);
    std::unique_ptr<float[]> v_read(new float[size_t(n_kv * n_head_kv * hd_v)]);
    {
        nb::gil_scoped_release no_gil;
        ThreadPool pool(n_threads);
        const int64_t batch = append_batch > 0 ? append_batch : n_kv;
        for (int64_t t = 0; t < n_kv; t += batch) {
            const int64_t n = std::min(batch, n_kv - t);
            cache.store(0, t, n, k.data() + t * n_head_kv * hd_k, v.data() + t * n_head_kv * hd_v, pool);
        }
        Attention attention(cache, pool.size(), n_q, n_head);
        attention.run(q.data(), n_q, n_kv - n_q, 0, window, out.get(), pool, path);

        std::vector<float> rows(size_t(n_kv * std::max(hd_k, hd_v)));
        for (int64_t h = 0; h < n_head_kv; ++h) {
            cache.k_format(0).read(cache.k_stream(0, h), hd_k, 0, n_kv, rows.data());
            for (int64_t t = 0; t < n_kv; ++t)
                std::copy_n(rows.data() + t * hd_k, hd_k, k_read.get() + (t * n_head_kv + h) * hd_k);
            cache.v_format(0).read(cache.v_stream(0, h), hd_v, 0, n_kv, rows.data());
            for (int64_t t = 0; t < n_kv; ++t)
                std::copy_n(rows.data() + t * hd_v, hd_v, v_read.get() + (t * n_head_kv + h) * hd_v);
        }
    }
    return nb::make_tuple(owned_array(std::move(out), {size_t(n_q), size_t(n_head * hd_v)}),
                          owned_array(std::move(k_read), {size_t(n_kv), size_t(n_head_kv * hd_k)}),
                          owned_array(std::move(v_read), {size_t(n_kv), size_t(n_head_kv * hd_v)}));
}

}  // namespace

void bind_model(nb::module_& m) {
    nb::class_<Model>(m, "Model",
                      "A GGUF model and its KV cache. Tokens are evaluated at n_past and extend the cache.")
        .def(
            "__init__",
            [](Model* self, const std::string& path, int64_t n_ctx, int n_threads, int64_t n_batch,
               const FormatNames& kv_k, const FormatNames& kv_v, const std::string& cpu_path,
               bool precise_activations) {
                ModelOptions o;
                o.n_ctx = n_ctx;
                o.n_threads = n_threads;
                o.n_batch = n_batch;
                o.kv_k = format_names(kv_k);
                o.kv_v = format_names(kv_v);
                o.cpu_path = cpu_path;
                o.precise_activations = precise_activations;
                nb::gil_scoped_release no_gil;
                new (self) Model(path, o);
            },
            "path"_a, "n_ctx"_a = 4096, "n_threads"_a = 0, "n_batch"_a = 512, "kv_k"_a = "f16", "kv_v"_a = "f16",
            "cpu_path"_a = "", "precise_activations"_a = false,
            "n_threads 0: physical cores. kv_k / kv_v: a KV format name for every layer, or a list with one per "
            "layer. cpu_path '': the default kernel path (DECOLLAMA_CPU honoured). precise_activations: quantized "
            "weights are dequantized a few rows at a time and dotted with the fp32 activations instead of "
            "quantizing the activations to q8_* (slower; close to a dequantize-then-fp32 reference).")
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
        .def("truncate", &Model::truncate, "n"_a, "Drops cache positions >= n, to reuse a prompt prefix.")
        .def("kv_info", &kv_info,
             "KV cache layout: n_ctx, bytes_allocated, bytes_per_token, mean k/v bits_per_element and per-layer "
             "formats.")
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
          "Test hook: the fused attention of the KV formats on a one-layer cache holding k and v; the queries "
          "are the last len(q) positions. Returns (out, k as stored, v as stored).");
}

}  // namespace decollama::py
