"""Tests of itlin.data: dataset preparation, CIFAR-10 archive safety, augmentation, probe sets.

CIFAR-10 is exercised on small archives built here in the official binary format; no network.
"""

import hashlib
import inspect
import io
import random
import re
import tarfile
import urllib.error
import urllib.request

import jax
import numpy as np
import pytest

from itlin import data

N_RECORDS = 3  # records per CIFAR-10 batch file in the test archives (the official layout has 10,000)
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck"]


def _add_file(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_cifar_archive(path, extra_members=(), records=None, meta_text=None):
    """Write a small archive in the official layout; returns {file name: uint8 records}.

    ``records`` maps a batch file name to its number of records (default ``N_RECORDS``);
    ``meta_text`` replaces the class-name listing."""
    rng = np.random.default_rng(0)
    counts, records = records or {}, {}
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo(data.CIFAR10_FOLDER)
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name in (*data.CIFAR10_TRAIN_FILES, data.CIFAR10_TEST_FILE):
            count = counts.get(name, N_RECORDS)
            labels = rng.integers(0, 10, size=(count, 1))
            pixels = rng.integers(0, 256, size=(count, 3072))
            records[name] = np.concatenate([labels, pixels], axis=1).astype(np.uint8)
            _add_file(tar, f"{data.CIFAR10_FOLDER}/{name}", records[name].tobytes())
        meta_text = "\n".join(CLASS_NAMES) + "\n\n" if meta_text is None else meta_text
        _add_file(tar, f"{data.CIFAR10_FOLDER}/batches.meta.txt", meta_text.encode())
        for member in extra_members:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return records


def archive_check(path):
    """The (expected_size, expected_md5) overrides that make `path` the 'official' archive."""
    return {"expected_size": path.stat().st_size,
            "expected_md5": hashlib.md5(path.read_bytes()).hexdigest()}


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "source" / data.CIFAR10_ARCHIVE
    path.parent.mkdir()
    return path, make_cifar_archive(path)


# ---------------------------------------------------------------- CIFAR-10


def test_read_cifar10_labels_and_pixels(archive):
    path, records = archive
    x_train, y_train, x_test, y_test, class_names = data.read_cifar10(path, records_per_file=N_RECORDS)
    train = np.concatenate([records[name] for name in data.CIFAR10_TRAIN_FILES])
    test = records[data.CIFAR10_TEST_FILE]
    assert x_train.shape == (5 * N_RECORDS, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (N_RECORDS, 32, 32, 3)
    np.testing.assert_array_equal(y_train, train[:, 0])
    np.testing.assert_array_equal(y_test, test[:, 0])
    assert class_names == CLASS_NAMES
    # Record byte 1 + c*1024 + row*32 + col is pixel (row, col) of channel c.
    channel, row, col = 2, 5, 7
    assert x_train[4, row, col, channel] == train[4, 1 + channel * 1024 + row * 32 + col]
    np.testing.assert_array_equal(x_test.transpose(0, 3, 1, 2).reshape(N_RECORDS, -1), test[:, 1:])


def test_prepare_cifar10_from_cache_round_trips(archive, tmp_path):
    path, records = archive
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / data.CIFAR10_ARCHIVE).write_bytes(path.read_bytes())
    meta = data.prepare("cifar10", tmp_path / "cifar10.npz", cache_dir=cache, records_per_file=N_RECORDS,
                        **archive_check(path))
    assert meta["checksum"] == f"md5:{archive_check(path)['expected_md5']}"
    assert meta["source"] == data.CIFAR10_URL and meta["split_seed"] is None
    assert meta["shapes"]["x_train"] == [5 * N_RECORDS, 32, 32, 3]
    loaded = data.load(tmp_path / "cifar10.npz")
    assert loaded.meta == meta and loaded.class_names == tuple(CLASS_NAMES)
    raw_test = loaded.x_test * np.array(meta["std"]) + np.array(meta["mean"])
    expected = records[data.CIFAR10_TEST_FILE][:, 1:].reshape(N_RECORDS, 3, 32, 32) / 255
    np.testing.assert_allclose(raw_test, expected.transpose(0, 2, 3, 1), atol=1e-5)


def test_download_verifies_and_leaves_only_the_archive(archive, tmp_path):
    path, _ = archive
    cache = tmp_path / "cache"
    fetched = data.fetch_cifar10(cache, url=path.as_uri(), **archive_check(path))
    assert fetched == cache / data.CIFAR10_ARCHIVE
    assert fetched.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [data.CIFAR10_ARCHIVE]


def test_download_with_wrong_checksum_is_rejected_and_removed(archive, tmp_path):
    path, _ = archive
    cache = tmp_path / "cache"
    check = archive_check(path) | {"expected_md5": "0" * 32}
    with pytest.raises(data.DataError, match="MD5"):
        data.fetch_cifar10(cache, url=path.as_uri(), **check)
    assert list(cache.iterdir()) == []


def test_cached_archive_with_wrong_checksum_is_rejected_and_removed(archive, tmp_path):
    path, _ = archive
    cached = tmp_path / data.CIFAR10_ARCHIVE
    corrupt = bytearray(path.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    cached.write_bytes(bytes(corrupt))
    with pytest.raises(data.DataError, match=re.escape(f"{cached}: MD5")):
        data.fetch_cifar10(tmp_path, url=path.as_uri(), **archive_check(path))
    assert not cached.exists()


def test_truncated_archive_is_rejected_and_removed(archive, tmp_path):
    path, _ = archive
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    cache = tmp_path / "cache"
    with pytest.raises(data.DataError, match="truncated"):  # downloaded
        data.fetch_cifar10(cache, url=truncated.as_uri(), **archive_check(path))
    assert list(cache.iterdir()) == []
    (cache / data.CIFAR10_ARCHIVE).write_bytes(truncated.read_bytes())  # placed by hand
    with pytest.raises(data.DataError, match="truncated"):
        data.fetch_cifar10(cache, url=path.as_uri(), **archive_check(path))
    assert list(cache.iterdir()) == []


def test_offline_message_names_the_path_to_fill(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(data.DataError, match="offline") as error:
        data.fetch_cifar10(tmp_path)
    assert f"place it at {tmp_path / data.CIFAR10_ARCHIVE}" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def _member(name, kind=tarfile.REGTYPE, size=4, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size if kind == tarfile.REGTYPE else 0, target
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("../evil"), "outside"),
        (_member(f"{data.CIFAR10_FOLDER}/../../evil"), "outside"),
        (_member("/tmp/evil"), "outside"),
        (_member(f"{data.CIFAR10_FOLDER}/readme.html", tarfile.SYMTYPE, target="/etc/passwd"),
         "link"),
        (_member(f"{data.CIFAR10_FOLDER}/readme.html", tarfile.LNKTYPE,
                 target=f"{data.CIFAR10_FOLDER}/test_batch.bin"), "link"),
        (_member(f"{data.CIFAR10_FOLDER}/data_batch_6.bin"), "unexpected"),
        (_member("other_folder", tarfile.DIRTYPE), "unexpected"),
    ],
)
def test_unsafe_or_unexpected_members_are_rejected(tmp_path, member, message):
    path = tmp_path / "bad.tar.gz"
    make_cifar_archive(path, extra_members=[member])
    with pytest.raises(data.DataError, match=message) as error:
        data.read_cifar10(path, records_per_file=N_RECORDS)
    assert member.name in str(error.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"records": {data.CIFAR10_TEST_FILE: N_RECORDS + 1}},
         f"test_batch.bin holds {(N_RECORDS + 1) * 3073} bytes, expected {N_RECORDS} records of 3073"),
        ({"records": {"data_batch_3.bin": 1}}, f"data_batch_3.bin holds 3073 bytes, expected {N_RECORDS} records"),
        ({"meta_text": "airplane\n" * 1000}, "batches.meta.txt holds 9000 bytes, more than"),
    ],
)
def test_member_sizes_are_checked_before_any_member_is_read(tmp_path, monkeypatch, change, message):
    """A member with an official name but another size than the layout's (more or fewer records; a
    huge file) is rejected from its header alone: nothing is read into memory."""
    path = tmp_path / "resized.tar.gz"
    make_cifar_archive(path, **change)
    read = []
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda self, member: read.append(member.name))
    with pytest.raises(data.DataError, match=re.escape(f"{path}: {data.CIFAR10_FOLDER}/{message}")):
        data.read_cifar10(path, records_per_file=N_RECORDS)
    assert read == []


def test_official_layout_has_ten_thousand_records_per_file(archive):
    """Without an explicit smaller layout the record count is the official one: a small archive is
    rejected, not read as a smaller CIFAR-10."""
    path, _ = archive
    with pytest.raises(data.DataError, match=f"expected 10000 records of {data.CIFAR10_RECORD_BYTES} bytes"):
        data.read_cifar10(path)


def test_missing_member_and_corrupt_archive_are_named(tmp_path):
    path = tmp_path / "partial.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _add_file(tar, f"{data.CIFAR10_FOLDER}/test_batch.bin", bytes(data.CIFAR10_RECORD_BYTES))
    with pytest.raises(data.DataError, match="data_batch_1.bin"):
        data.read_cifar10(path, records_per_file=1)
    path.write_bytes(b"not a gzip file")
    with pytest.raises(data.DataError, match=re.escape(f"{path}: unreadable")):
        data.read_cifar10(path)


# ---------------------------------------------------------------- digits, synthetic, load


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "digits.npz"
    meta = data.prepare("digits", out, seed=0)
    return out, meta


def test_digits_split_is_stratified(digits):
    from sklearn.datasets import load_digits

    dataset = data.load(digits[0])
    totals = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(dataset.y_test, minlength=10)
    np.testing.assert_array_equal(np.bincount(dataset.y_train, minlength=10) + test_counts, totals)
    assert np.all(np.abs(test_counts - 0.25 * totals) <= 1)
    assert dataset.x_train.dtype == np.float32 and dataset.y_train.dtype == np.int32


def test_digits_split_is_fixed_by_seed(digits, tmp_path):
    same = data.load(digits[0])
    data.prepare("digits", tmp_path / "again.npz", seed=0)
    data.prepare("digits", tmp_path / "other.npz", seed=1)
    again, other = data.load(tmp_path / "again.npz"), data.load(tmp_path / "other.npz")
    np.testing.assert_array_equal(same.x_test, again.x_test)
    np.testing.assert_array_equal(same.y_train, again.y_train)
    assert not np.array_equal(same.y_train, other.y_train)


def test_metadata_round_trips_through_load(digits):
    out, meta = digits
    dataset = data.load(out)
    assert dataset.meta == meta
    assert meta["dataset"] == "digits" and meta["split_seed"] == 0
    assert meta["checksum"] == f"sha256:{meta['arrays_sha256']}"
    assert dataset.num_classes == 10 and dataset.class_names == tuple(str(c) for c in range(10))
    assert dataset.input_shape == (8, 8, 1)
    assert meta["shapes"]["x_train"] == list(dataset.x_train.shape)


def test_normalisation_uses_train_statistics(digits):
    dataset = data.load(digits[0])
    np.testing.assert_allclose(dataset.x_train.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(dataset.x_train.std(axis=(0, 1, 2)), 1, atol=1e-5)
    # Digits pixels are multiples of 1/16: undoing the train statistics recovers that grid
    # on the test split too, so the test split was normalised with them.
    raw_test = dataset.x_test * dataset.meta["std"][0] + dataset.meta["mean"][0]
    np.testing.assert_allclose(raw_test * 16, np.round(raw_test * 16), atol=1e-4)


def test_load_rejects_missing_metadata_and_mismatched_arrays(digits, tmp_path):
    out, _ = digits
    lone = tmp_path / "lone.npz"
    lone.write_bytes(out.read_bytes())
    with pytest.raises(data.DataError, match="lone.json"):
        data.load(lone)
    arrays = dict(np.load(out))
    arrays["y_test"] = arrays["y_test"][::-1].copy()
    np.savez(lone, **arrays)
    lone.with_suffix(".json").write_text(out.with_suffix(".json").read_text())
    with pytest.raises(data.DataError, match="checksum"):
        data.load(lone)


def test_prepare_rejects_unknown_dataset_and_option(tmp_path):
    with pytest.raises(data.DataError, match="mnist"):
        data.prepare("mnist", tmp_path / "x.npz")
    with pytest.raises(data.DataError, match="test_fractoin"):
        data.prepare("digits", tmp_path / "x.npz", test_fractoin=0.5)


def test_split_sizes_are_those_prepare_gives_without_building_anything(digits, mnist1d_data, tmp_path):
    """The sizes the workflow checks configs against, from the options alone, match the prepared
    data; the smallest class is a lower bound for class-balanced subsets."""
    from sklearn.datasets import load_digits

    assert data.DIGITS_CLASS_COUNTS == tuple(np.bincount(load_digits().target))
    path, meta = digits
    synthetic = {"n_train": 30, "n_test": 10, "image_size": 4, "channels": 1, "num_classes": 4}
    data.prepare("synthetic", tmp_path / "synthetic.npz", **synthetic)
    for name, prepared, options in (("digits", path, meta["options"]),
                                    ("synthetic", tmp_path / "synthetic.npz", synthetic),
                                    ("mnist1d", mnist1d_data, {})):
        loaded, sizes = data.load(prepared), data.split_sizes(name, options)
        assert (sizes.train, sizes.test, sizes.num_classes) == (len(loaded.y_train), len(loaded.y_test),
                                                                loaded.num_classes)
        assert 0 < sizes.smallest_train_class <= np.bincount(loaded.y_train).min()
    assert data.split_sizes("cifar10", {}) == (50_000, 10_000, 10, 5_000)


@pytest.mark.parametrize(("dataset", "options", "message"), [
    ("digits", {"test_fraction": 0.999}, "test_fraction = 0.999 gives 1 training and 1796 test examples"),
    ("digits", {"test_fraction": 0.002}, "test_fraction = 0.002 gives 1793 training and 4 test examples"),
    ("synthetic", {"n_train": 3, "num_classes": 4}, "n_train = 3 is fewer than one example of each"),
    ("cifar10", {"n_train": 9}, "n_train = 9 must lie between 10 (one example of each class) and the 50000"),
    ("cifar10", {"n_test": 10_001}, "n_test = 10001 must lie between 10 (one example of each class) and the 10000"),
    ("mnist1d", {"extra_test_samples": 15}, "extra_test_samples = 15 must be a multiple of 10"),
    ("mnist1d", {"train_split": 0.001}, "give 5 training examples of 5000, too few to be sure of every one"),
    ("mnist1d", {"train_split": 0.999, "extra_test_samples": 0}, "give 5 test examples, too few"),
])
def test_splits_without_every_class_are_rejected_before_building(tmp_path, dataset, options, message):
    """Before anything is built (or downloaded), naming the option: the workflow names its config key."""
    with pytest.raises(data.DataError, match=re.escape(message)) as rejected:
        data.prepare(dataset, tmp_path / "x.npz", cache_dir=tmp_path, **options)
    assert not (tmp_path / "x.npz").exists() and not list(tmp_path.iterdir())
    assert rejected.value.option == [name for name in options if name != "num_classes"][-1]


# ---------------------------------------------------------------- MNIST-1D


def test_mnist1d_is_the_published_split_plus_extra_test_examples(mnist1d_data):
    """The training split and the first 1000 test examples are ``make_dataset``'s defaults (the published data,
    up to the train-split normalisation), the 4000 test examples after them ``make_dataset``'s with another
    seed, class-balanced and on the published scale; the provenance names the package and the generator's
    arguments."""
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    published, loaded = make_dataset(), data.load(mnist1d_data)
    mean, std = np.array(loaded.meta["mean"]), np.array(loaded.meta["std"])
    assert loaded.input_shape == (40, 1) and loaded.x_test.shape == (5000, 40, 1)
    np.testing.assert_allclose(loaded.x_train[..., 0] * std + mean, published["x"], atol=2e-6)
    np.testing.assert_allclose(loaded.x_test[:1000, :, 0] * std + mean, published["x_test"], atol=2e-6)
    np.testing.assert_array_equal(loaded.y_train, published["y"])
    np.testing.assert_array_equal(loaded.y_test[:1000], published["y_test"])
    np.testing.assert_array_equal(np.bincount(loaded.y_test[1000:]), [400] * 10)
    arguments = get_dataset_args(as_dict=True)
    # The extra examples are make_dataset's with extra_test_seed, in its order, on the published scale: its own
    # output (centred and scaled by its own raw statistics) times the ratio of the two scales, which its
    # returned time axis 't' (divided by the raw std) gives, plus a shift.
    extra_seed = loaded.meta["options"]["extra_test_seed"]
    own = make_dataset(ObjectView(arguments | {"seed": extra_seed, "num_samples": 4000, "train_split": 1.0}))
    np.testing.assert_array_equal(loaded.y_test[1000:], own["y"])
    extra = loaded.x_test[1000:, :, 0] * std + mean
    scale = published["t"][0] / own["t"][0]
    shift = (extra - scale * own["x"]).mean()
    np.testing.assert_allclose(extra, scale * own["x"] + shift, atol=2e-6)
    assert loaded.meta["generator_arguments"] == {key: value for key, value in arguments.items() if key != "url"}
    assert loaded.meta["published_test_examples"] == 1000 and loaded.meta["source"].startswith("mnist1d 0.")
    assert loaded.meta["options"]["extra_test_seed"] != arguments["seed"]


def test_mnist1d_options_default_to_the_generator_defaults():
    """``split_sizes`` reads the options' defaults from the builder's signature: they are the package's."""
    from mnist1d.data import get_dataset_args

    defaults = {name: parameter.default for name, parameter in inspect.signature(data._build_mnist1d).parameters.items()
                if name not in ("seed", "cache_dir", "extra_test_samples", "extra_test_seed")}
    arguments = get_dataset_args(as_dict=True)
    assert {key: list(value) if isinstance(value, tuple) else value for key, value in defaults.items()} == \
        {key: value for key, value in arguments.items() if key not in ("seed", "url", "shuffle_seq")}
    assert arguments["shuffle_seq"] is False


def test_mnist1d_extra_test_seed_must_differ_from_the_generator_seed(tmp_path):
    """The same seed would draw the published examples again, training examples among them."""
    with pytest.raises(data.DataError, match="extra_test_seed = 7 is the generator's seed") as rejected:
        data.prepare("mnist1d", tmp_path / "x.npz", seed=7, extra_test_seed=7, num_samples=1000, extra_test_samples=20)
    assert rejected.value.option == "extra_test_seed" and not list(tmp_path.iterdir())


def test_mnist1d_generation_leaves_global_random_state_alone(tmp_path):
    """``mnist1d`` seeds NumPy's and Python's global generators; ``prepare`` restores them."""
    np.random.seed(3)
    random.seed(3)
    expected = (np.random.get_state()[1].copy(), random.getstate())
    meta = data.prepare("mnist1d", tmp_path / "small.npz", seed=5, num_samples=200, extra_test_samples=100)
    assert meta["shapes"] == {"x_train": [160, 40, 1], "y_train": [160], "x_test": [140, 40, 1], "y_test": [140]}
    np.testing.assert_array_equal(np.random.get_state()[1], expected[0])
    assert random.getstate() == expected[1]


def test_synthetic_is_seeded_balanced_and_learnable(tmp_path):
    options = {"n_train": 200, "n_test": 100, "image_size": 6, "channels": 2, "num_classes": 5}
    meta = data.prepare("synthetic", tmp_path / "a.npz", seed=3, **options)
    data.prepare("synthetic", tmp_path / "b.npz", seed=3, **options)
    a, b = data.load(tmp_path / "a.npz"), data.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.input_shape == (6, 6, 2) and meta["num_classes"] == 5
    np.testing.assert_array_equal(np.bincount(a.y_train), [40] * 5)
    # Nearest class mean (the simplest learner) already separates the classes.
    means = np.stack([a.x_train[a.y_train == c].mean(axis=0) for c in range(5)])
    distances = ((a.x_test[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    assert (distances.argmin(axis=1) == a.y_test).mean() > 0.9


# ---------------------------------------------------------------- augment, probe set


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)


def test_augment_keeps_shape_and_is_deterministic_in_the_key(images):
    key = jax.random.key(0)
    out = jax.jit(data.augment)(key, images)
    assert out.shape == images.shape
    np.testing.assert_array_equal(out, data.augment(key, images))
    assert not np.array_equal(out, data.augment(jax.random.key(1), images))
    changed = np.any(np.asarray(out) != images, axis=(1, 2, 3))
    assert changed.sum() >= len(images) // 2


def test_augment_matches_a_hand_computation(images):
    key = jax.random.key(42)
    crop_key, flip_key = jax.random.split(key)
    row, col = np.asarray(jax.random.randint(crop_key, (16, 2), 0, 9))[0]
    flip = bool(jax.random.bernoulli(flip_key, 0.5, (16,))[0])
    padded = np.zeros((16, 16, 3), np.float32)
    padded[4:12, 4:12] = images[0]
    expected = padded[row:row + 8, col:col + 8]
    expected = expected[:, ::-1] if flip else expected
    np.testing.assert_array_equal(data.augment(key, images)[0], expected)


def test_augment_without_padding_only_flips(images):
    out = np.asarray(data.augment(jax.random.key(0), images, padding=0))
    flipped = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(out == images, axis=(1, 2, 3))
    assert np.all(flipped | kept) and flipped.any() and kept.any()


def test_probe_indices_are_balanced_sorted_and_fixed():
    labels = np.repeat(np.arange(10), 30)[np.random.default_rng(0).permutation(300)]
    probe = data.probe_indices(labels, 25, seed=0)
    assert len(np.unique(probe)) == 25 and np.all(np.diff(probe) > 0)
    np.testing.assert_array_equal(np.bincount(labels[probe]), [3] * 5 + [2] * 5)
    np.testing.assert_array_equal(probe, data.probe_indices(labels, 25, seed=0))
    assert not np.array_equal(probe, data.probe_indices(labels, 25, seed=1))
    with pytest.raises(data.DataError, match="class 1 has 1"):
        data.probe_indices(np.array([0, 0, 0, 1]), 4)
    with pytest.raises(data.DataError, match="between 1 and 300"):
        data.probe_indices(labels, 301)


def test_training_subsets_are_fixed_uniform_or_class_balanced():
    """One seed for every training subset: a uniform sample in random order (a run's train-split
    metrics), the class-balanced probe-style subset (C5, C6), or every example in order."""
    labels = np.repeat(np.arange(10), 30)[np.random.default_rng(0).permutation(300)]
    uniform = data.training_subset(labels, 40, class_balanced=False)
    np.testing.assert_array_equal(uniform, np.random.default_rng(data.TRAINING_SUBSET_SEED).permutation(300)[:40])
    balanced = data.training_subset(labels, 40, class_balanced=True)
    np.testing.assert_array_equal(balanced, data.probe_indices(labels, 40, seed=data.TRAINING_SUBSET_SEED))
    np.testing.assert_array_equal(np.bincount(labels[balanced]), [4] * 10)
    np.testing.assert_array_equal(data.training_subset(labels, None, class_balanced=True), np.arange(300))


def test_mnist1d_split_below_its_promised_class_counts_is_refused(tmp_path, monkeypatch):
    """``prepare`` checks the class bound the config checks relied on: with no margin below the expected count
    (``MNIST1D_BOUND_SDS`` 0) some class of a random split falls short, and the data are refused."""
    monkeypatch.setattr(data, "MNIST1D_BOUND_SDS", 0)
    with pytest.raises(data.DataError, match="fall below the 80 of each class in training"):
        data.prepare("mnist1d", tmp_path / "x.npz", seed=42, num_samples=1000, extra_test_samples=0)
    assert not list(tmp_path.iterdir())
