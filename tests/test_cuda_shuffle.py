"""GPU-only checks of the CUDA launch plan's paths (skipped without a GPU; on machines without one,
tests/test_emulated_cuda.py runs the same bodies over the same grids on the CPU): the window kernel
in shared memory and in its global fallback, samples past gridDim.y's 65535, and explicit control
points outside [0, 1]. Every result must equal the CPU kernels' bit for bit."""

import pytest
import torch

import genesis_ops as go

# Like test_cuda.py: a GPU without CUDA kernels fails there (test_cuda_kernels_were_built), not here.
pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and go.has_cuda_kernels()), reason="needs a GPU and a CUDA build"
)


def _same_on_gpu(fn, x):
    got = fn(x.cuda()).cpu()
    assert torch.equal(got, fn(x))


@pytest.mark.parametrize("shape", [(2, 1, 64, 64, 32), (1, 1, 160, 160, 160), (2, 3, 40, 33)])
def test_cuda_shuffle_windows_in_shared_memory(shape):
    _same_on_gpu(lambda t: go.local_shuffle(t, p=1.0, num_windows=10000, seed=4), torch.rand(shape))


@pytest.mark.parametrize("shape", [(2, 1, 800, 800), (1, 1, 20, 560, 560)])
def test_cuda_shuffle_large_windows_in_global_scratch(shape):
    _same_on_gpu(lambda t: go.local_shuffle(t, p=1.0, num_windows=500, seed=6), torch.rand(shape))


@pytest.mark.parametrize(
    "shape, cfg, seed",
    [
        # 70000 samples: the voxel grid's y (65535 at most) strides over samples
        ((70000, 1, 4, 6), go.GenesisConfig(num_windows=3, shuffle_p=1.0, paint_p=1.0), 2),
        # odd widths: a thread's 4 voxels (one Philox block of noise) span rows and planes
        ((3, 2, 5, 7, 3), go.GenesisConfig(shuffle_p=1.0, paint_p=1.0, num_windows=50), 8),
    ],
    ids=["more_samples_than_grid_y", "noise_groups_across_rows"],
)
def test_cuda_fused_pipeline_equals_cpu(shape, cfg, seed):
    x = torch.rand(*shape)
    gi, gt = go.models_genesis(x.cuda(), cfg, seed=seed)
    ci, ct = go.models_genesis(x, cfg, seed=seed)
    assert torch.equal(gi.cpu(), ci) and torch.equal(gt.cpu(), ct)


def test_cuda_bezier_control_points_outside_unit_square():
    x = torch.rand(3, 1, 16, 16, 8)
    cp = torch.tensor(
        [[-0.5, 0.2, 1.7, 0.9], [0.3, float("nan"), 0.6, float("inf")], [2.0, -1.0, 0.5, 0.5]], dtype=torch.float64
    )
    inc = torch.tensor([True, False, True])
    got = go.bezier(x.cuda(), cp.cuda(), inc.cuda()).cpu()
    assert torch.equal(got, go.bezier(x, cp, inc))
