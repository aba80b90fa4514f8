// decollama._core.Model: the model, its KV cache and evaluation (see cpp/model/model.h).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <limits>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "bindings/bindings.h"
#include "common/error.h"
#include "model/model.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace decollama::py {

namespace {

using FormatNames = std::variant<std::string, std::vector<std::string>>;

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
        const int64_t id = nb::cast<int64_t>(item);
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

}  // namespace

void bind_model(nb::module_& m) {
    nb::class_<Model>(m, "Model",
                      "A GGUF model and its KV cache. Tokens are evaluated at n_past and extend the cache.")
        .def(
            "__init__",
            [](Model* self, const std::string& path, int64_t n_ctx, int n_threads, int64_t n_batch,
               const FormatNames& kv_k, const FormatNames& kv_v, const std::string& cpu_path) {
                ModelOptions o;
                o.n_ctx = n_ctx;
                o.n_threads = n_threads;
                o.n_batch = n_batch;
                o.kv_k = format_names(kv_k);
                o.kv_v = format_names(kv_v);
                o.cpu_path = cpu_path;
                nb::gil_scoped_release no_gil;
                new (self) Model(path, o);
            },
            "path"_a, "n_ctx"_a = 4096, "n_threads"_a = 0, "n_batch"_a = 512, "kv_k"_a = "f16", "kv_v"_a = "f16",
            "cpu_path"_a = "",
            "n_threads 0: physical cores. kv_k / kv_v: a KV format name for every layer, or a list with one per "
            "layer. cpu_path '': the default kernel path (DECOLLAMA_CPU honoured).")
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
        .def_prop_ro("architecture", [](const Model& self) { return self.hparams().arch_name; })
        .def_prop_ro("n_vocab", [](const Model& self) { return self.hparams().n_vocab; })
        .def_prop_ro("n_embd", [](const Model& self) { return self.hparams().n_embd; })
        .def_prop_ro("n_layer", [](const Model& self) { return self.hparams().n_layer; })
        .def_prop_ro("n_head", [](const Model& self) { return self.hparams().n_head; })
        .def_prop_ro("n_head_kv", [](const Model& self) { return self.hparams().n_head_kv; })
        .def_prop_ro("head_dim", [](const Model& self) { return self.hparams().head_dim_k; });
}

}  // namespace decollama::py
