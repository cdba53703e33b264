"""Subjects: the co-registered channel files of one case, named by a ``{channel}`` pattern."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import UsageError
from .readers import Volume, VolumeError, find_volumes


# ------------------------------------------------------------------------------------------------
# Multi-channel volumes: co-registered modalities (T1, T1ce, T2, FLAIR...) of one subject, either
# as separate files named by a ``{channel}`` pattern, or as one 4D file (last axis = channels).
# Each channel is resampled and normalised on its own (per-image min-max / percentiles work per
# modality), then they are stacked channel-first: (C, X, Y, Z).

CHANNEL_KEY = "{channel}"
# affines of co-registered files agree to float32 rounding; anything larger is another grid
AFFINE_ATOL = 1e-3


def channel_names(channels) -> tuple[str, ...] | None:
    """Validated channel names (None stays None); ``["t1,t2", "flair"]`` -> ``("t1", "t2", "flair")``."""
    if channels is None:
        return None
    if isinstance(channels, str):
        channels = [channels]
    names = tuple(n.strip() for c in channels for n in str(c).split(","))
    if not names or any(not n or "/" in n or os.sep in n for n in names):
        raise ValueError(f"channels: expected names such as t1 t1ce t2 flair, got {list(channels)}")
    if len(set(names)) != len(names):
        raise ValueError(f"channels: names must be distinct, got {list(names)}")
    return names


@dataclass(frozen=True)
class Subject:
    """One subject's channel files: ``paths[i]`` holds channel ``channels[i]``.

    ``name`` is the pattern with its wildcards filled and ``{channel}`` left in place (for example
    ``brats/BraTS_001/BraTS_001_{channel}.nii.gz``); errors name the subject by it."""

    name: str
    paths: tuple[str, ...]
    channels: tuple[str, ...]


def _pattern_regex(pattern: str, channel: str) -> re.Pattern:
    """A regex matching what ``glob`` matches for ``pattern`` with ``{channel}`` = ``channel``, one
    group per wildcard (``**``, ``*``, ``?``, ``[...]``): the groups identify the subject."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith(CHANNEL_KEY, i):
            out.append(re.escape(channel))
            i += len(CHANNEL_KEY)
        elif pattern.startswith("**/", i):  # zero or more folders, as glob(recursive=True)
            out.append("((?:[^/]*/)*)")
            i += 3
        elif pattern.startswith("**", i):
            out.append("(.*)")
            i += 2
        elif pattern[i] == "*":
            out.append("([^/]*)")
            i += 1
        elif pattern[i] == "?":
            out.append("([^/])")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1 : j]
            out.append("([" + ("^" + body[1:] if body.startswith("!") else body) + "])")
            i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _fill(pattern: str, groups: Sequence[str]) -> str:
    """``pattern`` with its wildcards replaced by ``groups`` (``{channel}`` kept)."""
    it = iter(groups)
    parts = re.split(r"(\{channel\}|\*\*/|\*\*|\*|\?|\[!?.[^\]]*\])", pattern)
    return "".join(p if (i % 2 == 0 or p == CHANNEL_KEY) else next(it, p) for i, p in enumerate(parts))


def find_subjects(patterns: Sequence[str], channels: Sequence[str]) -> list[Subject]:
    """Group channel files into subjects.

    Each pattern holds ``{channel}`` and may hold glob wildcards, e.g.
    ``'brats/*/*_{channel}.nii.gz'`` with channels ``t1 t1ce t2 flair``. The files of a subject
    are the ones whose wildcards match the same text for every channel.

    Raises:
        VolumeError: a pattern matches nothing, or a subject lacks a channel (one line naming
            the subject and the missing file).
        ValueError: a pattern without ``{channel}``.
    """
    names = channel_names(channels)
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    subjects: list[Subject] = []
    for pat in map(os.fspath, patterns):
        if CHANNEL_KEY not in pat:
            raise UsageError(
                f"{pat}: with channels, each path is a pattern holding {CHANNEL_KEY} "
                f"(for example sub*/{{channel}}.nii.gz); or give one 4D file per subject without channels"
            )
        found: dict[tuple[str, ...], dict[str, str]] = {}
        for c in names:
            rx = _pattern_regex(pat, c)
            for hit in glob.glob(pat.replace(CHANNEL_KEY, c), recursive=True):
                m = rx.match(hit)
                if m and os.path.isfile(hit):
                    found.setdefault(m.groups(), {})[c] = hit
        if not found:
            raise VolumeError(f"{pat}: no file for any channel ({', '.join(names)})")
        for key in sorted(found, key=lambda k: _fill(pat, k)):
            name, files = _fill(pat, key), found[key]
            missing = [c for c in names if c not in files]
            if missing:
                raise VolumeError(
                    f"subject {name}: missing channel {missing[0]} (no file {name.replace(CHANNEL_KEY, missing[0])})"
                )
            subjects.append(Subject(name, tuple(files[c] for c in names), names))
    return subjects


def image_sources(paths: Sequence[str], channels: Sequence[str] | None = None, find=find_volumes) -> list:
    """What to load: paths expanded by ``find`` (NIfTI: :func:`find_volumes`) without ``channels``,
    else :class:`Subject` s (:func:`find_subjects`). A ``{channel}`` pattern without channel names
    is an error."""
    if channels is None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        bad = [p for p in paths if CHANNEL_KEY in os.fspath(p)]
        if bad:
            raise UsageError(f"{bad[0]}: a {CHANNEL_KEY} pattern needs channel names (--channels t1 t2 ...)")
        return find(paths)
    return find_subjects(paths, channels)


def channel_count(volumes: Sequence[Volume]) -> int:
    """The common number of channels of ``volumes``; :class:`VolumeError` naming the first volume
    that differs."""
    c = volumes[0].channels
    for v in volumes[1:]:
        if v.channels != c:
            raise VolumeError(f"{v.path}: {v.channels} channel(s), but {volumes[0].path} has {c}")
    return c


# ----------------------------------------------------------------------------------------------
