// The CPU's projection, fusion and merge loops, one pass each (ovlift/kernels/native.py
// compiles and loads this file; the torch ops in projection.py and fusion.py are the
// reference and the CUDA path). Torch ops stream every intermediate of these loops through
// memory and index_add_ pays a dispatch per row; here each point is projected in registers,
// each accumulator row is read and written once per frame batch, and each batch's pairs are
// placed at their final offsets in one pass.
//
// Exactness: the arithmetic is projection.py's, operation by operation, in float64
// (built with -ffp-contract=off: no fused multiply-add), and each accumulator row adds
// its views one after the other in the order given, as index_add_ does: results are
// bit-identical to the torch path's.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

using at::Tensor;

// -- projection -------------------------------------------------------------------------

struct Camera {
  double m[12];  // rows 0-2 of world_to_cam
  double fx, cx, fy, cy;
};

std::vector<Camera> cameras(const Tensor& world_to_cam, const Tensor& intrinsics) {
  const double* m = world_to_cam.data_ptr<double>();
  const double* k = intrinsics.data_ptr<double>();
  std::vector<Camera> out(world_to_cam.size(0));
  for (size_t f = 0; f < out.size(); f++) {
    std::memcpy(out[f].m, m + 16 * f, 12 * sizeof(double));
    out[f].fx = k[9 * f + 0], out[f].cx = k[9 * f + 2], out[f].fy = k[9 * f + 4], out[f].cy = k[9 * f + 5];
  }
  return out;
}

// projection.py's project_points for one point: c = R p + t, x = fx * c_x / z + cx.
inline void project(const Camera& c, const double* p, double& z, double& x, double& y) {
  const double u = c.m[0] * p[0] + c.m[1] * p[1] + c.m[2] * p[2] + c.m[3];
  const double v = c.m[4] * p[0] + c.m[5] * p[1] + c.m[6] * p[2] + c.m[7];
  z = c.m[8] * p[0] + c.m[9] * p[1] + c.m[10] * p[2] + c.m[11];
  x = c.fx * u / z + c.cx;
  y = c.fy * v / z + c.cy;
}

// round(t) half to even, as torch.round, for |t| < 2^51 (larger t fail the bounds tests anyway).
inline double round_even(double t) { return (t + 0x1.8p52) - 0x1.8p52; }

inline bool inside(double r, int64_t lo, int64_t hi) { return (r >= lo) & (r < hi); }  // false for NaN

// Rounded pixel (col, row) of n points in one camera, or -1 where z <= 0 or the pixel falls
// outside [cut, size - cut): a loop the compiler vectorises (AVX2 where the CPU has it).
#if defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
void pixels(const Camera& c, const double* p, int64_t n, int64_t height, int64_t width, int64_t cut, double* z,
            double* col, double* row) {
  for (int64_t i = 0; i < n; i++) {
    double zi, x, y;
    project(c, p + 3 * i, zi, x, y);
    // near the image (false for NaN), so within round_even's range, then rounded into it
    const bool near = (zi > 0) & (x > cut - 1.0) & (x < width - cut + 1.0) & (y > cut - 1.0) & (y < height - cut + 1.0);
    const double cx = round_even(x), cy = round_even(y);
    const bool ok = near & inside(cx, cut, width - cut) & inside(cy, cut, height - cut);  // & : no branches
    z[i] = zi, col[i] = ok ? cx : -1.0, row[i] = ok ? cy : -1.0;
  }
}

struct Pair {
  int64_t point, frame, row, col;
};

struct DepthTest {
  const float* depth32 = nullptr;  // (B, Hd, Wd) in float32 or float64, or neither: no test
  const double* depth64 = nullptr;
  int64_t height = 0, width = 0;
  std::vector<Camera> cameras;  // the depth camera's, or empty: registered with colour
  double tolerance = 0;
  bool relative = true;

  bool any() const { return depth32 || depth64; }
  double at(int64_t i) const { return depth32 ? depth32[i] : depth64[i]; }  // float32: as .to(float64)

  bool agrees(int64_t f, const double* p, double z, int64_t row, int64_t col) const {
    double d = 0, zp = z;
    if (cameras.empty()) {
      d = at((f * height + row) * width + col);
    } else {
      double x, y;
      project(cameras[f], p, zp, x, y);
      const bool near = zp > 0 && x > -1.0 && x < width + 1.0 && y > -1.0 && y < height + 1.0;
      const double cx = round_even(x), cy = round_even(y);
      if (near && inside(cx, 0, width) && inside(cy, 0, height)) {
        d = at((f * height + static_cast<int64_t>(cy)) * width + static_cast<int64_t>(cx));
      }
    }
    const double tol = relative ? tolerance * d : tolerance;
    return d > 0 && std::abs(d - zp) <= tol;
  }
};

std::tuple<Tensor, Tensor, Tensor> visible_pairs(
    const Tensor& points, const Tensor& world_to_cam, const Tensor& intrinsics, int64_t height, int64_t width,
    int64_t cut, const std::optional<Tensor>& depth, const std::optional<Tensor>& depth_world_to_cam,
    const std::optional<Tensor>& depth_intrinsics, double tolerance, bool relative) {
  TORCH_CHECK(points.scalar_type() == at::kDouble && points.is_contiguous() && points.size(1) == 3);
  TORCH_CHECK(world_to_cam.scalar_type() == at::kDouble && world_to_cam.is_contiguous());
  TORCH_CHECK(intrinsics.scalar_type() == at::kDouble && intrinsics.is_contiguous());
  TORCH_CHECK(cut >= 0, "visible_pairs: cut_bound ", cut, " < 0");
  const int64_t n = points.size(0), frames = world_to_cam.size(0);
  const std::vector<Camera> colour = cameras(world_to_cam, intrinsics);
  DepthTest test;
  if (depth) {
    TORCH_CHECK(depth->is_contiguous() && depth->dim() == 3 && depth->size(0) == frames);
    if (depth->scalar_type() == at::kFloat) {
      test.depth32 = depth->data_ptr<float>();
    } else {
      test.depth64 = depth->data_ptr<double>();  // checks the dtype
    }
    test.height = depth->size(1), test.width = depth->size(2);
    test.tolerance = tolerance, test.relative = relative;
    if (depth_world_to_cam) test.cameras = cameras(*depth_world_to_cam, *depth_intrinsics);
  }
  const double* p = points.data_ptr<double>();
  const int64_t block = 512, blocks = (n + block - 1) / block;
  std::vector<std::vector<Pair>> found(blocks);  // in point order, frames ascending within a point
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<double> z(frames * block), col(frames * block), row(frames * block);
    std::vector<Pair> scratch(frames * block);
    for (int64_t b = b0; b < b1; b++) {
      const int64_t i0 = b * block, count = std::min(n, i0 + block) - i0;
      for (int64_t f = 0; f < frames; f++) {
        double *zf = &z[f * block], *cf = &col[f * block], *rf = &row[f * block];
        pixels(colour[f], p + 3 * i0, count, height, width, cut, zf, cf, rf);
        for (int64_t i = 0; test.any() && i < count; i++) {
          const int64_t r = static_cast<int64_t>(rf[i]), c = static_cast<int64_t>(cf[i]);
          if (c >= 0 && !test.agrees(f, p + 3 * (i0 + i), zf[i], r, c)) cf[i] = rf[i] = -1;
        }
      }
      size_t kept = 0;  // compaction without branches: write every pair, advance past the visible
      for (int64_t i = 0; i < count; i++) {
        for (int64_t f = 0; f < frames; f++) {
          const int64_t j = f * block + i;
          scratch[kept] = {i0 + i, f, static_cast<int64_t>(row[j]), static_cast<int64_t>(col[j])};
          kept += col[j] >= 0;
        }
      }
      found[b].assign(scratch.begin(), scratch.begin() + kept);
    }
  });
  int64_t total = 0;
  for (const auto& pairs : found) total += static_cast<int64_t>(pairs.size());
  auto options = points.options().dtype(at::kLong);
  Tensor point = at::empty({total}, options), frame = at::empty_like(point), pixel = at::empty({total, 2}, options);
  int64_t *pp = point.data_ptr<int64_t>(), *pf = frame.data_ptr<int64_t>(), *px = pixel.data_ptr<int64_t>();
  int64_t o = 0;  // one thread: a copy is not worth a second parallel region (a wait where cores are shared)
  for (const auto& pairs : found) {
    for (const Pair& q : pairs) pp[o] = q.point, pf[o] = q.frame, px[2 * o] = q.row, px[2 * o + 1] = q.col, o++;
  }
  return {point, frame, pixel};
}

// -- fusion -----------------------------------------------------------------------------

// One point's views folded into its accumulator row: acc = op(acc, view) view by view.
template <typename T, bool MAX>
void fold_scalar(float* acc, const T* const* views, int64_t count, int64_t channels) {
  for (int64_t c = 0; c < channels; c++) {
    float a = acc[c];
    for (int64_t v = 0; v < count; v++) {
      const float x = static_cast<float>(views[v][c]);
      if (MAX) {
        if (x > a) a = x;  // torch-scatter's rule: only a greater value replaces (NaN never does)
      } else {
        a = a + x;
      }
    }
    acc[c] = a;
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,f16c"))) inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,f16c"))) inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
__attribute__((target("avx2,f16c"))) inline __m256 load8(const c10::BFloat16* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

// fold_scalar in 8-lane registers, 64 channels at a time held across the views.
template <typename T, bool MAX>
__attribute__((target("avx2,f16c"))) void fold_avx2(float* acc, const T* const* views, int64_t count,
                                                      int64_t channels) {
  int64_t c = 0;
  for (; c + 64 <= channels; c += 64) {
    __m256 a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm256_loadu_ps(acc + c + 8 * k);
    for (int64_t v = 0; v < count; v++) {
      for (int k = 0; k < 8; k++) {
        const __m256 x = load8(views[v] + c + 8 * k);
        a[k] = MAX ? _mm256_blendv_ps(a[k], x, _mm256_cmp_ps(x, a[k], _CMP_GT_OQ)) : _mm256_add_ps(a[k], x);
      }
    }
    for (int k = 0; k < 8; k++) _mm256_storeu_ps(acc + c + 8 * k, a[k]);
  }
  std::vector<const T*> rest(views, views + count);
  for (auto& r : rest) r += c;
  fold_scalar<T, MAX>(acc + c, rest.data(), count, channels - c);
}
#endif

template <typename T, bool MAX>
void fold_typed(Tensor& acc, const Tensor& table, const Tensor& point, const Tensor& row) {
  const int64_t channels = acc.size(1), n = point.numel(), points = acc.size(0), rows = table.size(0);
  float* out = acc.data_ptr<float>();
  const T* tab = table.data_ptr<T>();
  const int64_t* pt = point.data_ptr<int64_t>();
  const int64_t* rw = row.data_ptr<int64_t>();
#if defined(__x86_64__)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#endif
  // Each worker takes the points whose first view falls in its range: a point is one worker's.
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    std::vector<const T*> views;
    int64_t s = begin;
    while (s > 0 && s < end && pt[s] == pt[s - 1]) s++;
    while (s < end) {
      const int64_t p = pt[s];
      TORCH_CHECK(p >= 0 && p < points && (s == 0 || pt[s - 1] < p), "fold_rows: points must be sorted and in range");
      views.clear();
      for (; s < n && pt[s] == p; s++) {
        TORCH_CHECK(rw[s] >= 0 && rw[s] < rows, "fold_rows: row index out of range");
        views.push_back(tab + rw[s] * channels);
      }
#if defined(__x86_64__)
      if (avx2) {
        fold_avx2<T, MAX>(out + p * channels, views.data(), static_cast<int64_t>(views.size()), channels);
        continue;
      }
#endif
      fold_scalar<T, MAX>(out + p * channels, views.data(), static_cast<int64_t>(views.size()), channels);
    }
  });
}

template <typename T>
void fold_dtype(Tensor& acc, const Tensor& table, const Tensor& point, const Tensor& row, bool max) {
  return max ? fold_typed<T, true>(acc, table, point, row) : fold_typed<T, false>(acc, table, point, row);
}

void fold_rows(Tensor acc, const Tensor& table, const Tensor& point, const Tensor& row, bool max) {
  TORCH_CHECK(acc.scalar_type() == at::kFloat && acc.is_contiguous() && acc.dim() == 2);
  TORCH_CHECK(table.is_contiguous() && table.dim() == 2 && table.size(1) == acc.size(1));
  TORCH_CHECK(point.scalar_type() == at::kLong && row.scalar_type() == at::kLong && point.numel() == row.numel());
  TORCH_CHECK(point.is_contiguous() && row.is_contiguous());
  switch (table.scalar_type()) {
    case at::kHalf: return fold_dtype<c10::Half>(acc, table, point, row, max);
    case at::kBFloat16: return fold_dtype<c10::BFloat16>(acc, table, point, row, max);
    case at::kFloat: return fold_dtype<float>(acc, table, point, row, max);
    default: TORCH_CHECK(false, "fold_rows: features must be float16, bfloat16 or float32, not ", table.scalar_type());
  }
}

// -- merging frame batches by point ------------------------------------------------------

// The placing pass of a counting sort: view i goes to cursor[point[i]], which then advances.
// Bytes are copied as they are (FB: a frame index's, XB: a pixel's row of two).
template <size_t FB, size_t XB>
void place_bytes(int64_t* cursor, const int64_t* point, const char* frame, const char* pixel, char* frame_out,
                 char* pixel_out, int64_t m, int64_t points, int64_t total) {
  for (int64_t i = 0; i < m; i++) {
    const int64_t p = point[i];
    TORCH_CHECK(p >= 0 && p < points && cursor[p] < total, "place_by_point: point index out of range");
    const int64_t d = cursor[p]++;
    std::memcpy(frame_out + d * FB, frame + i * FB, FB);
    std::memcpy(pixel_out + d * XB, pixel + i * XB, XB);
  }
}

template <size_t FB>
void place_pixels(int64_t xb, int64_t* cursor, const int64_t* point, const char* frame, const char* pixel,
                  char* frame_out, char* pixel_out, int64_t m, int64_t points, int64_t total) {
  switch (xb) {
    case 4: return place_bytes<FB, 4>(cursor, point, frame, pixel, frame_out, pixel_out, m, points, total);
    case 8: return place_bytes<FB, 8>(cursor, point, frame, pixel, frame_out, pixel_out, m, points, total);
    case 16: return place_bytes<FB, 16>(cursor, point, frame, pixel, frame_out, pixel_out, m, points, total);
    default: TORCH_CHECK(false, "place_by_point: pixels of ", xb, " bytes");
  }
}

void place_by_point(Tensor cursor, const Tensor& point, const Tensor& frame, const Tensor& pixel, Tensor frame_out,
                    Tensor pixel_out) {
  TORCH_CHECK(cursor.scalar_type() == at::kLong && point.scalar_type() == at::kLong);
  TORCH_CHECK(frame.scalar_type() == frame_out.scalar_type() && pixel.scalar_type() == pixel_out.scalar_type());
  TORCH_CHECK(pixel.dim() == 2 && pixel.size(1) == 2);
  TORCH_CHECK(point.numel() == frame.numel() && point.numel() == pixel.size(0));
  const Tensor* all[] = {&cursor, &point, &frame, &pixel, &frame_out, &pixel_out};
  for (const Tensor* t : all) TORCH_CHECK(t->is_contiguous());
  const int64_t fb = frame.element_size(), xb = 2 * pixel.element_size();
  int64_t* c = cursor.data_ptr<int64_t>();
  const int64_t* p = point.data_ptr<int64_t>();
  const auto* f = static_cast<const char*>(frame.data_ptr());
  const auto* x = static_cast<const char*>(pixel.data_ptr());
  auto *fo = static_cast<char*>(frame_out.data_ptr()), *xo = static_cast<char*>(pixel_out.data_ptr());
  const int64_t m = point.numel(), points = cursor.numel(), total = frame_out.numel();
  TORCH_CHECK(fb == 4 || fb == 8, "place_by_point: frame indices of ", fb, " bytes");
  if (fb == 4) return place_pixels<4>(xb, c, p, f, x, fo, xo, m, points, total);
  place_pixels<8>(xb, c, p, f, x, fo, xo, m, points, total);
}

}  // namespace

TORCH_LIBRARY(ovlift, m) {
  m.def(
      "visible_pairs(Tensor points, Tensor world_to_cam, Tensor intrinsics, int height, int width, int cut, "
      "Tensor? depth, Tensor? depth_world_to_cam, Tensor? depth_intrinsics, float tolerance, bool relative) "
      "-> (Tensor, Tensor, Tensor)");
  m.def("fold_rows(Tensor(a!) acc, Tensor table, Tensor point, Tensor row, bool max) -> ()");
  m.def(
      "place_by_point(Tensor(a!) cursor, Tensor point, Tensor frame, Tensor pixel, Tensor(b!) frame_out, "
      "Tensor(c!) pixel_out) -> ()");
}

TORCH_LIBRARY_IMPL(ovlift, CPU, m) {
  m.impl("visible_pairs", &visible_pairs);
  m.impl("fold_rows", &fold_rows);
  m.impl("place_by_point", &place_by_point);
}
