// oneDNN convolutions for XLA:CPU through the XLA FFI (see jaxdiff/kernels/onednn.py; built by
// jaxdiff/kernels/native.py).
//
// Three handlers, all 'SAME'-padded, stride 1, odd square or rectangular kernels, NHWC
// activations and HWIO kernels in XLA's default (row-major) layouts:
//
//   jaxdiff_onednn_conv_fwd          y[B,H,W,O]  = conv(x[B,H,W,I], k[KH,KW,I,O])
//   jaxdiff_onednn_conv_bwd_data     dx[B,H,W,I] from dy[B,H,W,O] and k
//   jaxdiff_onednn_conv_bwd_weights  dk[KH,KW,I,O] (float32) from x and dy
//
// Activations and the kernel are float32 or bfloat16 (the same for all operands); the
// kernel gradient is always float32 (oneDNN accumulates in float32). Primitives are built
// once per (kind, shape, dtype) and cached; each call uses its own scratchpad, so XLA may
// run several calls at once. oneDNN picks its own weight layout ("any"); the HWIO kernel is
// reordered into it on every call (a few kilobytes).

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum class Kind { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

struct Shape {
  int64_t n, h, w, i, o, kh, kw;
};

dnnl::engine& Engine() {
  static dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// One cached primitive: what runs, the layout oneDNN wants for the kernel (or its
// gradient), and the reorder between that layout and XLA's HWIO.
struct Plan {
  dnnl::primitive prim;
  dnnl::memory::desc act_in;    // src (fwd, bwd_weights) or diff_dst (bwd_data)
  dnnl::memory::desc act_out;   // dst (fwd), diff_src (bwd_data), diff_dst (bwd_weights)
  dnnl::memory::desc wei;       // oneDNN's kernel layout
  dnnl::memory::desc user_wei;  // HWIO
  bool reorder_wei = false;
  dnnl::reorder wei_reorder;
  size_t scratch_bytes = 0;
};

dnnl::memory::data_type DnnlType(ffi::DataType t) {
  return t == ffi::DataType::BF16 ? dnnl::memory::data_type::bf16
                                  : dnnl::memory::data_type::f32;
}

// A plan from a primitive descriptor: the primitive, the activations' layouts, its scratchpad,
// and the reorder between XLA's HWIO kernel and the layout oneDNN chose (into that layout
// before the pass, or back to HWIO after the weight gradient, `to_user`).
template <typename Prim, typename Desc>
std::unique_ptr<Plan> Fill(const Desc& pd, const dnnl::memory::desc& act_in,
                           const dnnl::memory::desc& act_out, const dnnl::memory::desc& wei,
                           const dnnl::memory::desc& user_wei, bool to_user) {
  auto plan = std::make_unique<Plan>();
  plan->prim = Prim(pd);
  plan->act_in = act_in;
  plan->act_out = act_out;
  plan->wei = wei;
  plan->user_wei = user_wei;
  plan->scratch_bytes = pd.scratchpad_desc().get_size();
  if (wei != user_wei) {
    auto& eng = Engine();
    const auto& from = to_user ? wei : user_wei;
    const auto& to = to_user ? user_wei : wei;
    plan->reorder_wei = true;
    plan->wei_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, from, eng, to));
  }
  return plan;
}

std::unique_ptr<Plan> MakePlan(Kind kind, const Shape& s, ffi::DataType dtype) {
  using dnnl::memory;
  using tag = memory::format_tag;
  auto& eng = Engine();
  const auto dt = DnnlType(dtype);
  const memory::dims src_d{s.n, s.i, s.h, s.w}, dst_d{s.n, s.o, s.h, s.w};
  const memory::dims wei_d{s.o, s.i, s.kh, s.kw};
  const memory::dims strides{1, 1}, pad{s.kh / 2, s.kw / 2};
  const memory::desc src_md(src_d, dt, tag::nhwc), dst_md(dst_d, dt, tag::nhwc);
  const memory::desc wei_any(wei_d, dt, tag::any), hwio(wei_d, dt, tag::hwio);
  const auto direct = dnnl::algorithm::convolution_direct;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::convolution_forward::primitive_desc fwd(eng, dnnl::prop_kind::forward_training, direct,
                                                src_md, wei_any, dst_md, strides, pad, pad,
                                                attr);
  if (kind == Kind::kFwd) {
    return Fill<dnnl::convolution_forward>(fwd, src_md, dst_md, fwd.weights_desc(), hwio, false);
  }
  if (kind == Kind::kBwdData) {
    dnnl::convolution_backward_data::primitive_desc bwd(eng, direct, src_md, wei_any, dst_md,
                                                        strides, pad, pad, fwd, attr);
    return Fill<dnnl::convolution_backward_data>(bwd, dst_md, src_md, bwd.weights_desc(), hwio,
                                                 false);
  }
  // the weight gradient is float32 whatever the activations' dtype
  const memory::desc dwei_any(wei_d, memory::data_type::f32, tag::any);
  const memory::desc dwei_hwio(wei_d, memory::data_type::f32, tag::hwio);
  dnnl::convolution_backward_weights::primitive_desc bwd(eng, direct, src_md, dwei_any, dst_md,
                                                         strides, pad, pad, fwd, attr);
  return Fill<dnnl::convolution_backward_weights>(bwd, src_md, dst_md, bwd.diff_weights_desc(),
                                                  dwei_hwio, true);
}

const Plan& GetPlan(Kind kind, const Shape& s, ffi::DataType dtype) {
  static std::mutex mu;
  static auto* cache = new std::unordered_map<std::string, std::unique_ptr<Plan>>();
  std::string key = std::to_string(static_cast<int>(kind)) + ":" +
                    std::to_string(static_cast<int>(dtype));
  for (int64_t v : {s.n, s.h, s.w, s.i, s.o, s.kh, s.kw}) key += "," + std::to_string(v);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(key);
  if (it == cache->end()) it = cache->emplace(key, MakePlan(kind, s, dtype)).first;
  return *it->second;
}

// Per-thread buffers: the scratchpad and the reordered kernel.
std::vector<uint8_t>& ThreadBuffer(int which, size_t bytes) {
  thread_local std::vector<uint8_t> buffers[2];
  auto& b = buffers[which];
  if (b.size() < bytes) b.resize(bytes);
  return b;
}

// One pass: `act_in` is x (forward, weight gradient) or dy (data gradient), `other` the
// kernel or dy, `out` the result; the activations' dtype (float32 or bfloat16) picks the plan.
ffi::Error Run(Kind kind, ffi::AnyBuffer act_in, ffi::AnyBuffer other, ffi::AnyBuffer out,
               const Shape& s) {
  const ffi::DataType dtype = act_in.element_type();
  if (dtype != ffi::DataType::F32 && dtype != ffi::DataType::BF16) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "jaxdiff oneDNN convolution: activations must be float32 or bfloat16");
  }
  try {
    const Plan& plan = GetPlan(kind, s, dtype);
    auto& eng = Engine();
    dnnl::stream stream(eng);
    auto& scratch = ThreadBuffer(0, plan.scratch_bytes);
    dnnl::memory scratch_mem(dnnl::memory::desc({static_cast<int64_t>(plan.scratch_bytes)},
                                                dnnl::memory::data_type::u8,
                                                dnnl::memory::format_tag::a),
                             eng, scratch.data());
    dnnl::memory in_mem(plan.act_in, eng, act_in.untyped_data());
    if (kind == Kind::kBwdWeights) {
      dnnl::memory dy_mem(plan.act_out, eng, other.untyped_data());
      dnnl::memory user_dk(plan.user_wei, eng, out.untyped_data());
      dnnl::memory dk = user_dk;
      if (plan.reorder_wei) {
        dk = dnnl::memory(plan.wei, eng, ThreadBuffer(1, plan.wei.get_size()).data());
      }
      plan.prim.execute(stream, {{DNNL_ARG_SRC, in_mem},
                                 {DNNL_ARG_DIFF_DST, dy_mem},
                                 {DNNL_ARG_DIFF_WEIGHTS, dk},
                                 {DNNL_ARG_SCRATCHPAD, scratch_mem}});
      if (plan.reorder_wei) plan.wei_reorder.execute(stream, dk, user_dk);
    } else {
      dnnl::memory user_k(plan.user_wei, eng, other.untyped_data());
      dnnl::memory k = user_k;
      if (plan.reorder_wei) {
        k = dnnl::memory(plan.wei, eng, ThreadBuffer(1, plan.wei.get_size()).data());
        plan.wei_reorder.execute(stream, user_k, k);
      }
      dnnl::memory out_mem(plan.act_out, eng, out.untyped_data());
      if (kind == Kind::kFwd) {
        plan.prim.execute(stream, {{DNNL_ARG_SRC, in_mem},
                                   {DNNL_ARG_WEIGHTS, k},
                                   {DNNL_ARG_DST, out_mem},
                                   {DNNL_ARG_SCRATCHPAD, scratch_mem}});
      } else {
        plan.prim.execute(stream, {{DNNL_ARG_DIFF_DST, in_mem},
                                   {DNNL_ARG_WEIGHTS, k},
                                   {DNNL_ARG_DIFF_SRC, out_mem},
                                   {DNNL_ARG_SCRATCHPAD, scratch_mem}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

// Each pass's Shape{batch, height, width, in channels, out channels, kernel h, kernel w}:
// the NHWC activations give the first four (or three), the HWIO kernel the rest.
ffi::Error Fwd(ffi::AnyBuffer x, ffi::AnyBuffer k, ffi::Result<ffi::AnyBuffer> y) {
  auto xd = x.dimensions(), kd = k.dimensions();
  return Run(Kind::kFwd, x, k, *y, Shape{xd[0], xd[1], xd[2], xd[3], kd[3], kd[0], kd[1]});
}

ffi::Error BwdData(ffi::AnyBuffer dy, ffi::AnyBuffer k, ffi::Result<ffi::AnyBuffer> dx) {
  auto yd = dy.dimensions(), kd = k.dimensions();
  return Run(Kind::kBwdData, dy, k, *dx, Shape{yd[0], yd[1], yd[2], kd[2], yd[3], kd[0], kd[1]});
}

ffi::Error BwdWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dk) {
  auto xd = x.dimensions(), kd = dk->dimensions();
  return Run(Kind::kBwdWeights, x, dy, *dk, Shape{xd[0], xd[1], xd[2], xd[3], kd[3], kd[0], kd[1]});
}

}  // namespace

// oneDNN's effective CPU ISA (a dnnl_cpu_isa_t value; ONEDNN_MAX_CPU_ISA caps it).
extern "C" int jaxdiff_onednn_isa() { return static_cast<int>(dnnl::get_effective_cpu_isa()); }

// 1 when oneDNN can build a bfloat16 convolution on this CPU (AVX-512 and up), else 0.
extern "C" int jaxdiff_onednn_has_bf16() {
  try {
    GetPlan(Kind::kFwd, Shape{1, 4, 4, 16, 16, 3, 3}, ffi::DataType::BF16);
    GetPlan(Kind::kBwdData, Shape{1, 4, 4, 16, 16, 3, 3}, ffi::DataType::BF16);
    GetPlan(Kind::kBwdWeights, Shape{1, 4, 4, 16, 16, 3, 3}, ffi::DataType::BF16);
    return 1;
  } catch (const dnnl::error&) {
    return 0;
  }
}

// Every pass takes two buffers and returns one.
#define JAXDIFF_CONV_HANDLER(name, fn)   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, fn, \
                                ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>())

JAXDIFF_CONV_HANDLER(jaxdiff_onednn_conv_fwd, Fwd);
JAXDIFF_CONV_HANDLER(jaxdiff_onednn_conv_bwd_data, BwdData);
JAXDIFF_CONV_HANDLER(jaxdiff_onednn_conv_bwd_weights, BwdWeights);
