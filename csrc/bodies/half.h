#pragma once
// float <-> float16 / bfloat16 conversions on raw 16-bit patterns, round-to-nearest-even,
// identical on host and device (the .cu files include no torch or cuda_fp16 types).
#include "bodies/host_device.h"

namespace genesis {

GENESIS_HD uint32_t float_bits(float f) {
  union {
    float f;
    uint32_t u;
  } v{f};
  return v.u;
}
GENESIS_HD float bits_float(uint32_t u) {
  union {
    uint32_t u;
    float f;
  } v{u};
  return v.f;
}

GENESIS_HD float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

GENESIS_HD uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  const uint32_t rounding_bias = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding_bias) >> 16);
}

GENESIS_HD float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return bits_float(sign);  // +-0
    // subnormal: value = mant * 2^-24
    const float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

GENESIS_HD uint16_t float_to_half(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // nan
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (abs < 0x38800000u) {               // below the smallest normal half (2^-14): subnormal or zero
    if (abs < 0x33000000u) return sign;  // < 2^-25 rounds to 0 (2^-25 exactly ties to even 0)
    // shift the 24-bit significand so that the unit is 2^-24, rounding to nearest even
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;  // in [14, 24]
    const uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    const uint32_t r = q + ((rem > halfway || (rem == halfway && (q & 1u))) ? 1u : 0u);
    return static_cast<uint16_t>(sign | r);
  }
  // normal: rebias exponent (127 -> 15) and round the 13 dropped bits to nearest even
  const uint32_t rebased = abs - (112u << 23);
  const uint32_t r = rebased + 0xfffu + ((rebased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

// Storage types: float, double, and 16-bit patterns tagged so that they dispatch differently.
struct Half16 {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

GENESIS_HD float to_float(float v) { return v; }
GENESIS_HD float to_float(double v) { return static_cast<float>(v); }
GENESIS_HD float to_float(Half16 v) { return half_to_float(v.bits); }
GENESIS_HD float to_float(BFloat16 v) { return bf16_to_float(v.bits); }

template <typename T>
struct FromFloat;
template <>
struct FromFloat<float> {
  GENESIS_HD static float apply(float v) { return v; }
};
template <>
struct FromFloat<double> {
  GENESIS_HD static double apply(float v) { return static_cast<double>(v); }
};
template <>
struct FromFloat<Half16> {
  GENESIS_HD static Half16 apply(float v) { return Half16{float_to_half(v)}; }
};
template <>
struct FromFloat<BFloat16> {
  GENESIS_HD static BFloat16 apply(float v) { return BFloat16{float_to_bf16(v)}; }
};

}  // namespace genesis
