"""The rule the CUDA engine checks a GPU with (csrc/cuda/arch_fit.h), through its test hook: no
GPU needed. 0: the build runs there; 1: no code for that compute capability; 2: only PTX fits, and
it is newer than the driver's PTX compiler (which would fail at launch with
cudaErrorUnsupportedPtxVersion)."""

import pytest
import torch

import genesis_ops  # noqa: F401  (registers the ops)

RUNS, NO_CODE, PTX_TOO_NEW = 0, 1, 2
DEFAULT = "sm_80,sm_86,sm_89,sm_90,compute_90"  # the CI wheel's list


def fit(archs, cc, driver=13000, runtime=12080):
    major, minor = cc
    return torch.ops.genesis._arch_fit(archs, major, minor, driver, runtime)


@pytest.mark.parametrize(
    "archs,cc,want",
    [
        (DEFAULT, (9, 0), RUNS),  # machine code
        (DEFAULT, (8, 7), RUNS),  # sm_86: same major, minor >= 6
        (DEFAULT, (7, 5), NO_CODE),
        (DEFAULT, (10, 0), RUNS),  # PTX of 9.0, driver new enough
        ("sm_90a", (9, 0), RUNS),  # architecture-specific: exactly 9.0
        ("sm_90a", (10, 0), NO_CODE),
        ("sm_100f", (10, 0), RUNS),  # family: same major, minor >= 0
        ("sm_100f", (10, 3), RUNS),
        ("sm_103f", (10, 0), NO_CODE),  # family, but an older minor
        ("sm_100f", (12, 0), NO_CODE),  # another family
        ("sm_100", (10, 3), RUNS),
        ("compute_100f", (10, 3), RUNS),
        ("compute_100f", (12, 0), NO_CODE),
        ("compute_90a", (10, 0), NO_CODE),
        ("all-major", (7, 0), RUNS),  # CMake chose: accepted
    ],
)
def test_architecture_rules(archs, cc, want):
    assert fit(archs, cc) == want


@pytest.mark.parametrize("driver,want", [(12080, RUNS), (12090, RUNS), (13000, RUNS), (12040, PTX_TOO_NEW)])
def test_ptx_only_needs_a_driver_as_new_as_the_toolkit(driver, want):
    """PTX made by CUDA 12.8 (runtime 12080): a driver for 12.4 cannot compile it."""
    assert fit(DEFAULT, (10, 0), driver=driver, runtime=12080) == want
    assert fit("compute_100f", (10, 1), driver=driver, runtime=12080) == want


@pytest.mark.parametrize("driver", [12040, 11080])
def test_machine_code_needs_no_ptx_compiler(driver):
    """Machine code runs whatever PTX compiler the driver has (the driver's CUDA major version is
    checked separately, before this rule)."""
    assert fit(DEFAULT, (9, 0), driver=driver, runtime=12080) == RUNS
    assert fit("sm_90,compute_90", (9, 0), driver=driver, runtime=12080) == RUNS
