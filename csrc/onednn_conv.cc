// jaxvx: channels-last 3D convolutions on the CPU through oneDNN, as XLA FFI custom calls.
//
// XLA's CPU backend runs convolutions through Eigen at 30 to 120 GFLOP/s on C3D's layers (2 cores with AVX2);
// oneDNN's JIT kernels run them 1.5 to 2.8 times faster (docs/performance.md). Three handlers, registered from
// Python by jaxvx/models/_onednn.py, all float32:
//
//   jaxvx_onednn_conv3d_fwd          (x [..., N, D, H, W, C], w [..., kD, kH, kW, C, O]) -> y  [..., N, D', H', W', O]
//   jaxvx_onednn_conv3d_bwd_data     (g [..., N, D', H', W', O], w)                    -> dx [..., N, D, H, W, C]
//   jaxvx_onednn_conv3d_bwd_weights  (x, g)                                            -> dw [..., kD, kH, kW, C, O]
//
// with attributes `strides`, `pad_lo`, `pad_hi` (3 int64 each, (D, H, W)) and `blocked` (int64: 1 lets oneDNN
// pick its blocked layouts, with reorders to and from the channels-last buffers; 0 runs on the plain layouts).
// The leading `...` axes are vmap's (XLA FFI's "expand_dims" batching: an unbatched operand has size-1 axes there):
// they broadcast against each other; where the weights are not batched, the batched data axes fold into N.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Dims = ffi::Span<const int64_t>;
using Tag = memory::format_tag;

enum Op { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Geometry of one convolution: batch, channels, sizes, and the attributes.
struct Geometry {
  int64_t n, c, o;
  int64_t in[3], out[3], k[3], stride[3], lo[3], hi[3];
  bool blocked;
  auto key(int op) const {
    std::vector<int64_t> v{op, n, c, o, blocked};
    for (int i = 0; i < 3; ++i) v.insert(v.end(), {in[i], out[i], k[i], stride[i], lo[i], hi[i]});
    return v;
  }
};

// A oneDNN primitive with the layouts it wants and the channels-last layouts jaxvx's buffers have.
struct Primitive {
  dnnl::primitive prim;
  memory::desc src, wei, dst;         // channels-last: ndhwc, dhwio, ndhwc
  memory::desc p_src, p_wei, p_dst;   // the primitive's own (equal to the above unless `blocked`)
};

std::shared_ptr<Primitive> Build(int op, const Geometry& g) {
  auto p = std::make_shared<Primitive>();
  const auto f32 = memory::data_type::f32;
  memory::dims src{g.n, g.c, g.in[0], g.in[1], g.in[2]};
  memory::dims wei{g.o, g.c, g.k[0], g.k[1], g.k[2]};
  memory::dims dst{g.n, g.o, g.out[0], g.out[1], g.out[2]};
  p->src = memory::desc(src, f32, Tag::ndhwc);
  p->wei = memory::desc(wei, f32, Tag::dhwio);
  p->dst = memory::desc(dst, f32, Tag::ndhwc);
  auto pick = [&](const memory::dims& d, const memory::desc& plain) {
    return g.blocked ? memory::desc(d, f32, Tag::any) : plain;
  };
  memory::dims strides(g.stride, g.stride + 3), lo(g.lo, g.lo + 3), hi(g.hi, g.hi + 3);
  auto fwd = dnnl::convolution_forward::primitive_desc(
      Engine(), op == kForward ? dnnl::prop_kind::forward_inference : dnnl::prop_kind::forward_training,
      dnnl::algorithm::convolution_direct, pick(src, p->src), pick(wei, p->wei), pick(dst, p->dst), strides, lo,
      hi);
  if (op == kForward) {
    p->prim = dnnl::convolution_forward(fwd);
    p->p_src = fwd.src_desc();
    p->p_wei = fwd.weights_desc();
    p->p_dst = fwd.dst_desc();
  } else if (op == kBackwardData) {
    auto bwd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, pick(src, p->src), pick(wei, p->wei), pick(dst, p->dst),
        strides, lo, hi, fwd);
    p->prim = dnnl::convolution_backward_data(bwd);
    p->p_src = bwd.diff_src_desc();
    p->p_wei = bwd.weights_desc();
    p->p_dst = bwd.diff_dst_desc();
  } else {
    auto bwd = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, pick(src, p->src), pick(wei, p->wei), pick(dst, p->dst),
        strides, lo, hi, fwd);
    p->prim = dnnl::convolution_backward_weights(bwd);
    p->p_src = bwd.src_desc();
    p->p_wei = bwd.diff_weights_desc();
    p->p_dst = bwd.diff_dst_desc();
  }
  return p;
}

// Primitives are created once per geometry and thread (creation costs milliseconds; a thread-local cache needs
// no lock and keeps concurrent executions of one primitive apart). A model has a few dozen geometries; a program
// that meets many clip shapes (videos of every length) would grow the cache without end, so past kMaxCached
// entries it starts again (oneDNN's own primitive cache still makes the rebuilds cheap).
constexpr size_t kMaxCached = 512;

std::shared_ptr<Primitive> Get(int op, const Geometry& g) {
  thread_local std::map<std::vector<int64_t>, std::shared_ptr<Primitive>> cache;
  auto key = g.key(op);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto p = Build(op, g);
  if (cache.size() >= kMaxCached) cache.clear();
  cache.emplace(std::move(key), p);
  return p;
}

// A oneDNN memory over a user buffer, reordered into the primitive's layout when that differs.
memory Input(dnnl::stream& s, const memory::desc& user, const memory::desc& want, const float* data) {
  memory m(user, Engine(), const_cast<float*>(data));
  if (user == want) return m;
  memory r(want, Engine());
  dnnl::reorder(m, r).execute(s, m, r);
  return r;
}

int64_t Product(Dims d, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t i = from; i < to; ++i) p *= d[i];
  return p;
}

ffi::Error Check(bool ok, const std::string& what) {
  return ok ? ffi::Error::Success() : ffi::Error::InvalidArgument("jaxvx onednn conv3d: " + what);
}

// Runs `op` with operands a, b (see the header) into `out`, looping over the broadcast leading (vmap) axes.
ffi::Error Run(int op, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b, ffi::Result<ffi::Buffer<ffi::F32>> out,
               Dims strides, Dims pad_lo, Dims pad_hi, int64_t blocked) {
  Dims ad = a.dimensions(), bd = b.dimensions(), od = out->dimensions();
  if (strides.size() != 3 || pad_lo.size() != 3 || pad_hi.size() != 3)
    return Check(false, "strides, pad_lo and pad_hi need 3 entries each");
  if (ad.size() < 5 || ad.size() != bd.size() || ad.size() != od.size())
    return Check(false, "operands need the same rank, at least 5");
  const size_t lead = ad.size() - 5;
  // data-like operand shapes (x or g, the [N, D, H, W, C] ones) and the weight shape, per op
  Dims x = op == kForward || op == kBackwardWeights ? ad : od;
  Dims y = op == kForward ? od : (op == kBackwardData ? ad : bd);
  Dims w = op == kBackwardWeights ? od : bd;
  Geometry g;
  g.n = x[lead];
  g.c = x[lead + 4];
  g.o = y[lead + 4];
  g.blocked = blocked != 0;
  for (int i = 0; i < 3; ++i) {
    g.in[i] = x[lead + 1 + i];
    g.out[i] = y[lead + 1 + i];
    g.k[i] = w[lead + i];
    g.stride[i] = strides[i];
    g.lo[i] = pad_lo[i];
    g.hi[i] = pad_hi[i];
    if ((g.in[i] + g.lo[i] + g.hi[i] - g.k[i]) / g.stride[i] + 1 != g.out[i])
      return Check(false, "output size does not match input, kernel, strides and padding");
  }
  if (y[lead] != g.n || w[lead + 3] != g.c || w[lead + 4] != g.o)
    return Check(false, "batch or channel sizes of the operands disagree");
  // leading axes: each operand's size there is 1 (unbatched) or the output's
  std::vector<int64_t> a_step(lead), b_step(lead), o_size(od.begin(), od.begin() + lead);
  int64_t a_inner = Product(ad, lead, ad.size()), b_inner = Product(bd, lead, bd.size());
  for (size_t i = lead; i-- > 0;) {
    if ((ad[i] != 1 && ad[i] != od[i]) || (bd[i] != 1 && bd[i] != od[i]))
      return Check(false, "leading (batch) axes do not broadcast");
    a_step[i] = ad[i] == 1 ? 0 : a_inner;
    b_step[i] = bd[i] == 1 ? 0 : b_inner;
    a_inner *= ad[i];
    b_inner *= bd[i];
  }
  const int64_t count = Product(od, 0, lead), o_inner = Product(od, lead, od.size());
  if (count * o_inner == 0) return ffi::Error::Success();  // nothing to write
  if (Product(ad, 0, ad.size()) == 0 || Product(bd, 0, bd.size()) == 0) {  // a sum over nothing
    std::fill(out->typed_data(), out->typed_data() + count * o_inner, 0.0f);
    return ffi::Error::Success();
  }
  // weights unbatched in a forward or data-gradient pass: every leading axis folds into the batch
  bool fold = op != kBackwardWeights && Product(bd, 0, lead) == 1 && count > 1;
  if (fold) {
    g.n *= count;
  }
  auto p = Get(op, g);
  dnnl::stream s(Engine());
  const int64_t loops = fold ? 1 : count;
  for (int64_t i = 0; i < loops; ++i) {
    int64_t a_off = 0, b_off = 0, rest = i;
    for (size_t j = lead; j-- > 0;) {
      int64_t idx = rest % o_size[j];
      rest /= o_size[j];
      a_off += idx * a_step[j];
      b_off += idx * b_step[j];
    }
    const float* pa = a.typed_data() + a_off;
    const float* pb = b.typed_data() + b_off;
    float* po = out->typed_data() + (fold ? 0 : i * o_inner);
    std::unordered_map<int, memory> args;
    const memory::desc* result_user;
    const memory::desc* result_want;
    int result_arg;
    if (op == kForward) {
      args.emplace(DNNL_ARG_SRC, Input(s, p->src, p->p_src, pa));
      args.emplace(DNNL_ARG_WEIGHTS, Input(s, p->wei, p->p_wei, pb));
      result_user = &p->dst, result_want = &p->p_dst, result_arg = DNNL_ARG_DST;
    } else if (op == kBackwardData) {
      args.emplace(DNNL_ARG_DIFF_DST, Input(s, p->dst, p->p_dst, pa));
      args.emplace(DNNL_ARG_WEIGHTS, Input(s, p->wei, p->p_wei, pb));
      result_user = &p->src, result_want = &p->p_src, result_arg = DNNL_ARG_DIFF_SRC;
    } else {
      args.emplace(DNNL_ARG_SRC, Input(s, p->src, p->p_src, pa));
      args.emplace(DNNL_ARG_DIFF_DST, Input(s, p->dst, p->p_dst, pb));
      result_user = &p->wei, result_want = &p->p_wei, result_arg = DNNL_ARG_DIFF_WEIGHTS;
    }
    memory user(*result_user, Engine(), po);
    memory result = *result_user == *result_want ? user : memory(*result_want, Engine());
    args.emplace(result_arg, result);
    p->prim.execute(s, args);
    if (!(*result_user == *result_want)) dnnl::reorder(result, user).execute(s, result, user);
  }
  s.wait();
  return ffi::Error::Success();
}

template <int OP>
ffi::Error Handler(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b, ffi::Result<ffi::Buffer<ffi::F32>> out,
                   Dims strides, Dims pad_lo, Dims pad_hi, int64_t blocked) {
  try {
    return Run(OP, a, b, out, strides, pad_lo, pad_hi, blocked);
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("jaxvx onednn conv3d: oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("jaxvx onednn conv3d: ") + e.what());
  }
}

}  // namespace

#define JAXVX_BIND                                                                                \
  ffi::Ffi::Bind()                                                                                \
      .Arg<ffi::Buffer<ffi::F32>>()                                                               \
      .Arg<ffi::Buffer<ffi::F32>>()                                                               \
      .Ret<ffi::Buffer<ffi::F32>>()                                                               \
      .Attr<Dims>("strides")                                                                      \
      .Attr<Dims>("pad_lo")                                                                       \
      .Attr<Dims>("pad_hi")                                                                       \
      .Attr<int64_t>("blocked")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvxConv3dForward, Handler<kForward>, JAXVX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvxConv3dBackwardData, Handler<kBackwardData>, JAXVX_BIND);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxvxConv3dBackwardWeights, Handler<kBackwardWeights>, JAXVX_BIND);

// The oneDNN version this library runs with (for error messages and the benchmarks' headers).
extern "C" int jaxvx_onednn_version(int* major, int* minor, int* patch) {
  const dnnl_version_t* v = dnnl_version();
  *major = v->major;
  *minor = v->minor;
  *patch = v->patch;
  return 0;
}
