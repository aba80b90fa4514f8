#include "common/cpu_features.h"

#include <sched.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>
#include <utility>

#include "common/error.h"

#if defined(DECOLLAMA_X86)
#include <cpuid.h>
#endif

namespace decollama {

const char* cpu_path_name(CpuPath p) {
    switch (p) {
        case CpuPath::Scalar: return "scalar";
        case CpuPath::AVX2: return "avx2";
        case CpuPath::AVX512: return "avx512";
    }
    return "?";
}

CpuPath cpu_path_from_name(const std::string& name) {
    if (name == "scalar") return CpuPath::Scalar;
    if (name == "avx2") return CpuPath::AVX2;
    if (name == "avx512") return CpuPath::AVX512;
    throw InvalidArgument("unknown CPU kernel path '" + name + "' (valid: scalar, avx2, avx512)");
}

std::vector<std::string> CpuFeatures::names() const {
    std::vector<std::string> out;
    const std::pair<bool, const char*> all[] = {
        {avx2, "avx2"}, {fma, "fma"}, {f16c, "f16c"}, {avx512f, "avx512f"}, {avx512bw, "avx512bw"},
        {avx512vl, "avx512vl"}, {avx512dq, "avx512dq"}, {avx512vnni, "avx512vnni"}};
    for (const auto& [has, n] : all)
        if (has) out.emplace_back(n);
    return out;
}

CpuFeatures detect_cpu_features() {
    CpuFeatures f;
#if defined(DECOLLAMA_X86) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    // F16C straight from cpuid leaf 1 (ECX bit 29): clang's __builtin_cpu_supports has no "f16c".
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) f.f16c = (ecx & bit_F16C) != 0;
    f.avx512f = __builtin_cpu_supports("avx512f");
    f.avx512bw = __builtin_cpu_supports("avx512bw");
    f.avx512vl = __builtin_cpu_supports("avx512vl");
    f.avx512dq = __builtin_cpu_supports("avx512dq");
    f.avx512vnni = __builtin_cpu_supports("avx512vnni");
#endif
    return f;
}

bool cpu_path_supported(CpuPath p, const CpuFeatures& f) {
    switch (p) {
        case CpuPath::Scalar: return true;
        case CpuPath::AVX2: return f.avx2 && f.fma && f.f16c;
        case CpuPath::AVX512:
            return cpu_path_supported(CpuPath::AVX2, f) && f.avx512f && f.avx512bw && f.avx512vl &&
                   f.avx512dq;
    }
    return false;
}

CpuPath best_cpu_path(const CpuFeatures& f) {
    if (cpu_path_supported(CpuPath::AVX512, f)) return CpuPath::AVX512;
    if (cpu_path_supported(CpuPath::AVX2, f)) return CpuPath::AVX2;
    return CpuPath::Scalar;
}

CpuPath default_cpu_path() {
    const CpuFeatures f = detect_cpu_features();
    const char* env = std::getenv("DECOLLAMA_CPU");
    if (env == nullptr || *env == '\0') return best_cpu_path(f);
    CpuPath p;
    try {
        p = cpu_path_from_name(env);
    } catch (const InvalidArgument& e) {
        throw InvalidArgument(std::string("DECOLLAMA_CPU=") + env + ": " + e.what());
    }
    if (!cpu_path_supported(p, f))
        throw InvalidArgument(std::string("DECOLLAMA_CPU=") + env +
                              ": this CPU does not support that kernel path");
    return p;
}

int physical_core_count() {
    // Distinct (physical id, core id) pairs in /proc/cpuinfo; SMT siblings share a core id.
    std::ifstream in("/proc/cpuinfo");
    std::set<std::pair<int, int>> cores;
    int phys = 0;
    std::string line;
    while (std::getline(in, line)) {
        auto value = [&]() { return std::atoi(line.c_str() + line.find(':') + 1); };
        if (line.rfind("physical id", 0) == 0) phys = value();
        else if (line.rfind("core id", 0) == 0) cores.insert({phys, value()});
    }
    unsigned n = std::thread::hardware_concurrency();
    if (!cores.empty()) n = unsigned(cores.size());
    // Never more than the CPUs this process may run on (containers, taskset).
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        const unsigned allowed = unsigned(CPU_COUNT(&set));
        if (allowed > 0 && allowed < n) n = allowed;
    }
    return n > 0 ? int(n) : 1;
}

}  // namespace decollama
