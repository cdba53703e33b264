// Operator schemas of torch.ops.genesis (the one place they are defined) and the Python module
// entry point. Kernels are registered per device in cpu/, cuda/ and emulate/.
#include <Python.h>

#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(genesis, m) {
  m.def(
      "models_genesis(Tensor x, float flip_p, float shuffle_p, int num_windows, float nonlinear_p, "
      "float paint_p, float inpaint_rate, float lo, float hi, int seed, int sample_offset) -> (Tensor, Tensor)");
  m.def("flip(Tensor x, float p, int seed, int sample_offset) -> Tensor");
  m.def("local_shuffle(Tensor x, float p, int num_windows, int seed, int sample_offset) -> Tensor");
  m.def("nonlinear(Tensor x, float p, float lo, float hi, int seed, int sample_offset) -> Tensor");
  m.def("inpaint(Tensor x, float p, float lo, float hi, int seed, int sample_offset) -> Tensor");
  m.def("outpaint(Tensor x, float p, float lo, float hi, int seed, int sample_offset) -> Tensor");
  m.def("bezier(Tensor x, Tensor control_points, Tensor increasing, float lo, float hi) -> Tensor");
  // Corruption masks (docs/SPEC.md, section 4.7): the ops above that corrupt voxels, with the mask
  // of what they did, uint8 (B, 1, *spatial), written in the same pass (bit 1: in a shuffle
  // window; bit 2: replaced by fill noise). The outputs before it are the plain op's, bit for bit.
  m.def(
      "models_genesis_masked(Tensor x, float flip_p, float shuffle_p, int num_windows, float nonlinear_p, "
      "float paint_p, float inpaint_rate, float lo, float hi, int seed, int sample_offset) "
      "-> (Tensor, Tensor, Tensor)");
  m.def("local_shuffle_masked(Tensor x, float p, int num_windows, int seed, int sample_offset) -> (Tensor, Tensor)");
  m.def("inpaint_masked(Tensor x, float p, float lo, float hi, int seed, int sample_offset) -> (Tensor, Tensor)");
  m.def("outpaint_masked(Tensor x, float p, float lo, float hi, int seed, int sample_offset) -> (Tensor, Tensor)");
  // Mask-only: bool (B, 1, *spatial) from the same words, no image written; only x's shape and
  // device are read (any dtype). paint_mask's gates: paint_p and inpaint_rate as in models_genesis,
  // inpaint_p and outpaint_p the inpaint and outpaint ops' own p (1 in the fused pipeline).
  m.def(
      "paint_mask(Tensor x, float paint_p, float inpaint_rate, float inpaint_p, float outpaint_p, int seed, "
      "int sample_offset) -> Tensor");
  m.def("shuffle_mask(Tensor x, float p, int num_windows, int seed, int sample_offset) -> Tensor");
  // Test hook: the CUDA kernels' bodies run over the whole grid on the CPU (csrc/emulate).
  m.def(
      "_emulated_cuda_models_genesis(Tensor x, float flip_p, float shuffle_p, int num_windows, "
      "float nonlinear_p, float paint_p, float inpaint_rate, float lo, float hi, int seed, "
      "int sample_offset) -> (Tensor, Tensor)");
  m.def("_emulated_cuda_bezier(Tensor x, Tensor control_points, Tensor increasing, float lo, float hi) -> Tensor");
  m.def(
      "_emulated_cuda_models_genesis_masked(Tensor x, float flip_p, float shuffle_p, int num_windows, "
      "float nonlinear_p, float paint_p, float inpaint_rate, float lo, float hi, int seed, "
      "int sample_offset) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_emulated_cuda_paint_mask(Tensor x, float paint_p, float inpaint_rate, float inpaint_p, float outpaint_p, "
      "int seed, int sample_offset) -> Tensor");
  m.def("_emulated_cuda_shuffle_mask(Tensor x, float p, int num_windows, int seed, int sample_offset) -> Tensor");
  // Test hook: the CUDA launch plan (bodies/launch_plan.h) for a shape, without a tensor or a GPU.
  m.def(
      "_launch_plan(int[] sizes, float shuffle_p, int num_windows, float nonlinear_p, bool params_given, "
      "int free_bytes=0) -> int[]");
}

// `import genesis_ops._C` dlopens this library, which runs the static registrations. No pybind11.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&def);
}
