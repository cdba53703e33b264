"""The installed build: one abi3 module, a torch requirement that keeps the user's torch, build
facts that say what the build holds, and CUDA kernels (real or explaining) for every op."""

import importlib.metadata
import re

import pytest
import torch

import genesis_ops as go
from op_table import PUBLIC, TABLE

OPS = PUBLIC
X = torch.rand(2, 1, 6, 6, 4)


def call_cuda_kernel(name):
    """Runs the op's registered CUDA kernel (no GPU needed to reach it) on CPU tensors."""
    op = getattr(torch.ops.genesis, name).default
    return op.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA), *TABLE[name].raw_args(X))


def test_torch_requirement_is_the_stable_abi_floor_not_a_pin():
    reqs = [r for r in importlib.metadata.requires("genesis-ops") if re.match(r"torch\b", r)]
    assert reqs == ["torch>=2.10"], reqs


def test_one_limited_api_module():
    assert go._C.__file__.endswith("/_C.abi3.so"), go._C.__file__


def test_build_info_says_what_the_build_holds():
    info = go.build_info()
    assert info["cuda_kernels"] is go.has_cuda_kernels()
    assert info["runtime_torch"] == torch.__version__ and info["stable_abi_min_torch"] == "2.10"
    if info["cuda_kernels"]:
        assert info["cuda_archs"] and info["nvcc_version"]
        for a in info["cuda_archs"]:
            assert re.fullmatch(r"(sm|compute)_\d+[a-z]?|all|all-major|native", a), a
    else:
        assert info["cuda_archs"] == [] and info["nvcc_version"] is None


@pytest.mark.parametrize("name", OPS)
def test_every_op_has_a_cuda_kernel(name):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"genesis::{name}", "CUDA")


@pytest.mark.skipif(go.has_cuda_kernels(), reason="this build holds the CUDA kernels")
@pytest.mark.parametrize("name", OPS)
def test_cpu_only_build_explains_how_to_get_cuda_kernels(name):
    with pytest.raises(RuntimeError, match=rf"genesis::{name}: .*built without CUDA kernels.*nvcc on PATH"):
        call_cuda_kernel(name)


@pytest.mark.skipif(not go.has_cuda_kernels(), reason="built without CUDA kernels")
@pytest.mark.parametrize("name", OPS)
def test_cuda_build_registers_the_real_kernels(name):
    # The real kernel checks its input's device before touching CUDA; the placeholder of a
    # CPU-only build would say "built without CUDA kernels" instead.
    with pytest.raises(RuntimeError, match=rf"genesis::{name}: x must be a CUDA tensor"):
        call_cuda_kernel(name)
