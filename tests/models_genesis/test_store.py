"""The preprocessed store: `genesis-ops preprocess`, the Store API, atomicity, resume, parts,
faults, and the streamed cubes (pure per batch, independent of the worker count)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
import torch

from models_genesis import data, preprocess, samplers, store
from models_genesis.cli import main as cli_main

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("blosc2")

# LPS-stored, anisotropic: reading must reorient
AFFINE = np.array([[-0.8, 0, 0, 50.0], [0, -0.8, 0, 40.0], [0, 0, 2.0, -20.0], [0, 0, 0, 1]])


def _ct(shape=(70, 60, 40), seed=0):
    """CT-like int16: air around a body of soft tissue with bone."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = (x**2 + y**2) < 0.6
    a = np.where(body, 40 + rng.normal(0, 30, shape), -1000 + rng.normal(0, 10, shape))
    a[body & (x**2 + y**2 < 0.05)] = 700
    return np.rint(a).astype(np.int16)


def _write(tmp_path, n=3, shape=(70, 60, 40)):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        p = raw / f"v{i}.nii.gz"
        nib.save(nib.Nifti1Image(_ct(shape, i), AFFINE), p)
        paths.append(str(p))
    return paths


def test_store_volumes_match_the_readers_and_slice_lazily(tmp_path):
    paths = _write(tmp_path, 2)
    mha = str(tmp_path / "raw" / "w.mha")
    img = sitk.GetImageFromArray(_ct((30, 20, 10), 9).transpose(2, 1, 0).copy())
    img.SetSpacing((1.5, 1.0, 3.0))
    sitk.WriteImage(img, mha)
    rep = preprocess.build_store(paths + [mha], tmp_path / "st", progress=False)
    assert rep["written"] == 3 and rep["failed"] == [] and rep["volumes"] == 3
    s = store.Store(tmp_path / "st")
    assert len(s) == 3
    for v in s:
        ref = data.load_volume(v.source)
        _, can, raw = data.read_image(v.source)
        assert v.shape == ref.data.shape and v.modality == "ct"
        np.testing.assert_allclose(v.affine, ref.affine)
        np.testing.assert_allclose(v.spacing, np.linalg.norm(ref.affine[:3, :3], axis=0))
        assert np.array_equal(v[:, :, :], raw.astype(np.int16))  # the stored values: HU
        box = (slice(3, 40), slice(2, 19), slice(1, 9))
        assert np.array_equal(v[box], raw[box].astype(np.int16))
        np.testing.assert_allclose(v.read(box, data.Preprocessing()), ref.data[box], atol=1e-6)
        w = data.Preprocessing(hu_window=(-200, 300))  # another window: no new store
        np.testing.assert_allclose(v.read(box, w), data.load_volume(v.source, w).data[box], atol=1e-6)
        fg = v.foreground()
        assert fg.shape == tuple(-(-n // 8) for n in v.shape) and 0 <= fg.min() and fg.max() <= 1
        assert v.verify()
    # MR keeps its own values and the whole volume's percentiles normalise a cube as in memory
    mr = preprocess.build_store(paths[:1], tmp_path / "mr", modality="mri", progress=False)
    assert mr["written"] == 1
    v = store.Store(tmp_path / "mr")[0]
    pre = data.Preprocessing(modality="mri")
    np.testing.assert_allclose(
        v.read((slice(0, 30),) * 3, pre), data.load_volume(paths[0], pre).data[:30, :30, :30], atol=1e-5
    )


def test_only_the_chunks_a_slice_touches_are_read(tmp_path):
    import blosc2

    [p] = _write(tmp_path, 1, shape=(128, 128, 64))
    preprocess.build_store([p], tmp_path / "st", progress=False)
    v = store.Store(tmp_path / "st")[0]
    want = v[64:128, 64:128, :].copy()
    nd = blosc2.open(v.path, mode="a")
    chunk = bytearray(nd.schunk.get_chunk(0))  # the chunk at the origin
    for k in range(len(chunk) // 2, len(chunk), 7):  # compressed data, past the header and block offsets
        chunk[k] ^= 0x5A
    nd.schunk.update_chunk(0, bytes(chunk))
    del nd
    s = store.Store(tmp_path / "st")
    v = s[0]
    assert np.array_equal(v[64:128, 64:128, :], want)  # far from the damage: read fine
    with pytest.raises(store.StoreError) as e:
        v[0:16, 0:16, 0:16]
    assert p in str(e.value) and "damaged" in str(e.value) and "\n" not in str(e.value)
    assert not v.verify()
    # a rerun finds the damage by the checksum and rewrites the volume
    rep = preprocess.build_store([p], tmp_path / "st", progress=False)
    assert rep["written"] == 1 and store.Store(tmp_path / "st")[0].verify()


def test_rerun_keeps_verified_volumes_and_redoes_changed_sources(tmp_path):
    paths = _write(tmp_path, 3)
    root = tmp_path / "st"
    assert preprocess.build_store(paths, root, progress=False)["written"] == 3
    rep = preprocess.build_store(paths, root, progress=False)
    assert (rep["written"], rep["kept"]) == (0, 3)
    time.sleep(0.01)
    nib.save(nib.Nifti1Image(_ct(seed=7), AFFINE), paths[1])  # the source changed
    rep = preprocess.build_store(paths, root, progress=False)
    assert (rep["written"], rep["kept"]) == (1, 2)
    with pytest.raises(store.StoreError, match="--spacing"):
        preprocess.build_store(paths, root, spacing=(2, 2, 2), progress=False)


def test_a_crash_between_the_volume_and_its_entry_leaves_no_half_volume(tmp_path, monkeypatch):
    paths = _write(tmp_path, 2)
    root = tmp_path / "st"
    preprocess.build_store(paths[:1], root, progress=False)
    real = store._atomic_write_text

    def crash(path, text):
        if path.endswith(".json") and os.path.basename(os.path.dirname(path)) == store.VOLUMES:
            raise KeyboardInterrupt  # killed after the array's rename, before its entry
        return real(path, text)

    monkeypatch.setattr(store, "_atomic_write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        preprocess.build_store(paths, root, progress=False)
    monkeypatch.setattr(store, "_atomic_write_text", real)
    s = store.Store(root)
    assert [v.source for v in s] == [os.path.abspath(paths[0])]
    rep = preprocess.build_store(paths, root, progress=False)
    assert (rep["written"], rep["kept"]) == (1, 1) and len(store.Store(root)) == 2


def test_kill_9_during_preprocess_leaves_a_store_a_rerun_completes(tmp_path, subprocess_env):
    paths = _write(tmp_path, 8, shape=(96, 96, 64))
    root = tmp_path / "st"
    cmd = [sys.executable, "-m", "models_genesis", "preprocess", *paths, "--out", str(root), "--quiet"]
    proc = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    vdir = root / store.VOLUMES
    t0 = time.time()
    while time.time() - t0 < 120 and proc.poll() is None:
        if vdir.is_dir() and any(n.endswith(".json") for n in os.listdir(vdir)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    s = store.Store(root)
    assert 1 <= len(s) <= 8 and all(v.verify() for v in s)  # only complete volumes are listed
    rep = preprocess.build_store(paths, root, progress=False)
    assert rep["kept"] == len(s) and rep["written"] == 8 - len(s)
    assert len(store.Store(root)) == 8 and all(v.verify() for v in store.Store(root))


def test_parts_write_one_store_together(tmp_path, subprocess_env):
    paths = _write(tmp_path, 5)
    root = tmp_path / "st"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "models_genesis", "preprocess", str(tmp_path / "raw"), "--out", str(root)]
            + ["--part", str(i), "--parts", "2", "--quiet"],
            env=subprocess_env,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tmp_path,  # not the repository root, whose genesis_ops has no extension
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(int(o.split(" volume(s) written")[0].split()[-1]) for o in outs) == [2, 3]
    man = json.loads((root / store.MANIFEST).read_text())
    assert sorted(e["source"] for e in man["volumes"]) == sorted(map(os.path.abspath, paths))


def test_bad_sources_are_reported_and_skipped(tmp_path, capsys):
    paths = _write(tmp_path, 2)
    bad = tmp_path / "raw" / "broken.nii.gz"
    bad.write_bytes(open(paths[0], "rb").read()[:200])
    rc = cli_main(["preprocess", str(tmp_path / "raw"), "--out", str(tmp_path / "st"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 volume(s) written" in out and "1 skipped" in out and f"skipped: {bad}: cannot read" in out
    with pytest.raises(data.VolumeError, match="broken"):
        preprocess.build_store([str(bad)], tmp_path / "st2", skip_bad=False, progress=False)


def test_disk_full_names_the_volume_and_keeps_what_was_written(tmp_path, monkeypatch):
    import blosc2

    paths = _write(tmp_path, 3)
    real, calls = blosc2.asarray, []

    def full(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(blosc2, "asarray", full)
    with pytest.raises(store.StoreError) as e:
        preprocess.build_store(paths, tmp_path / "st", progress=False)
    msg = str(e.value)
    assert msg.startswith(os.path.abspath(paths[1])) and "disk full" in msg and "MiB free" in msg
    s = store.Store(tmp_path / "st")
    assert [v.source for v in s] == [os.path.abspath(paths[0])] and s[0].verify()
    assert not [n for n in os.listdir(tmp_path / "st" / store.VOLUMES) if ".tmp" in n]


def test_manifest_from_another_version_is_a_clear_error(tmp_path):
    paths = _write(tmp_path, 1)
    root = tmp_path / "st"
    preprocess.build_store(paths, root, progress=False)
    man = json.loads((root / store.MANIFEST).read_text())
    man["version"] = store.VERSION + 1
    (root / store.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(store.StoreError, match=f"version {store.VERSION + 1}.*preprocess the sources again"):
        store.Store(root)
    with pytest.raises(store.StoreError, match="not a store"):
        store.Store(tmp_path / "raw")


def test_missing_volume_file_is_a_one_line_error_or_skipped(tmp_path):
    paths = _write(tmp_path, 2)
    root = tmp_path / "st"
    preprocess.build_store(paths, root, progress=False)
    s = store.Store(root)
    os.remove(s[0].path)
    ds = samplers.StoreCubes(store.Store(root), (16, 16, 16), 4, data.Preprocessing(), seed=1)
    with pytest.raises(store.StoreError, match="unreadable") as e:
        ds.batch(1, 0)
    assert "\n" not in str(e.value) and os.path.abspath(paths[0]) in str(e.value)
    ds = samplers.StoreCubes(store.Store(root), (16, 16, 16), 4, data.Preprocessing(), seed=1, skip_bad=True)
    with pytest.warns(UserWarning, match="skipping"):
        x, _ = ds.batch(1, 0)
    assert x.shape == (4, 1, 16, 16, 16) and ds.bad == {0}
    # through the DataLoader workers too: one line, the worker's traceback stripped
    loader = samplers.StreamedCubes(samplers.StoreCubes(store.Store(root), (16,) * 3, 4, data.Preprocessing()), 50, 1)
    with pytest.raises(store.StoreError) as e:
        for _ in loader.epoch(1, torch.device("cpu")):
            pass
    assert "\n" not in str(e.value) and "unreadable" in str(e.value)
    loader.close()


def test_streamed_cubes_are_a_pure_function_of_seed_epoch_rank_batch(tmp_path):
    paths = _write(tmp_path, 3)
    preprocess.build_store(paths, tmp_path / "st", progress=False)
    s = store.Store(tmp_path / "st")
    pre = data.Preprocessing()

    def run(workers, rank=0):
        ds = samplers.StoreCubes(s, (32, 32, 16), 3, pre, seed=4, rank=rank)
        st = samplers.StreamedCubes(ds, 6, workers)
        out = [[(x.clone(), seed) for x, seed in st.epoch(e, torch.device("cpu"))] for e in (1, 2)]
        st.close()
        return out

    a, b, c = run(0), run(1), run(2)
    for ea, eb, ec in zip(a, b, c, strict=True):
        for (xa, sa), (xb, sb), (xc, sc) in zip(ea, eb, ec, strict=True):
            assert torch.equal(xa, xb) and torch.equal(xa, xc) and sa == sb == sc
    assert not torch.equal(a[0][0][0], a[1][0][0]) and a[0][0][1] != a[0][1][1]  # epochs and batches differ
    ds = samplers.StoreCubes(s, (32, 32, 16), 3, pre, seed=4)
    x, seed = ds.batch(2, 5)  # any batch on its own, in any order
    assert torch.equal(x, a[1][5][0]) and seed == a[1][5][1]
    r1 = run(0, rank=1)
    assert not torch.equal(r1[0][0][0], a[0][0][0])  # each rank its own stream
    # the cubes are mostly body, as the air test asks
    assert all(float((x > 0.05).float().mean()) > 0.4 for x, _ in a[0])


def test_small_volumes_pad_the_cube_not_the_volume(tmp_path):
    paths = _write(tmp_path, 1, shape=(40, 30, 12))
    preprocess.build_store(paths, tmp_path / "st", progress=False)
    s = store.Store(tmp_path / "st")
    ds = samplers.StoreCubes(s, (32, 32, 16), 2, data.Preprocessing(), min_foreground=0.0)
    x, _ = ds.batch(1, 0)
    assert x.shape == (2, 1, 32, 32, 16)
    # y (30) and z (12) are padded with air (0), centred: one slice before, one after in y; 2 and 2 in z
    assert float(x[:, :, :, 0].abs().max()) == 0 and float(x[:, :, :, 31].abs().max()) == 0
    assert float(x[:, :, :, :, :2].abs().max()) == 0 and float(x[:, :, :, :, 14:].abs().max()) == 0
    assert float(x[:, :, :, 1:31, 2:14].max()) > 0


def test_pretrain_from_a_store_and_from_raw_inputs(tmp_path):
    from models_genesis.pretrain import PretrainConfig, pretrain

    paths = _write(tmp_path, 3)
    assert cli_main(["preprocess", *paths, "--out", str(tmp_path / "st"), "--quiet"]) == 0
    tiny = dict(batch_size=2, cube=(16, 16, 16), width=4, device="cpu", quiet=True, previews=1, epochs=2)
    common = dict(steps_per_epoch=3, val_batches=1, seed=3, **tiny)
    r0 = pretrain(PretrainConfig(data=[str(tmp_path / "st")], out=str(tmp_path / "a"), workers=0, **common))
    r2 = pretrain(PretrainConfig(data=[str(tmp_path / "st")], out=str(tmp_path / "b"), workers=2, **common))
    la = [h["train_loss"] for h in r0["history"][1:]]
    assert la == [h["train_loss"] for h in r2["history"][1:]]  # the worker count changes nothing
    # raw inputs (a glob) are preprocessed into OUT/store first, then read the same way
    r = pretrain(
        PretrainConfig(data=[str(tmp_path / "raw" / "*.nii.gz")], out=str(tmp_path / "c"), workers=1, **common)
    )
    assert len(store.Store(tmp_path / "c" / "store")) == 3
    assert [h["train_loss"] for h in r["history"][1:]] == la


RANK_SCRIPT = r"""
import json, os, sys
import torch, torch.distributed as dist
from models_genesis import data, samplers, store


def tree_pss_mib(pid):
    # proportional set size of a process and its children (shared pages split, not double-counted)
    def pss(p):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                return sum(int(l.split()[1]) for l in f if l.startswith("Pss:")) / 1024
        except OSError:
            return 0.0
    kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    return pss(pid) + sum(pss(int(k)) for k in kids)


dist.init_process_group("gloo")
rank = dist.get_rank()
ds = samplers.StoreCubes(store.Store(sys.argv[1]), (32, 32, 16), 4, data.Preprocessing(), seed=0, rank=rank)
cubes = samplers.StreamedCubes(ds, 25, workers=1)
first, rss = None, []
for epoch in range(1, 7):
    for x, seed in cubes.epoch(epoch, torch.device("cpu")):
        first = first if first is not None else x.clone()
    rss.append(tree_pss_mib(os.getpid()))
cubes.close()
everyone = [None, None]
dist.all_gather_object(everyone, {"first": first.double().sum().item(), "rss": rss})
if rank == 0:
    with open(sys.argv[2], "w") as f:
        json.dump(everyone, f)
dist.destroy_process_group()
"""


def test_two_gloo_ranks_draw_their_own_cubes_with_flat_memory(tmp_path, subprocess_env):
    import socket

    paths = _write(tmp_path, 12, shape=(64, 64, 32))
    preprocess.build_store(paths, tmp_path / "st", progress=False)
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(port), str(script), str(tmp_path / "st"), str(tmp_path / "out.json")]
    p = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    r0, r1 = json.loads((tmp_path / "out.json").read_text())
    assert r0["first"] != r1["first"]  # each rank its own stream
    for r in (r0, r1):
        # after the first epoch (workers up, files opened) memory stays where it is: no growth with batches read
        assert max(r["rss"][1:]) - r["rss"][0] < 25, r["rss"]


def test_normalise_cubes_applies_each_cubes_window_as_numpy_does():
    rng = np.random.default_rng(3)
    raw = rng.integers(-1500, 2500, size=(3, 2, 8, 8, 4)).astype(np.int16)
    wins = np.array(
        [[[-1000, 1000], [-160, 240]], [[0.5, 99.5], [10, 10]], [[-1000, 1000], [-1000, 1000]]], dtype=np.float64
    )
    got = samplers.normalise_cubes(torch.from_numpy(raw), torch.from_numpy(wins)).numpy()
    want = raw.astype(np.float32)
    for b in range(3):
        for c in range(2):
            lo, hi = (float(v) for v in wins[b, c])
            v = want[b, c]
            if hi <= lo:
                v[...] = 0
                continue
            np.clip(v, lo, hi, out=v)
            v -= lo
            v *= 1.0 / (hi - lo)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert got[1, 1].max() == 0 and got.min() >= 0 and got.max() <= 1  # hi <= lo: all 0
    # one window for the whole batch: the same values as cube by cube
    one = np.broadcast_to(wins[:1, :1], (3, 2, 2)).copy()
    a = samplers.normalise_cubes(torch.from_numpy(raw), torch.from_numpy(one))
    one[0, 0, 0] += 1e-9  # no longer uniform: the per-cube path
    b = samplers.normalise_cubes(torch.from_numpy(raw), torch.from_numpy(one))
    assert torch.equal(a[1:], b[1:])
