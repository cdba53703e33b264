// CPU kernels of every genesis op. All ops run the one pipeline engine with their own stage
// probabilities (see op_common.h), so the fused pipeline equals the composition of the single
// ops by construction. Work is parallel over samples (parameters, curve tables, shuffle maps)
// and over rows of voxels (values), and every voxel is a pure function of its coordinates, so
// results do not depend on the thread count.
#include <algorithm>
#include <numeric>

#include "kernels/launch_bodies.h"
#include "op_common.h"

namespace genesis {
namespace {

// Local pixel shuffling on the CPU: src[v] = the voxel (in target coordinates) that voxel v
// receives. Windows are stamped in order (the last one wins), then each window that still owns
// voxels builds its Fisher-Yates permutation once (O(n)) and resolves them. The GPU evaluates
// the same permutation entry by entry (fisher_yates_entry); tests check they agree.
void shuffle_source_map(const PipelineConfig& cfg, const Shape& shape, int64_t b, int32_t* src,
                        std::vector<uint32_t>& perm) {
  const int64_t S = shape.spatial();
  const uint32_t sample = sample_index(cfg, b);
  // owner >= 0: window id; resolved entries are stored as -(source + 1).
  for (int64_t v = 0; v < S; ++v) src[v] = static_cast<int32_t>(-(v + 1));
  const auto each_voxel = [&](const Box& w, auto&& fn) {
    int64_t local = 0;
    for (int64_t z = w.start[0]; z < w.start[0] + w.size[0]; ++z)
      for (int64_t y = w.start[1]; y < w.start[1] + w.size[1]; ++y) {
        const int64_t row = (z * shape.dim[1] + y) * shape.dim[2];
        for (int64_t x = w.start[2]; x < w.start[2] + w.size[2]; ++x) fn(row + x, local++);
      }
  };
  std::vector<Box> windows(static_cast<size_t>(cfg.num_windows));
  for (int64_t k = 0; k < cfg.num_windows; ++k) {
    windows[k] = shuffle_window(cfg.seed, sample, static_cast<uint32_t>(k), shape);
    each_voxel(windows[k], [&](int64_t v, int64_t) { src[v] = static_cast<int32_t>(k); });
  }
  for (int64_t k = 0; k < cfg.num_windows; ++k) {
    const Box& w = windows[k];
    bool owns = false;
    each_voxel(w, [&](int64_t v, int64_t) { owns = owns || src[v] == k; });
    if (!owns) continue;
    const uint32_t n = static_cast<uint32_t>(w.volume());
    perm.resize(n);
    std::iota(perm.begin(), perm.end(), 0u);
    const Stream s(cfg.seed, sample, kShufflePerm, static_cast<uint32_t>(k));
    for (uint32_t i = n - 1; i >= 1; --i) std::swap(perm[i], perm[fisher_yates_draw(s, i)]);
    each_voxel(w, [&](int64_t v, int64_t local) {
      if (src[v] == k) src[v] = static_cast<int32_t>(-(window_voxel(shape, w, perm[local]) + 1));
    });
  }
  for (int64_t v = 0; v < S; ++v) src[v] = -src[v] - 1;
}

template <typename T>
void run_cpu(const T* x, T* input, T* target, const Shape& shape, const PipelineConfig& cfg,
             std::vector<SampleParams>& params) {
  const int64_t B = shape.batch, S = shape.spatial();
  std::vector<float> xs(B * kCurvePoints), ys(B * kCurvePoints);
  std::vector<int32_t> grid(B * kCurveGridPoints);
  bool any_shuffle = false;
  for (const auto& p : params) any_shuffle = any_shuffle || p.shuffle;
  std::vector<int32_t> src(any_shuffle ? B * S : 0);
  torch::stable::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<uint32_t> perm;
    for (int64_t b = b0; b < b1; ++b) {
      for (int i = 0; i < kCurvePoints; ++i) curve_point_body(params.data(), xs.data(), ys.data(), b, i);
      for (int g = 0; g < kCurveGridPoints; ++g) curve_grid_body(params.data(), xs.data(), grid.data(), b, g);
      if (params[b].shuffle) shuffle_source_map(cfg, shape, b, src.data() + b * S, perm);
    }
  });
  const int64_t rows = B * shape.dim[0] * shape.dim[1];
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, shape.dim[2] * shape.channels));
  torch::stable::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / (shape.dim[0] * shape.dim[1]);
      const int64_t zy = r % (shape.dim[0] * shape.dim[1]);
      const int64_t z = zy / shape.dim[1], y = zy % shape.dim[1];
      SampleView sv;
      sv.params = params[b];
      sv.sample = sample_index(cfg, b);
      sv.curve = curve_view(xs.data(), ys.data(), grid.data(), b);
      const int32_t* map = sv.params.shuffle ? src.data() + b * S : nullptr;
      const int64_t row = (z * shape.dim[1] + y) * shape.dim[2];
      for (int64_t xx = 0; xx < shape.dim[2]; ++xx) {
        const int64_t shuffled = map ? map[row + xx] : row + xx;
        pipeline_voxel(x, input, target, shape, cfg, sv, b, z, y, xx, shuffled);
      }
    }
  });
}

// Runs the engine; `params` fills the per-sample parameters (random or explicit).
template <typename ParamsFn>
std::tuple<Tensor, Tensor> pipeline_cpu(const Tensor& x, const Shape& shape, const PipelineConfig& cfg,
                                        bool want_target, ParamsFn&& fill_params) {
  const Tensor xc = torch::stable::contiguous(x);
  Tensor input = torch::stable::empty_like(xc);
  Tensor target = want_target ? torch::stable::empty_like(xc) : input;
  if (xc.numel() == 0) return {input, target};
  std::vector<SampleParams> params(shape.batch);
  fill_params(params);
  dispatch_storage(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    run_cpu<T>(static_cast<const T*>(xc.const_data_ptr()), static_cast<T*>(input.mutable_data_ptr()),
               want_target ? static_cast<T*>(target.mutable_data_ptr()) : nullptr, shape, cfg, params);
  });
  return {input, target};
}

std::tuple<Tensor, Tensor> run_random(const Tensor& x, const Shape& s, const PipelineConfig& cfg, bool want_target) {
  return pipeline_cpu(x, s, cfg, want_target, [&](std::vector<SampleParams>& params) {
    torch::stable::parallel_for(0, s.batch, 64, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) params_body(cfg, s, params.data(), b);
    });
  });
}

std::tuple<Tensor, Tensor> models_genesis_cpu(Tensor x, double flip_p, double shuffle_p, int64_t num_windows,
                                              double nonlinear_p, double paint_p, double inpaint_rate, double lo,
                                              double hi, int64_t seed, int64_t sample_offset) {
  const char* op = "genesis::models_genesis";
  const Shape s = check_input(x, op);
  const PipelineConfig cfg = pipeline_config(s, flip_p, shuffle_p, num_windows, nonlinear_p, paint_p,
                                             inpaint_rate, lo, hi, seed, sample_offset, op);
  return run_random(x, s, cfg, true);
}

Tensor flip_cpu(Tensor x, double p, int64_t seed, int64_t off) {
  const Shape s = check_input(x, "genesis::flip");
  return std::get<0>(run_random(x, s, flip_config(s, p, seed, off, "genesis::flip"), false));
}

Tensor local_shuffle_cpu(Tensor x, double p, int64_t num_windows, int64_t seed, int64_t off) {
  const Shape s = check_input(x, "genesis::local_shuffle");
  return std::get<0>(run_random(x, s, shuffle_config(s, p, num_windows, seed, off, "genesis::local_shuffle"), false));
}

Tensor nonlinear_cpu(Tensor x, double p, double lo, double hi, int64_t seed, int64_t off) {
  const Shape s = check_input(x, "genesis::nonlinear");
  return std::get<0>(run_random(x, s, nonlinear_config(s, p, lo, hi, seed, off, "genesis::nonlinear"), false));
}

Tensor inpaint_cpu(Tensor x, double p, double lo, double hi, int64_t seed, int64_t off) {
  const Shape s = check_input(x, "genesis::inpaint");
  return std::get<0>(run_random(x, s, paint_config(s, true, p, lo, hi, seed, off, "genesis::inpaint"), false));
}

Tensor outpaint_cpu(Tensor x, double p, double lo, double hi, int64_t seed, int64_t off) {
  const Shape s = check_input(x, "genesis::outpaint");
  return std::get<0>(run_random(x, s, paint_config(s, false, p, lo, hi, seed, off, "genesis::outpaint"), false));
}

Tensor bezier_cpu(Tensor x, Tensor control_points, Tensor increasing, double lo, double hi) {
  const char* op = "genesis::bezier";
  const Shape s = check_input(x, op);
  check_bezier_args(x, control_points, increasing, s, op);
  const PipelineConfig cfg = nonlinear_config(s, 1.0, lo, hi, 0, 0, op);
  const Tensor cp = torch::stable::contiguous(control_points);
  const Tensor inc = torch::stable::contiguous(increasing);
  return std::get<0>(pipeline_cpu(x, s, cfg, false, [&](std::vector<SampleParams>& params) {
    const double* ctrl = static_cast<const double*>(cp.const_data_ptr());
    const uint8_t* up = static_cast<const uint8_t*>(inc.const_data_ptr());
    for (int64_t b = 0; b < s.batch; ++b) explicit_params_body(ctrl, up, params.data(), b);
  }));
}

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CPU, m) {
  m.impl("models_genesis", TORCH_BOX(&genesis::models_genesis_cpu));
  m.impl("flip", TORCH_BOX(&genesis::flip_cpu));
  m.impl("local_shuffle", TORCH_BOX(&genesis::local_shuffle_cpu));
  m.impl("nonlinear", TORCH_BOX(&genesis::nonlinear_cpu));
  m.impl("inpaint", TORCH_BOX(&genesis::inpaint_cpu));
  m.impl("outpaint", TORCH_BOX(&genesis::outpaint_cpu));
  m.impl("bezier", TORCH_BOX(&genesis::bezier_cpu));
}
