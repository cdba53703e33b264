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
  // Test hook: the CUDA kernels' bodies run over the whole grid on the CPU (csrc/emulate).
  m.def(
      "_emulated_cuda_models_genesis(Tensor x, float flip_p, float shuffle_p, int num_windows, "
      "float nonlinear_p, float paint_p, float inpaint_rate, float lo, float hi, int seed, "
      "int sample_offset) -> (Tensor, Tensor)");
  m.def(
      "_emulated_cuda_bezier(Tensor x, Tensor control_points, Tensor increasing, float lo, float hi) -> Tensor");
  // Test hook: the CUDA launch plan (bodies/launch_plan.h) for a shape, without a tensor or a GPU.
  m.def(
      "_launch_plan(int[] sizes, float shuffle_p, int num_windows, float nonlinear_p, bool params_given) -> int[]");
}

// `import genesis_ops._C` dlopens this library, which runs the static registrations. No pybind11.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&def);
}
