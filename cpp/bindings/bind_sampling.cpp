// _core.Sampler: the sampling chain over a row of logits. The chain runs without the GIL.
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include "bindings/bindings.h"
#include "sampling/sampler.h"

namespace nb = nanobind;

namespace decollama::py {

namespace {

using Logits = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using History = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// The chain keeps scratch buffers and RNG state, and runs with the GIL released, so calls
// from several Python threads on one Sampler are serialised here.
struct PySampler {
    explicit PySampler(const SamplerParams& p) : sampler(p) {}
    Sampler sampler;
    std::mutex mutex;
};

std::pair<const int32_t*, int64_t> view(const std::optional<History>& h) {
    if (!h) return {nullptr, 0};
    return {h->data(), static_cast<int64_t>(h->shape(0))};
}

}  // namespace

void bind_sampling(nb::module_& m) {
    nb::class_<PySampler>(m, "Sampler",
        "Sampling chain in llama.cpp's default order: repetition/presence/frequency penalties over the "
        "last penalty_last_n tokens -> top-k -> top-p -> min-p -> temperature -> seeded draw.\n"
        "temperature <= 0 is greedy (arg-max after the penalties); top_k=0, top_p=1, min_p=0, "
        "repeat_penalty=1 turn those steps off; penalty_last_n=-1 uses the whole history.")
        .def("__init__",
             [](PySampler* self, float temperature, int32_t top_k, float top_p, float min_p,
                float repeat_penalty, float presence_penalty, float frequency_penalty,
                int32_t penalty_last_n, uint64_t seed) {
                 SamplerParams p;
                 p.temperature = temperature;
                 p.top_k = top_k;
                 p.top_p = top_p;
                 p.min_p = min_p;
                 p.repeat_penalty = repeat_penalty;
                 p.presence_penalty = presence_penalty;
                 p.frequency_penalty = frequency_penalty;
                 p.penalty_last_n = penalty_last_n;
                 p.seed = seed;
                 new (self) PySampler(p);
             },
             nb::arg("temperature") = 0.8f, nb::arg("top_k") = 40, nb::arg("top_p") = 0.95f,
             nb::arg("min_p") = 0.05f, nb::arg("repeat_penalty") = 1.0f,
             nb::arg("presence_penalty") = 0.0f, nb::arg("frequency_penalty") = 0.0f,
             nb::arg("penalty_last_n") = 64, nb::arg("seed") = 0)
        .def("sample",
             [](PySampler& s, Logits logits, std::optional<History> history) {
                 const auto [h, nh] = view(history);
                 nb::gil_scoped_release release;
                 std::lock_guard<std::mutex> lock(s.mutex);
                 return s.sampler.sample(logits.data(), static_cast<int64_t>(logits.shape(0)), h, nh);
             },
             nb::arg("logits"), nb::arg("history") = nb::none(),
             "Draws a token id from float32 logits [n_vocab]; history: int32 tokens so far (prompt "
             "included), oldest first.")
        .def("probs",
             [](PySampler& s, Logits logits, std::optional<History> history) {
                 const auto [h, nh] = view(history);
                 auto out = std::make_unique<std::vector<float>>();
                 {
                     nb::gil_scoped_release release;
                     std::lock_guard<std::mutex> lock(s.mutex);
                     *out = s.sampler.probs(logits.data(), static_cast<int64_t>(logits.shape(0)), h, nh);
                 }
                 float* data = out->data();
                 const size_t n = out->size();
                 nb::capsule owner(out.release(), [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
                 return nb::ndarray<nb::numpy, float, nb::ndim<1>>(data, {n}, owner);
             },
             nb::arg("logits"), nb::arg("history") = nb::none(),
             "The float32 distribution [n_vocab] sample() draws from (zeros where the chain cut; "
             "one-hot when greedy). Does not advance the RNG.")
        .def("reseed",
             [](PySampler& s, uint64_t seed) {
                 std::lock_guard<std::mutex> lock(s.mutex);
                 s.sampler.reseed(seed);
             },
             nb::arg("seed"), "Restarts the random stream from seed.")
        .def_prop_ro("temperature", [](PySampler& s) { return s.sampler.params().temperature; })
        .def_prop_ro("top_k", [](PySampler& s) { return s.sampler.params().top_k; })
        .def_prop_ro("top_p", [](PySampler& s) { return s.sampler.params().top_p; })
        .def_prop_ro("min_p", [](PySampler& s) { return s.sampler.params().min_p; })
        .def_prop_ro("repeat_penalty", [](PySampler& s) { return s.sampler.params().repeat_penalty; })
        .def_prop_ro("presence_penalty", [](PySampler& s) { return s.sampler.params().presence_penalty; })
        .def_prop_ro("frequency_penalty", [](PySampler& s) { return s.sampler.params().frequency_penalty; })
        .def_prop_ro("penalty_last_n", [](PySampler& s) { return s.sampler.params().penalty_last_n; })
        .def_prop_ro("seed", [](PySampler& s) { return s.sampler.params().seed; })
        .def("__repr__", [](PySampler& s) {
            const SamplerParams& p = s.sampler.params();
            std::ostringstream os;
            os << "Sampler(temperature=" << p.temperature << ", top_k=" << p.top_k << ", top_p=" << p.top_p
               << ", min_p=" << p.min_p << ", repeat_penalty=" << p.repeat_penalty
               << ", presence_penalty=" << p.presence_penalty << ", frequency_penalty=" << p.frequency_penalty
               << ", penalty_last_n=" << p.penalty_last_n << ", seed=" << p.seed << ")";
            return os.str();
        });
}

}  // namespace decollama::py
