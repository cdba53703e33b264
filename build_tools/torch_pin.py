"""scikit-build-core dynamic-metadata provider: the runtime dependencies.

torch is pinned to the major.minor of the torch the extension is compiled against, so that an
isolated `pip install .` on a CPU machine (build torch 2.13.0+cpu) never pulls a different,
multi-GB CUDA torch at runtime (see ../shared/notes/build-research.md)."""
from importlib.metadata import version


def dynamic_metadata(settings, project):
    v = version("torch")  # e.g. "2.13.0+cpu" or "2.14.1"
    major, minor = v.split("+")[0].split(".")[:2]
    return {"dependencies": [f"torch=={major}.{minor}.*", "numpy>=1.24", "nibabel>=5", "matplotlib>=3.7"]}
