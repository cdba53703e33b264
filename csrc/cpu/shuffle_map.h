#pragma once
// The source map of local pixel shuffling on the CPU: src[v] = the voxel (in target
// coordinates) that voxel v of one sample receives. Torch-free.
#include <cstdint>
#include <vector>

#include "bodies/params.h"

namespace genesis {
namespace cpu {

// Local pixel shuffling on the CPU: src[v] = the voxel (in target coordinates) that voxel v
// receives; the last window covering a voxel owns it. Each window that owns voxels runs its
// permutation once (the GPU too, one warp per window: launch_bodies.h). Tests check that both
// agree with the reference. Two passes:
//  1. Claims, from the last window back, in a bitmap (one bit per voxel, rows (z, y) of 64-bit
//     words): a window's row segment costs a few word operations, with no branch per voxel,
//     and the bitmap of a 64x64x32 volume (32 KB) stays in L1. They tell, per window, whether
//     it owns voxels and pmin, its smallest owned local position.
//  2. Permutations, in one of two orders (the same bits either way):
//     - window order (from the first window on), each window writing src for its positions
//       >= pmin as its steps decide them: later windows overwrite earlier ones, so the last
//       write to a voxel is its owner's, and no write needs a per-voxel ownership test. The
//       positions it writes but does not own belong to later windows, which overwrite them.
//     - plane order (windows sorted by first plane), where the source map is over 8 MiB: each
//       window permutes in place, then writes only the voxels it owns, one masked store per
//       row from the owned bits pass 1 recorded (16 columns per chunk), so the order does not
//       matter. In window order each window's rows are cache misses anywhere in a map larger
//       than the caches; in plane order the windows being written stay within 2 x dim/10 planes
//       (and each plane is set to the identity just before it is first written). Measured at
//       2x160^3, 1 thread (AMD EPYC, AVX-512): the shuffle alone 0.74x the time, the
//       GenesisConfig() pipeline 0.84x; below 8 MiB (2x96^3, 8x128x128x64, 32x64x64x32) the
//       plane order was 1.05x slower (recording and masked stores cost more than the misses
//       they save while the map fits the caches).
// a[p] is final after step p (later steps only touch positions below p), and only owned
// positions matter, so a window runs steps n-1 down to max(1, pmin) only and draws Philox
// blocks only for those.
// Windows are tiny (sides 1..dim/10) and of random shapes, so every loop whose length depends
// on the window, and every branch on the data, tends to be mispredicted: the code below keeps
// to few loops per window and to conditional moves (measured: that, not the arithmetic, was
// most of the time).
struct ShuffleScratch {
  std::vector<Box> windows;
  std::vector<uint64_t> taken;                           // claim bitmap: bit x % 64 of word x / 64 of row (z, y)
  std::vector<uint32_t> first;                           // per window: max(1, pmin), or 0 if it owns no voxel
  std::vector<uint32_t> batch;                           // windows of the current Philox batch
  std::vector<uint32_t> lane_block, lane_stream, words;  // Philox lanes of the batch (block, stream)
  uint32_t lanes = 0;                                    // and how many are used
  std::vector<int32_t> perm;
  // Plane order only: per window row, the voxels it owns in 16-column chunks (bit i of chunk c
  // = column 16c + i), from own[own_begin[k]].
  std::vector<uint16_t> own;
  std::vector<uint32_t> own_begin;
  std::vector<uint32_t> order;       // windows in the order they are permuted
  std::vector<int32_t> plane_count;  // the counting sort by first plane
  bool plane_order = false;
  // Spatial offsets of the voxels of window shapes (sz, sy, sx) from their first voxel, in
  // row-major order, built when a shape first occurs: offsets[shape_begin[id] + p], -1 if not
  // built yet.
  std::vector<int32_t> offsets;
  std::vector<int32_t> shape_begin;
};

// 64-bit words per row (z, y) of a claim bitmap: bit x % 64 of word x / 64 is voxel x of the row.
inline int64_t claim_row_words(const Shape& shape) { return (shape.dim[2] + 63) / 64; }

// src[0 .. spatial) of sample b (b's sample index is sample_index(cfg, b)), whose parameters are
// `params`. Entries of voxels that b's painting replaces may hold any voxel: windows painted over
// are not permuted. With claims not null, the claim bitmap is built there (D x H x
// claim_row_words(shape) words) instead of in sc.taken, and is, on return, the union of the
// sample's windows: the voxels some window owns (the corruption mask's bit kMaskShuffled).
void shuffle_source_map(const PipelineConfig& cfg, const Shape& shape, int64_t b, const SampleParams& params,
                        int32_t* src, ShuffleScratch& sc, uint64_t* claims = nullptr);

// Only that union, in claims (pass 1 alone: no permutation is drawn): shuffle_mask.
void shuffle_claims(const PipelineConfig& cfg, const Shape& shape, int64_t b, uint64_t* claims, ShuffleScratch& sc);

}  // namespace cpu
}  // namespace genesis
