// Code shared by CUDA kernels and their host-side tests: DL_HD functions compile as
// __host__ __device__ under nvcc and as plain inline C++ under g++, so the block math a kernel
// runs is the same source the CPU-only test suite checks against the CPU formats.
// Bit-exactness with the CPU encoders needs no fused multiply-adds: the CUDA files that encode
// are compiled with --fmad=false (CMakeLists.txt), the C++ ones with -ffp-contract=off.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DL_HD __host__ __device__ __forceinline__
#else
#define DL_HD inline
#endif

namespace decollama::gpu {

DL_HD float bits_to_float(uint32_t w) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(w);
#else
    float f;
    std::memcpy(&f, &w, 4);
    return f;
#endif
}

DL_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t w;
    std::memcpy(&w, &f, 4);
    return w;
#endif
}

// IEEE half -> float, exact for every value (same bits as common/fp16.h).
DL_HD float half_to_float(uint16_t h) {
    const uint32_t w = uint32_t(h) << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const float normalized = bits_to_float((two_w >> 4) + (0xE0u << 23)) * bits_to_float(0x7800000u);
    const float denormalized = bits_to_float((two_w >> 17) | (126u << 23)) - 0.5f;
    return bits_to_float(sign | (two_w < (1u << 27) ? float_to_bits(denormalized) : float_to_bits(normalized)));
}

// float -> IEEE half, round to nearest even (same bits as common/fp16.h).
DL_HD uint16_t float_to_half(float f) {
    float base = (f < 0 ? -f : f) * bits_to_float(0x77800000u) * bits_to_float(0x08800000u);
    const uint32_t w = float_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = bits_to_float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = float_to_bits(base);
    const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    return uint16_t((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

DL_HD float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// Little-endian loads from byte addresses that need not be aligned (block fields).
DL_HD uint16_t load_u16(const uint8_t* p) { return uint16_t(p[0] | (uint16_t(p[1]) << 8)); }
DL_HD float load_half(const uint8_t* p) { return half_to_float(load_u16(p)); }
DL_HD void store_u16(uint8_t* p, uint16_t v) {
    p[0] = uint8_t(v & 0xFF);
    p[1] = uint8_t(v >> 8);
}

}  // namespace decollama::gpu
