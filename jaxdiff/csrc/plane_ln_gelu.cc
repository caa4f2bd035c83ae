// The starter block's LayerNorm + exact GELU for XLA:CPU, through the XLA FFI
// (see jaxdiff/fused.py, layer_norm_gelu_native).
//
//   y = GELU((x - mean) * rstd * scale + bias)
//
// x is NHWC (float32 or bfloat16), statistics per example and channel over the H x W plane
// (float32), scale and bias one float32 per pixel (the template's nn.LayerNorm((H, W)) affine,
// shared by channels). XLA computes this block as several fusions, each a pass over the
// activations (about a third of a bf16 starter training step on an AMX host, measured); here
// the forward pass reads x twice and writes y once per example, the backward pass reads x and
// the incoming gradient once and writes dx once, with the per-example working set in cache.
//
//   jaxdiff_plane_ln_gelu_fwd  (x, scale, bias; eps) -> (y, mean[B,C], rstd[B,C])
//   jaxdiff_plane_ln_gelu_bwd  (x, mean, rstd, scale, bias, g) ->
//                              (dx, dscale[B,H,W], dbias[B,H,W])  (per example; the caller
//                                                                  sums over B)
//
// erf is the rational approximation XLA:CPU and Eigen use for float32 (exact to float
// rounding on [-4, 4], +-1 outside); exp a Cephes-style polynomial. Both are branch-free so
// the channel loops vectorise. Examples are split over OpenMP threads.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline float Bf16ToF32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t F32ToBf16(float f) {  // round to nearest even, as XLA's convert
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

template <typename T>
inline float Load(const T* p, int64_t i);
template <>
inline float Load<float>(const float* p, int64_t i) {
  return p[i];
}
template <>
inline float Load<uint16_t>(const uint16_t* p, int64_t i) {
  return Bf16ToF32(p[i]);
}

template <typename T>
inline void Store(T* p, int64_t i, float v);
template <>
inline void Store<float>(float* p, int64_t i, float v) {
  p[i] = v;
}
template <>
inline void Store<uint16_t>(uint16_t* p, int64_t i, float v) {
  p[i] = F32ToBf16(v);
}

inline float Erf(float a) {
  const float x = std::min(std::max(a, -4.f), 4.f);
  const float x2 = x * x;
  float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
  p = x2 * p + -2.10102402082508e-06f;
  p = x2 * p + -5.69250639462346e-05f;
  p = x2 * p + -7.34990630326855e-04f;
  p = x2 * p + -2.95459980854025e-03f;
  p = x2 * p + -1.60960333262415e-02f;
  p = x * p;
  float q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
  q = x2 * q + -1.68282697438203e-03f;
  q = x2 * q + -7.37332916720468e-03f;
  q = x2 * q + -1.42647390514189e-02f;
  return p / q;
}

inline float Exp(float x) {  // x <= 0 here; flushes to 0 below -87
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

inline float Gelu(float z) { return 0.5f * z * (1.0f + Erf(z * kSqrtHalf)); }

inline float GeluGrad(float z) {
  return 0.5f * (1.0f + Erf(z * kSqrtHalf)) + z * kInvSqrt2Pi * Exp(-0.5f * z * z);
}

template <typename T>
void Forward(const T* x, const float* scale, const float* bias, T* y, float* mean_out,
             float* rstd_out, int64_t B, int64_t P, int64_t C, float eps) {
#pragma omp parallel
  {
    std::vector<float> mean(C), var(C), rstd(C);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const T* xb = x + b * P * C;
      T* yb = y + b * P * C;
      std::fill(mean.begin(), mean.end(), 0.f);
      std::fill(var.begin(), var.end(), 0.f);
      for (int64_t p = 0; p < P; ++p) {
        for (int64_t c = 0; c < C; ++c) mean[c] += Load(xb, p * C + c);
      }
      for (int64_t c = 0; c < C; ++c) mean[c] /= static_cast<float>(P);
      for (int64_t p = 0; p < P; ++p) {
        for (int64_t c = 0; c < C; ++c) {
          const float d = Load(xb, p * C + c) - mean[c];
          var[c] += d * d;
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        rstd[c] = 1.0f / std::sqrt(var[c] / static_cast<float>(P) + eps);
        mean_out[b * C + c] = mean[c];
        rstd_out[b * C + c] = rstd[c];
      }
      for (int64_t p = 0; p < P; ++p) {
        const float s = scale[p], t = bias[p];
        for (int64_t c = 0; c < C; ++c) {
          const float z = (Load(xb, p * C + c) - mean[c]) * rstd[c] * s + t;
          Store(yb, p * C + c, Gelu(z));
        }
      }
    }
  }
}

template <typename T>
void Backward(const T* x, const float* mean, const float* rstd, const float* scale,
              const float* bias, const T* g, T* dx, float* dscale, float* dbias, int64_t B,
              int64_t P, int64_t C) {
#pragma omp parallel
  {
    std::vector<float> gz(P * C), m1(C), m2(C);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const T* xb = x + b * P * C;
      const T* gb = g + b * P * C;
      T* dxb = dx + b * P * C;
      const float* mu = mean + b * C;
      const float* rs = rstd + b * C;
      std::fill(m1.begin(), m1.end(), 0.f);
      std::fill(m2.begin(), m2.end(), 0.f);
      for (int64_t p = 0; p < P; ++p) {
        const float s = scale[p], t = bias[p];
        float ds = 0.f, db = 0.f;
        for (int64_t c = 0; c < C; ++c) {
          const float xh = (Load(xb, p * C + c) - mu[c]) * rs[c];
          const float v = Load(gb, p * C + c) * GeluGrad(xh * s + t);
          gz[p * C + c] = v;
          ds += v * xh;
          db += v;
          m1[c] += v * s;
          m2[c] += v * s * xh;
        }
        dscale[b * P + p] = ds;
        dbias[b * P + p] = db;
      }
      for (int64_t c = 0; c < C; ++c) {
        m1[c] /= static_cast<float>(P);
        m2[c] /= static_cast<float>(P);
      }
      for (int64_t p = 0; p < P; ++p) {
        const float s = scale[p];
        for (int64_t c = 0; c < C; ++c) {
          const float xh = (Load(xb, p * C + c) - mu[c]) * rs[c];
          Store(dxb, p * C + c, rs[c] * (gz[p * C + c] * s - m1[c] - xh * m2[c]));
        }
      }
    }
  }
}

ffi::Error CheckShapes(ffi::AnyBuffer x, int64_t scale_size) {
  if (x.element_type() != ffi::DataType::F32 && x.element_type() != ffi::DataType::BF16) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "jaxdiff plane LayerNorm + GELU: x must be float32 or bfloat16");
  }
  auto d = x.dimensions();
  if (d.size() != 4 || d[1] * d[2] != scale_size) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "jaxdiff plane LayerNorm + GELU: x must be (B, H, W, C) and scale/bias "
                      "hold H * W values");
  }
  return ffi::Error::Success();
}

ffi::Error Fwd(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> bias,
               ffi::Result<ffi::AnyBuffer> y, ffi::ResultBuffer<ffi::F32> mean,
               ffi::ResultBuffer<ffi::F32> rstd, float eps) {
  if (auto err = CheckShapes(x, scale.element_count()); err.failure()) return err;
  auto d = x.dimensions();
  const int64_t B = d[0], P = d[1] * d[2], C = d[3];
  if (x.element_type() == ffi::DataType::BF16) {
    Forward(static_cast<const uint16_t*>(x.untyped_data()), scale.typed_data(),
            bias.typed_data(), static_cast<uint16_t*>(y->untyped_data()), mean->typed_data(),
            rstd->typed_data(), B, P, C, eps);
  } else {
    Forward(static_cast<const float*>(x.untyped_data()), scale.typed_data(), bias.typed_data(),
            static_cast<float*>(y->untyped_data()), mean->typed_data(), rstd->typed_data(), B,
            P, C, eps);
  }
  return ffi::Error::Success();
}

ffi::Error Bwd(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> rstd,
               ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> bias, ffi::AnyBuffer g,
               ffi::Result<ffi::AnyBuffer> dx, ffi::ResultBuffer<ffi::F32> dscale,
               ffi::ResultBuffer<ffi::F32> dbias) {
  if (auto err = CheckShapes(x, scale.element_count()); err.failure()) return err;
  if (g.element_type() != x.element_type()) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "jaxdiff plane LayerNorm + GELU: gradient and input dtypes differ");
  }
  auto d = x.dimensions();
  const int64_t B = d[0], P = d[1] * d[2], C = d[3];
  if (x.element_type() == ffi::DataType::BF16) {
    Backward(static_cast<const uint16_t*>(x.untyped_data()), mean.typed_data(),
             rstd.typed_data(), scale.typed_data(), bias.typed_data(),
             static_cast<const uint16_t*>(g.untyped_data()),
             static_cast<uint16_t*>(dx->untyped_data()), dscale->typed_data(),
             dbias->typed_data(), B, P, C);
  } else {
    Backward(static_cast<const float*>(x.untyped_data()), mean.typed_data(), rstd.typed_data(),
             scale.typed_data(), bias.typed_data(), static_cast<const float*>(g.untyped_data()),
             static_cast<float*>(dx->untyped_data()), dscale->typed_data(), dbias->typed_data(),
             B, P, C);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxdiff_plane_ln_gelu_fwd, Fwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("eps"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxdiff_plane_ln_gelu_bwd, Bwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
