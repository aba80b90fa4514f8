// Which SIMD kernels this CPU can run, and which path to use (DECOLLAMA_CPU overrides).
#pragma once
#include <string>
#include <vector>

namespace decollama {

// Kernel families, in increasing order of capability. Every kernel table is indexed by this.
enum class CpuPath : int { Scalar = 0, AVX2 = 1, AVX512 = 2 };
constexpr int kNumCpuPaths = 3;

const char* cpu_path_name(CpuPath p);
// "scalar" | "avx2" | "avx512"; throws InvalidArgument for anything else.
CpuPath cpu_path_from_name(const std::string& name);

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false;
    std::vector<std::string> names() const;  // the features found, for system_info()
};

CpuFeatures detect_cpu_features();
// Best path this CPU supports.
CpuPath best_cpu_path(const CpuFeatures& f);
bool cpu_path_supported(CpuPath p, const CpuFeatures& f);
// The path to use: DECOLLAMA_CPU if set (InvalidArgument when unknown or not supported by this
// CPU), otherwise the best one.
CpuPath default_cpu_path();
// Physical cores (falls back to logical CPUs / 2 heuristics when topology is not readable).
int physical_core_count();

}  // namespace decollama
