"""Compatibility face of the data modules: everything that used to live here, re-exported.

The code lives in :mod:`.readers` (files in, canonical arrays out), :mod:`.subjects` (channel
files of one case), :mod:`.preprocess` (resampling, normalisation, loading), :mod:`.samplers`
(random cubes) and :mod:`.splits` (training / validation splits)."""

from __future__ import annotations

from .readers import (  # noqa: F401
    NIFTI_SUFFIXES,
    ITK_SUFFIXES,
    VOLUME_SUFFIXES,
    VOLUME_KINDS,
    SERIES_SEP,
    DEMO_DIR,
    DEMO_CT,
    DEMO_LABELS,
    VolumeError,
    _one_line,
    is_nifti,
    is_volume_file,
    is_dicom_file,
    split_series,
    dicom_series,
    _list_file,
    _walk,
    find_volumes,
    Volume,
    channels_first,
    read_nifti,
    itk_affine,
    _read_itk,
    read_image,
    to_original_grid,
    save_like,
)
from .subjects import (  # noqa: F401
    CHANNEL_KEY,
    AFFINE_ATOL,
    channel_names,
    Subject,
    _pattern_regex,
    _fill,
    find_subjects,
    image_sources,
    channel_count,
)
from .preprocess import (  # noqa: F401
    Preprocessing,
    resample,
    _resampled_affine,
    normalise,
    load_volume,
    pad_to,
    VolumeCache,
    load_volumes,
    _stack_channels,
    load_channels_file,
    load_subject,
    load_image,
)
from .samplers import (  # noqa: F401
    CubeSampler,
    PairSampler,
)
from .splits import (  # noqa: F401
    split_regions,
    AXIS_NAMES,
    SplitError,
    VolumeSplit,
    _box,
    split_one_volume,
    lookalike_mask,
    LOOKALIKE_RATIO,
    choose_validation_volumes,
    stratified_split,
)
