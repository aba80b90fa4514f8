#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings/bindings.h"
#include "common/system_info.h"

namespace nb = nanobind;

namespace decollama::py {

void bind_system(nb::module_& m) {
    // A constant, so that importing decollama neither reads DECOLLAMA_CPU nor initialises CUDA.
    m.attr("__version__") = DECOLLAMA_VERSION;
    m.def("system_info", [] {
        const SystemInfo s = system_info();
        nb::dict d;
        d["version"] = s.version;
        d["compiler"] = s.compiler;
        d["cpu_features"] = s.cpu_features;
        d["cpu_path"] = s.cpu_path;
        d["best_cpu_path"] = s.best_cpu_path;
        d["physical_cores"] = s.physical_cores;
        d["cuda_compiled"] = s.cuda_compiled;
        nb::list gpus;
        for (const auto& g : s.gpus) {
            nb::dict gd;
            gd["name"] = g.name;
            gd["compute_capability"] = std::to_string(g.compute_major) + "." + std::to_string(g.compute_minor);
            gd["total_memory"] = g.total_memory;
            gpus.append(gd);
        }
        d["gpus"] = gpus;
        d["gpu_unavailable_reason"] = s.gpu_unavailable_reason;
        return d;
    }, "Build and machine facts: version, compiler, CPU features, kernel path, CUDA, GPUs.");
}

}  // namespace decollama::py
