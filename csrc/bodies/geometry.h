#pragma once
// Shapes and boxes. Spatial dims are always held as 3 (D, H, W); a 2D input has D = 1 and
// nd = 2, and random draws are made only for the nd real axes (axis index a - (3 - nd)).
#include "bodies/host_device.h"

namespace genesis {

struct Shape {
  int64_t batch;     // B
  int64_t channels;  // C
  int nd;            // 2 or 3 spatial dims
  int64_t dim[3];    // D, H, W (D = 1 when nd == 2)
  GENESIS_HD int64_t spatial() const { return dim[0] * dim[1] * dim[2]; }
  GENESIS_HD int first_axis() const { return 3 - nd; }
};

struct Box {
  int32_t start[3];
  int32_t size[3];
  GENESIS_HD bool contains(int64_t z, int64_t y, int64_t x) const {
    return z >= start[0] && z < start[0] + size[0] && y >= start[1] && y < start[1] + size[1] && x >= start[2] &&
           x < start[2] + size[2];
  }
  GENESIS_HD int64_t volume() const { return static_cast<int64_t>(size[0]) * size[1] * size[2]; }
};

GENESIS_HD int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
GENESIS_HD int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

}  // namespace genesis
