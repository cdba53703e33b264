"""MONAI transforms: the Models Genesis pipeline as a randomizable MONAI transform.

Needs MONAI (``pip install "genesis-ops[monai]"``); it is imported here only, so ``import
genesis_ops`` never needs it.

    from genesis_ops.monai import RandModelsGenesisd
    train = Compose([LoadImaged("image"), EnsureChannelFirstd("image"),
                     ScaleIntensityRanged("image", -1000, 1000, 0, 1, clip=True),
                     RandSpatialCropd("image", (64, 64, 32), random_size=False),
                     RandModelsGenesisd("image")])          # image: corrupted input, image_target: target

One sample per call, channel first, (C, H, W) or (C, D, H, W): it runs as a batch of one
(sample_offset 0) through ``genesis_ops.models_genesis``, on the sample's device (CPU, or CUDA after
``ToDeviced``). Its seed is drawn from the transform's MONAI random state ``self.R``, so
``set_random_state``, ``Compose`` and ``monai.utils.set_determinism`` make it reproducible, and
MONAI's ``DataLoader`` reseeds it in every worker as it does MONAI's own random transforms. Given that
seed, (input, target) is exactly ``[t[0] for t in genesis_ops.models_genesis(x[None], config, seed)]``,
whatever the process, thread count or device. ``return_mask=True`` (array form) or ``mask_key``
(dictionary form) also gives the corruption mask of ``models_genesis(..., return_masks=True)``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_to_dst_type

from .config import GenesisConfig
from .functional import models_genesis

__all__ = ["RandModelsGenesis", "RandModelsGenesisd"]


def _as_plain_tensor(img, name: str) -> torch.Tensor:
    """img (numpy array, Tensor or MetaTensor) as a plain torch.Tensor sharing its memory where it can."""
    if isinstance(img, MetaTensor):
        return img.as_tensor()
    if isinstance(img, torch.Tensor):
        return img
    if isinstance(img, np.ndarray):
        return torch.as_tensor(img)
    raise TypeError(f"{name} must be a numpy array, torch.Tensor or MetaTensor, got {type(img).__name__}")


# More channels than this in the first axis is taken as a missing channel axis: a (D, H, W) volume
# would otherwise be corrupted as D channels of a 2D image, silently.
MAX_CHANNELS = 16


def _check_channel_first(x: torch.Tensor, name: str) -> None:
    """ValueError unless ``x`` looks channel first: (C, H, W) or (C, D, H, W), C at most
    :data:`MAX_CHANNELS`, no trailing axis of size 1 (a channel-last array)."""
    want = "channel first, (C, H, W) or (C, D, H, W)"
    if x.dim() not in (3, 4):
        raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")
    if x.shape[-1] == 1 and x.shape[0] > 1:
        raise ValueError(
            f"{name} must be {want}, got shape {tuple(x.shape)}: the last axis of size 1 looks like a "
            "channel axis; move it first (e.g. MONAI's EnsureChannelFirst, or x.permute / np.moveaxis)"
        )
    if x.shape[0] > MAX_CHANNELS:
        raise ValueError(
            f"{name} must be {want}, got shape {tuple(x.shape)}: {x.shape[0]} channels looks like a "
            "spatial axis; add the channel axis first (e.g. MONAI's EnsureChannelFirst, or x[None])"
        )


def _warn_out_of_range(x: torch.Tensor, config: GenesisConfig, transform) -> None:
    """Warn once per transform when ``x`` leaves ``config.value_range``: the op clamps the corrupted
    input to it, the target keeps the original values."""
    vr = config.value_range
    if getattr(transform, "_range_warned", False) or not isinstance(vr, tuple) or x.numel() == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < vr[0] or hi > vr[1]:
        import warnings

        transform._range_warned = True
        warnings.warn(
            f"intensities span [{lo:g}, {hi:g}], outside value_range {vr}: the corrupted input is clamped to "
            "it but the target is not; scale the data into value_range first (e.g. ScaleIntensityRange)",
            stacklevel=3,
        )


def _like(out: torch.Tensor, img):
    """out as img's type (numpy array, Tensor or MetaTensor with a copy of img's metadata, the affine
    included) and device. The affine is kept as it is: the flip moves the voxels of the input and the
    target alike, and the pair is used voxel to voxel."""
    return convert_to_dst_type(out, dst=img, dtype=out.dtype)[0]


class RandModelsGenesis(Randomizable):
    """The Models Genesis pipeline on one channel-first sample: ``t(img) -> (input, target)``, or
    ``(input, target, mask)`` with ``return_mask=True``.

    ``target = flip(img)``, ``input = paint(nonlinear(shuffle(target)))`` (docs/SPEC.md); spatial
    randomness (windows, boxes, flips, curve) is shared by the channels, fill noise is drawn per
    channel.

    Args:
        config (GenesisConfig, optional): probabilities, sizes and ``value_range`` (the range the
            intensities live in: the curve's domain and the fill noise's range, default (0, 1); scale
            the data into it first, e.g. with ``ScaleIntensityRange``, or give
            ``value_range="per_sample"`` for z-scored data: the image's own min and max over its
            channels, docs/SPEC.md, 4.8). None means GenesisConfig().
        return_mask (bool): also return the corruption mask (docs/SPEC.md, 4.7): uint8 of shape
            (1, H, W) or (1, D, H, W), bit value 1 where a shuffle window lies, 2 where fill noise
            replaced the voxel, in the target's frame, shared by the channels. Default False.

    Input: a (C, H, W) or (C, D, H, W) numpy array, Tensor or MetaTensor of float16, bfloat16 (not
    numpy), float32 or float64, on the CPU or a CUDA device. Output: two new arrays of its type,
    shape, dtype and device (and the mask, of its type and device); a MetaTensor's metadata
    (affine included) is copied to each.
    """

    def __init__(self, config: GenesisConfig | None = None, return_mask: bool = False):
        cfg = config if config is not None else GenesisConfig()
        if not isinstance(cfg, GenesisConfig):
            raise TypeError(f"config must be a GenesisConfig, got {type(cfg).__name__}")
        if not isinstance(return_mask, bool):
            raise TypeError(f"return_mask must be a bool, got {type(return_mask).__name__}")
        self.config = cfg
        self.return_mask = return_mask
        self._seed: int | None = None

    def randomize(self, data=None) -> None:
        # One 64-bit word from MONAI's random state: the op's whole randomness for this sample.
        self._seed = int(self.R.randint(0, 2**64, dtype=np.uint64))

    def __call__(self, img, randomize: bool = True):
        """Returns (input, target) for img, and the mask with ``return_mask``; ``randomize=False``
        reuses the last drawn seed."""
        if randomize or self._seed is None:
            self.randomize()
        x = _as_plain_tensor(img, "img")
        _check_channel_first(x, "img")
        _warn_out_of_range(x, self.config, self)
        out = models_genesis(x.unsqueeze(0), self.config, seed=self._seed, return_masks=self.return_mask)
        return tuple(_like(t[0], img) for t in out)


class RandModelsGenesisd(Randomizable, MapTransform):
    """Dictionary form of :class:`RandModelsGenesis`: afterwards ``data[key]`` is the corrupted input
    and ``data[key + target_suffix]`` the restoration target, for every key.

    The keys of one sample are co-registered channels (e.g. the modalities of one subject): they are
    concatenated along the channel dimension and corrupted in one call, so they share the spatial
    randomness (the same windows, boxes, flips and curve), and fill noise is drawn per channel. They
    must therefore have the same spatial shape and device; each keeps its own channel count, type
    and dtype.

    Args:
        keys: the keys to corrupt.
        config (GenesisConfig, optional): see :class:`RandModelsGenesis` (``value_range`` included).
        target_suffix (str): the target of ``key`` goes to ``key + target_suffix``. Default "_target".
        mask_key (str, optional): also write the sample's corruption mask (one for all keys: they
            share the spatial randomness) to ``data[mask_key]``, as in :class:`RandModelsGenesis`
            with ``return_mask=True`` (uint8, one channel; the first key's type, device and
            metadata). Default None: no mask is computed.
        allow_missing_keys (bool): skip keys missing from the data instead of raising KeyError.
    """

    def __init__(
        self,
        keys: KeysCollection,
        config: GenesisConfig | None = None,
        target_suffix: str = "_target",
        allow_missing_keys: bool = False,
        mask_key: str | None = None,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not isinstance(target_suffix, str) or not target_suffix:
            raise ValueError(f"target_suffix must be a non-empty str, got {target_suffix!r}")
        if mask_key is not None:
            if not isinstance(mask_key, str) or not mask_key:
                raise ValueError(f"mask_key must be a non-empty str or None, got {mask_key!r}")
            written = set(self.keys) | {f"{k}{target_suffix}" for k in self.keys}
            if mask_key in written:
                raise ValueError(f"mask_key {mask_key!r} would overwrite a corrupted input or target")
        self.target_suffix = target_suffix
        self.mask_key = mask_key
        self.transform = RandModelsGenesis(config, return_mask=mask_key is not None)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        # The draws happen in the array transform: it takes the state MONAI (Compose, DataLoader
        # workers, set_determinism) gives this one.
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        self.transform.randomize()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        imgs = [d[k] for k in keys]
        xs = [_as_plain_tensor(img, f"data[{k!r}]") for k, img in zip(keys, imgs, strict=True)]
        for k, x in zip(keys, xs, strict=True):
            _check_channel_first(x, f"data[{k!r}]")
            if x.shape[1:] != xs[0].shape[1:] or x.device != xs[0].device:
                raise ValueError(
                    f"the keys of one sample share the spatial randomness, so they must have the same "
                    f"spatial shape and device: data[{keys[0]!r}] is {tuple(xs[0].shape)} on "
                    f"{xs[0].device}, data[{k!r}] is {tuple(x.shape)} on {x.device}"
                )
        x = xs[0] if len(xs) == 1 else torch.cat(xs, dim=0)
        self.randomize()
        inp, target, *mask = self.transform(x, randomize=False)
        if mask:
            d[self.mask_key] = _like(_as_plain_tensor(mask[0], "mask"), imgs[0])
        start = 0
        for k, img, xk in zip(keys, imgs, xs, strict=True):
            c = xk.shape[0]
            # Back to each key's own dtype (torch.cat promoted mixed dtypes), type and metadata.
            d[k] = _like(inp[start : start + c].to(xk.dtype), img)
            d[f"{k}{self.target_suffix}"] = _like(target[start : start + c].to(xk.dtype), img)
            start += c
        return d
