// websd shim for TVM's 3rdparty/compiler-rt/builtin_fp16.h (not shipped in the apache-tvm wheel);
// see README.md here.
//
// The runtime built into the wasm uses one function from it: widening a float16 bit pattern to float,
// in the sort kernels (src/runtime/extra/contrib/sort/sort.cc):
//   __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(bits)
// This is a generic widening between IEEE-754 binary formats with the same template signature: the
// value is exact, subnormals become normal, infinities stay infinite and NaN payloads are kept.
#ifndef WEBSD_BUILTIN_FP16_H_
#define WEBSD_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
static inline DST_T __extendXfYf2__(SRC_T a) {
  static_assert(sizeof(SRC_T) == sizeof(SRC_REP_T) && sizeof(DST_T) == sizeof(DST_REP_T), "bit widths");
  constexpr int kSrcBits = sizeof(SRC_REP_T) * 8;
  constexpr int kDstBits = sizeof(DST_REP_T) * 8;
  constexpr int kSrcExpBits = kSrcBits - SRC_SIG_BITS - 1;
  constexpr int kDstExpBits = kDstBits - DST_SIG_BITS - 1;
  static_assert(SRC_SIG_BITS <= DST_SIG_BITS && kSrcExpBits <= kDstExpBits, "this only widens");
  constexpr DST_REP_T kSrcExpMax = (DST_REP_T(1) << kSrcExpBits) - 1;
  constexpr DST_REP_T kDstExpMax = (DST_REP_T(1) << kDstExpBits) - 1;
  constexpr DST_REP_T kSrcSigMask = (DST_REP_T(1) << SRC_SIG_BITS) - 1;
  constexpr int kBiasDelta = (1 << (kDstExpBits - 1)) - (1 << (kSrcExpBits - 1));

  SRC_REP_T src_bits;
  std::memcpy(&src_bits, &a, sizeof(src_bits));
  DST_REP_T bits = src_bits;
  DST_REP_T sign = (bits >> (kSrcBits - 1)) & 1;
  DST_REP_T exponent = (bits >> SRC_SIG_BITS) & kSrcExpMax;
  DST_REP_T significand = bits & kSrcSigMask;

  if (exponent == kSrcExpMax) {  // infinity or NaN
    exponent = kDstExpMax;
  } else if (exponent != 0) {  // normal
    exponent += kBiasDelta;
  } else if (significand != 0) {  // subnormal: shift the leading one into the implicit bit
    int shift = 0;
    while ((significand & (DST_REP_T(1) << SRC_SIG_BITS)) == 0) {
      significand <<= 1;
      ++shift;
    }
    significand &= kSrcSigMask;
    exponent = static_cast<DST_REP_T>(1 - shift + kBiasDelta);
  }  // else zero: exponent and significand stay 0

  DST_REP_T result = sign << (kDstBits - 1) | exponent << DST_SIG_BITS |
                     significand << (DST_SIG_BITS - SRC_SIG_BITS);
  DST_T out;
  std::memcpy(&out, &result, sizeof(out));
  return out;
}

#endif  // WEBSD_BUILTIN_FP16_H_
