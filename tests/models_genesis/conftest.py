"""Shared fixtures for the models_genesis tests (CPU, tiny models). They read nothing outside the
repository: the bundled demo CT and its vertebra labels, and a synthetic chest CT with a lesion
label (stored LPS, anisotropic voxels) made here."""

import os
import types

import pytest
import torch

# The installed package: the wheel, or with the development install the sources in python/.
import models_genesis


def _subprocess_env():
    """Environment for child processes (the same interpreter, so the same install): few threads."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# One intra-op thread: the test machine has 2 cores that other jobs share, and a 2-thread
# OpenMP pool next to a busy process slows convolutions down by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# The data every test reads ships with the repository (the package's demo volumes) or is made
# here: a clone with nothing beside it runs the whole suite.
DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(models_genesis.__file__)), "demo")


def _demo(name):
    p = os.path.join(DEMO_DIR, name)
    assert os.path.exists(p), f"bundled demo volume {p} is missing from the package"
    return p


@pytest.fixture
def demo_file():
    """demo_file(name) -> path of a bundled demo volume: "ct_abdomen.nii.gz" (abdominal CT, RAS,
    122x101x112 int16 HU, 3 mm) or "ct_abdomen_vertebrae.nii.gz" (its vertebra labels 26..33)."""
    return _demo


@pytest.fixture
def ct_path():
    return _demo("ct_abdomen.nii.gz")


# A chest-CT-like volume with a small lesion, made once per session: stored LPS (the common
# DICOM-derived orientation, unlike the RAS demo CT) with anisotropic voxels (0.7, 0.7, 5) mm.
LUNG_SHAPE = (64, 56, 12)
LUNG_ZOOMS = (0.7, 0.7, 5.0)
LESION_CENTRE, LESION_RADIUS = (20, 24, 6), 3  # voxel index in the stored (LPS) array


@pytest.fixture(scope="session")
def lung_ct(tmp_path_factory):
    """A synthetic chest CT: .image and .labels (paths), .shape, .lesion_centre (voxel index in
    the stored LPS array). The image: air -1000 HU outside an
    elliptical body (soft tissue ~40 HU), two lungs (~-850 HU), a lesion (~60 HU, radius 3 voxels
    in-plane, 3 slices) in one lung, Gaussian noise; the label file marks the lesion with 1."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(7)
    X, Y, Z = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in LUNG_SHAPE), indexing="ij")
    cx, cy = (LUNG_SHAPE[0] - 1) / 2, (LUNG_SHAPE[1] - 1) / 2
    body = ((X - cx) / 30) ** 2 + ((Y - cy) / 25) ** 2 <= 1
    lungs = np.zeros(LUNG_SHAPE, bool)
    for lx in (cx - 13, cx + 13):
        lungs |= ((X - lx) / 10) ** 2 + ((Y - cy) / 16) ** 2 <= 1
    ex, ey, ez = LESION_CENTRE
    lesion = ((X - ex) ** 2 + (Y - ey) ** 2 <= LESION_RADIUS**2) & (np.abs(Z - ez) <= 1)
    hu = np.where(body, 40.0, -1000.0)
    hu = np.where(lungs, -850.0, hu)
    hu = np.where(lesion, 60.0, hu)
    hu = np.rint(hu + rng.normal(0, 20, LUNG_SHAPE)).clip(-1024, 3071).astype(np.int16)
    affine = np.diag([-LUNG_ZOOMS[0], -LUNG_ZOOMS[1], LUNG_ZOOMS[2], 1.0])  # L, P, S
    d = tmp_path_factory.mktemp("lung")
    img, lab = d / "ct_lung.nii.gz", d / "ct_lung_lesion.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), img)
    nib.save(nib.Nifti1Image(lesion.astype(np.uint8), affine), lab)
    return types.SimpleNamespace(image=str(img), labels=str(lab), shape=LUNG_SHAPE, lesion_centre=LESION_CENTRE)


@pytest.fixture
def subprocess_env():
    return _subprocess_env()
