"""Datasets: prepare (fetch, verify, split, normalise) to one file per dataset, load, augment.

`prepare` writes `NAME.npz` (float32 inputs, channels last: NHWC images or NLC signals, normalised per
channel with train-split statistics; int32 labels) and `NAME.json` (provenance and statistics); `load` reads
them back. CIFAR-10 is read from its official binary archive with NumPy only: no pickle, nothing extracted
to disk. MNIST-1D is generated offline by the `mnist1d` package's own generator, never downloaded.
`split_sizes` gives a dataset's sizes from its options alone, so that configs are checked before
anything is built; JAX is imported by `augment` only, so that checking starts no JAX.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import random
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:
    import jax  # annotations only: JAX is imported where augmentation runs

DATASETS = ("digits", "cifar10", "synthetic", "mnist1d")
ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_SIZE = 170_052_171
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_META_FILE = "batches.meta.txt"
CIFAR10_MEMBERS = frozenset(
    f"{CIFAR10_FOLDER}/{name}"
    for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE, "readme.html")
)
CIFAR10_IMAGE_SHAPE = (3, 32, 32)  # channels first in the binary records
CIFAR10_RECORD_BYTES = 1 + int(np.prod(CIFAR10_IMAGE_SHAPE))
CIFAR10_RECORDS_PER_FILE = 10_000  # each of the five training batches and the test batch
CIFAR10_META_MAX_BYTES = 4096  # the class-name listing (61 bytes in the official archive)


MNIST1D_CLASSES = 10
MNIST1D_BOUND_SDS = 6
"""``split_sizes`` promises each MNIST-1D class at least its expected count in the (randomly shuffled) training
split less this many standard deviations (hypergeometric); ``prepare`` checks the promise on the data."""

DIGITS_CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
"""Images per class of scikit-learn's bundled digits (1797 in all)."""


class DataError(Exception):
    """A dataset file is missing, corrupt, unsafe or inconsistent, or an option impossible (the message
    names it; ``option``, the option at fault, if any)."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class SplitSizes(NamedTuple):
    """A dataset's sizes, known from its options alone (``split_sizes``)."""

    train: int
    test: int
    num_classes: int
    smallest_train_class: int
    """The fewest training examples any class can have: the bound for class-balanced subsets
    (``probe_indices``)."""


def split_sizes(dataset: str, options: dict) -> SplitSizes:
    """The sizes ``prepare(dataset, ..., **options)`` will produce, without building anything.

    Raises ``DataError`` naming the option for an unknown option, or one that gives a split too small to
    hold an example of every class or larger than the data (digits: ``test_fraction``; synthetic and
    cifar10: ``n_train``, ``n_test``).
    """
    if dataset not in _BUILDERS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    defaults = {name: parameter.default for name, parameter in inspect.signature(_BUILDERS[dataset]).parameters.items()
                if name not in ("seed", "cache_dir")}
    unknown = set(options) - set(defaults)
    if unknown:
        raise DataError(f"{dataset}: unknown option(s) {sorted(unknown)}")
    options = defaults | dict(options)
    if dataset == "cifar10":  # the official balanced split, or its class-balanced subsets n_train, n_test
        records = int(options["records_per_file"])
        split = {"n_train": len(CIFAR10_TRAIN_FILES) * records, "n_test": records}
        for option, available in split.items():
            if options[option] is not None:
                if not 10 <= int(options[option]) <= available:
                    raise DataError(f"cifar10: option {option} = {options[option]} must lie between 10 (one example "
                                    f"of each class) and the {available} examples of its split", option)
                split[option] = int(options[option])
        return SplitSizes(split["n_train"], split["n_test"], 10, split["n_train"] // 10)
    if dataset == "mnist1d":
        return _mnist1d_sizes(options)
    if dataset == "synthetic":
        classes = int(options["num_classes"])
        for option in ("n_train", "n_test"):
            if int(options[option]) < classes:
                raise DataError(f"synthetic: option {option} = {options[option]} is fewer than one example of "
                                f"each of num_classes = {classes}", option)
        return SplitSizes(int(options["n_train"]), int(options["n_test"]), classes, int(options["n_train"]) // classes)
    # digits: scikit-learn's stratified split takes ceil(fraction * n) test examples and gives each
    # class of count c at least floor(c * m / n) of a split of m, so m >= n / (smallest c) holds them all.
    total, fraction = sum(DIGITS_CLASS_COUNTS), float(options["test_fraction"])
    test = math.ceil(fraction * total)
    train = total - test
    needed = math.ceil(total / min(DIGITS_CLASS_COUNTS))
    if not 0 < fraction < 1 or min(train, test) < needed:
        raise DataError(f"digits: option test_fraction = {fraction} gives {train} training and {test} test "
                        f"examples; each split needs at least {needed} to hold every one of the 10 classes",
                        "test_fraction")
    return SplitSizes(train, test, len(DIGITS_CLASS_COUNTS), min(count * train // total for count in DIGITS_CLASS_COUNTS))


def _mnist1d_sizes(options: dict) -> SplitSizes:
    """MNIST-1D's sizes: ``make_dataset`` draws ``num_samples // 10`` examples of each class, shuffles them
    and keeps the first ``int(n * train_split)`` for training; ``extra_test_samples`` (a multiple of 10, an
    equal number of each class) join the test split. The classes of the shuffled splits are bounded below
    (``_fewest_of_a_class``), and ``prepare`` checks the bound."""
    per_class = int(options["num_samples"]) // MNIST1D_CLASSES
    total, extra = per_class * MNIST1D_CLASSES, int(options["extra_test_samples"])
    train = int(total * float(options["train_split"]))
    if per_class < 1:
        raise DataError(f"mnist1d: option num_samples = {options['num_samples']} draws no example of some of the "
                        f"{MNIST1D_CLASSES} classes", "num_samples")
    if extra < 0 or extra % MNIST1D_CLASSES:
        raise DataError(f"mnist1d: option extra_test_samples = {extra} must be a multiple of {MNIST1D_CLASSES} "
                        f"(as many of each class) and at least 0", "extra_test_samples")
    smallest_train = _fewest_of_a_class(per_class, total, train)
    if smallest_train < 1:
        raise DataError(f"mnist1d: options num_samples = {options['num_samples']} and train_split = "
                        f"{options['train_split']} give {train} training examples of {total}, too few to be sure "
                        f"of every one of the {MNIST1D_CLASSES} classes", "train_split")
    if _fewest_of_a_class(per_class, total, total - train) + extra // MNIST1D_CLASSES < 1:
        raise DataError(f"mnist1d: options num_samples = {options['num_samples']}, train_split = "
                        f"{options['train_split']} and extra_test_samples = {extra} give {total - train + extra} "
                        f"test examples, too few to be sure of every one of the {MNIST1D_CLASSES} classes",
                        "extra_test_samples")
    return SplitSizes(train, total - train + extra, MNIST1D_CLASSES, smallest_train)


def _fewest_of_a_class(per_class: int, total: int, drawn: int) -> int:
    """A lower bound on the examples of one class (``per_class`` of ``total``) among ``drawn`` taken at random
    without replacement: the hypergeometric mean less ``MNIST1D_BOUND_SDS`` standard deviations, or the
    certain bound if higher (a class can miss at most ``total - drawn`` of its examples)."""
    share = per_class / total
    variance = drawn * share * (1 - share) * (total - drawn) / max(total - 1, 1)
    likely = math.floor(drawn * share - MNIST1D_BOUND_SDS * math.sqrt(variance))
    return max(likely, per_class - (total - drawn), 0)


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset: normalised float32 inputs (NHWC images or NLC signals), int32 labels and their
    metadata."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    meta: dict

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, (H, W, C) or (L, C), as models need it."""
        return tuple(self.x_train.shape[1:])


# ---------------------------------------------------------------- preparation


def prepare(
    dataset: str, out: Path, *, seed: int = 0, cache_dir: Path | None = None, **options
) -> dict:
    """Build `dataset`, normalise it with train statistics, write `out` (.npz) and its .json.

    `options` go to the dataset's builder (digits: test_fraction; cifar10: url, expected_size,
    expected_md5, and records_per_file, which only tests of small archives change, n_train, n_test;
    synthetic: n_train, n_test, image_size, channels, num_classes, noise; mnist1d: the generator's arguments
    and extra_test_samples, extra_test_seed, ``_build_mnist1d``).
    Returns the metadata written to the .json file.
    """
    out = Path(out)
    if dataset not in _BUILDERS:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    if out.suffix != ".npz":
        raise DataError(f"{out}: output file must end in .npz")
    split_sizes(dataset, options)  # unknown options and splits too small, before any work
    x_train, y_train, x_test, y_test, meta = _BUILDERS[dataset](seed=seed, cache_dir=cache_dir, **options)

    axes = tuple(range(x_train.ndim - 1))  # every axis but the channels'
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    if np.any(std == 0):
        raise DataError(f"{dataset}: a channel of the train split is constant, cannot normalise")
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
    arrays = {
        "x_train": (x_train - mean32) / std32,
        "y_train": y_train.astype(np.int32),
        "x_test": (x_test - mean32) / std32,
        "y_test": y_test.astype(np.int32),
    }
    arrays_sha256 = _arrays_sha256(arrays)
    meta = {
        "dataset": dataset,
        **meta,
        "checksum": meta.get("checksum", f"sha256:{arrays_sha256}"),
        "arrays_sha256": arrays_sha256,
        "shapes": {name: list(array.shape) for name, array in arrays.items()},
        "num_classes": len(meta["class_names"]),
        "mean": mean.tolist(),
        "std": std.tolist(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _build_digits(*, seed: int, cache_dir: Path | None, test_fraction: float = 0.25):
    """scikit-learn's bundled 8x8 digits (pixels scaled to [0, 1]), stratified split by `seed`."""
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=float(test_fraction), stratify=digits.target,
        random_state=seed,
    )
    meta = {
        "source": f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})",
        "split_seed": seed,
        "options": {"test_fraction": float(test_fraction)},
        "class_names": [str(c) for c in range(10)],
    }
    return x_train, y_train, x_test, y_test, meta


def _build_cifar10(
    *, seed: int, cache_dir: Path | None, url: str = CIFAR10_URL,
    expected_size: int = CIFAR10_SIZE, expected_md5: str = CIFAR10_MD5,
    records_per_file: int = CIFAR10_RECORDS_PER_FILE,
    n_train: int | None = None, n_test: int | None = None,
):
    """CIFAR-10 from its verified official archive (pixels scaled to [0, 1]); the official split.

    ``expected_size``/``expected_md5`` name another archive in the official layout (tests build
    one); ``n_train``/``n_test`` keep a class-balanced subset of a split (``probe_indices``, drawn
    with ``seed``), so that the paper's pipeline can run on a fraction of the data in a test.
    """
    archive = fetch_cifar10(
        cache_dir, url=url, expected_size=int(expected_size), expected_md5=expected_md5
    )
    x_train, y_train, x_test, y_test, class_names = read_cifar10(archive, records_per_file=int(records_per_file))
    subsets = {name: int(size) for name, size in (("n_train", n_train), ("n_test", n_test)) if size is not None}
    if "n_train" in subsets:
        x_train, y_train = _subset(x_train, y_train, subsets["n_train"], seed)
    if "n_test" in subsets:
        x_test, y_test = _subset(x_test, y_test, subsets["n_test"], seed)
    meta = {
        "source": url,
        "checksum": f"md5:{expected_md5}",
        "split_seed": seed if subsets else None,  # the official train/test split; `seed` draws subsets only
        "options": subsets,
        "class_names": class_names,
    }
    return x_train / np.float32(255), y_train, x_test / np.float32(255), y_test, meta


def _subset(images: np.ndarray, labels: np.ndarray, size: int, seed: int):
    """A class-balanced subset of ``size`` examples (``probe_indices``; ``split_sizes`` checked the size)."""
    keep = probe_indices(labels, size, seed=seed)
    return images[keep], labels[keep]


def _build_synthetic(
    *, seed: int, cache_dir: Path | None, n_train: int = 512, n_test: int = 256,
    image_size: int = 8, channels: int = 3, num_classes: int = 4, noise: float = 1.0,
):
    """Images = a fixed random pattern per class + Gaussian noise: learnable, tiny, seeded."""
    n_train, n_test, num_classes = int(n_train), int(n_test), int(num_classes)
    image_shape = (int(image_size), int(image_size), int(channels))
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(num_classes, *image_shape))

    def sample(n: int):
        labels = rng.permutation(np.arange(n) % num_classes)
        images = patterns[labels] + float(noise) * rng.normal(size=(n, *image_shape))
        return images.astype(np.float32), labels

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    meta = {
        "source": "itlin.data synthetic (class pattern + Gaussian noise)",
        "split_seed": seed,
        "options": {"n_train": n_train, "n_test": n_test, "image_size": image_shape[0],
                    "channels": image_shape[2], "num_classes": num_classes, "noise": float(noise)},
        "class_names": [f"class_{c}" for c in range(num_classes)],
    }
    return x_train, y_train, x_test, y_test, meta


def _build_mnist1d(
    *, seed: int, cache_dir: Path | None, num_samples: int = 5000, train_split: float = 0.8, template_len: int = 12,
    padding: tuple[int, int] = (36, 60), scale_coeff: float = 0.4, max_translation: int = 48,
    corr_noise_scale: float = 0.25, iid_noise_scale: float = 0.02, shear_scale: float = 0.75,
    final_seq_length: int = 40, extra_test_samples: int = 4000, extra_test_seed: int = 1,
):
    """MNIST-1D from the ``mnist1d`` package's generator (offline; its download and pickle are never used).

    The defaults are the package's ``get_dataset_args()``; with them and ``seed`` 42 the training split and the
    first test examples are exactly the published ones (``make_dataset``'s 4000 and 1000). The
    ``extra_test_samples`` that follow are drawn by the same generator with ``extra_test_seed`` and put on the
    published data's scale: ``make_dataset`` centres and scales each dataset by its own raw mean and standard
    deviation, so the extra signals are made by its loop (``_mnist1d_raw``, checked here to reproduce
    ``make_dataset`` exactly) and scaled with the published raw statistics. Signals are (L, 1): one channel.
    """
    from importlib.metadata import version

    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    if int(extra_test_seed) == seed:
        raise DataError(f"mnist1d: option extra_test_seed = {extra_test_seed} is the generator's seed (split_seed): "
                        f"its examples would repeat those of the training and test splits", "extra_test_seed")
    generator = {"num_samples": int(num_samples), "train_split": float(train_split), "template_len": int(template_len),
                 "padding": [int(p) for p in padding], "scale_coeff": float(scale_coeff),
                 "max_translation": int(max_translation), "corr_noise_scale": float(corr_noise_scale),
                 "iid_noise_scale": float(iid_noise_scale), "shear_scale": float(shear_scale), "shuffle_seq": False,
                 "final_seq_length": int(final_seq_length), "seed": seed}
    args = ObjectView(get_dataset_args(as_dict=True) | generator)
    with _numpy_random_state_kept():
        published = make_dataset(args)
        raw, labels = _mnist1d_raw(args)
        extra_args = ObjectView(vars(args) | {"seed": int(extra_test_seed), "num_samples": int(extra_test_samples)})
        extra, extra_labels = _mnist1d_raw(extra_args) if int(extra_test_samples) else (raw[:0], labels[:0])
    mean, std = raw.mean(), raw.std()
    if not np.array_equal((raw - mean) / std, np.concatenate([published["x"], published["x_test"]])) \
            or not np.array_equal(labels, np.concatenate([published["y"], published["y_test"]])):
        raise DataError(f"mnist1d {version('mnist1d')}: make_dataset no longer matches its loop (_mnist1d_raw); "
                        f"the extra test examples cannot be put on the published scale")
    x_test = np.concatenate([published["x_test"], (extra - mean) / std])
    if _repeats(np.concatenate([published["x"], x_test])):
        raise DataError("mnist1d: a signal occurs twice among the training and test examples")
    y_test = np.concatenate([published["y_test"], extra_labels])
    options = {key: value for key, value in generator.items() if key not in ("seed", "shuffle_seq")} \
        | {"extra_test_samples": int(extra_test_samples), "extra_test_seed": int(extra_test_seed)}
    _check_mnist1d_classes(_mnist1d_sizes(options), published["y"], y_test)
    meta = {
        "source": f"mnist1d {version('mnist1d')} (mnist1d.data.make_dataset, generated offline)",
        "split_seed": seed,
        "options": options,
        "generator_arguments": generator,
        "generator_sha256": _arrays_sha256({"x_train": published["x"], "y_train": published["y"],
                                            "x_test": published["x_test"], "y_test": published["y_test"]}),
        "published_test_examples": len(published["y_test"]),
        "class_names": [str(c) for c in range(MNIST1D_CLASSES)],
    }
    return published["x"][..., None].astype(np.float32), published["y"], x_test[..., None].astype(np.float32), y_test, meta


def _check_mnist1d_classes(sizes: SplitSizes, y_train: np.ndarray, y_test: np.ndarray) -> None:
    """The split is what ``split_sizes`` promised the config checks: every class in each split, no class of the
    training split below its bound ``smallest_train_class``."""
    train_counts, test_counts = (np.bincount(labels, minlength=sizes.num_classes) for labels in (y_train, y_test))
    if train_counts.min() < sizes.smallest_train_class or test_counts.min() < 1:
        raise DataError(f"mnist1d: the classes of the split drawn (training {train_counts.tolist()}, test "
                        f"{test_counts.tolist()}) fall below the {sizes.smallest_train_class} of each class in "
                        f"training that its options promise; another split_seed draws other examples")


def _mnist1d_raw(args) -> tuple[np.ndarray, np.ndarray]:
    """``mnist1d.data.make_dataset``'s signals and labels before its last step, which centres and scales the
    whole dataset by its own mean and standard deviation: its loop over classes, the package's ``transform``
    of each template, then its shuffle."""
    from mnist1d.data import get_templates
    from mnist1d.transform import transform
    from mnist1d.utils import set_seed

    templates = get_templates()
    set_seed(args.seed)
    per_class = args.num_samples // len(templates["y"])
    signals, labels = [], []
    for label in range(len(templates["y"])):
        for _ in range(per_class):
            signals.append(transform(templates["x"][label], templates["t"], args)[0])
            labels.append(templates["y"][label])
    order = np.random.permutation(len(labels))
    return np.stack(signals)[order], np.stack(labels)[order]


@contextlib.contextmanager
def _numpy_random_state_kept():
    """``mnist1d`` seeds NumPy's and Python's global generators: restore both afterwards."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _repeats(signals: np.ndarray) -> bool:
    """Whether any two rows of ``signals`` are byte for byte the same."""
    rows = np.ascontiguousarray(signals.reshape(len(signals), -1))
    return len({row.tobytes() for row in rows}) < len(rows)


_BUILDERS = {"digits": _build_digits, "cifar10": _build_cifar10, "synthetic": _build_synthetic,
             "mnist1d": _build_mnist1d}


def _arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the four arrays, in a fixed order."""
    digest = hashlib.sha256()
    for name in ARRAY_NAMES:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


# ---------------------------------------------------------------- CIFAR-10 archive


def default_cache_dir() -> Path:
    """Where downloads are kept: `$ITLIN_CACHE`, else `~/.cache/itlin`."""
    return Path(os.environ.get("ITLIN_CACHE", Path.home() / ".cache" / "itlin"))


def fetch_cifar10(
    cache_dir: Path | None = None, *, url: str = CIFAR10_URL,
    expected_size: int = CIFAR10_SIZE, expected_md5: str = CIFAR10_MD5,
) -> Path:
    """Return the verified CIFAR-10 archive in `cache_dir`, downloading it first if absent.

    The download goes to a `.part` file that is renamed only after its size and MD5 match;
    any file failing the check is removed, so the cache never holds a bad archive.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    archive = cache_dir / CIFAR10_ARCHIVE
    if archive.exists():
        _verify(archive, archive, expected_size, expected_md5)
        return archive
    cache_dir.mkdir(parents=True, exist_ok=True)
    part = archive.with_name(archive.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as sink, tqdm(
            total=expected_size, unit="B", unit_scale=True, unit_divisor=1024, desc=archive.name
        ) as progress:
            while chunk := response.read(1 << 20):
                sink.write(chunk)
                progress.update(len(chunk))
    except OSError as error:  # URLError, timeouts, connection resets, disk full
        part.unlink(missing_ok=True)
        raise DataError(
            f"could not download {url} ({error}). If this machine is offline, download "
            f"{CIFAR10_ARCHIVE} ({expected_size} bytes, MD5 {expected_md5}) elsewhere and "
            f"place it at {archive}"
        ) from error
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _verify(part, archive, expected_size, expected_md5)
    part.replace(archive)
    return archive


def _verify(path: Path, archive: Path, expected_size: int, expected_md5: str) -> None:
    """Check `path` (the archive or its download in progress) by size then MD5; remove it if bad."""
    size = path.stat().st_size
    if size != expected_size:
        path.unlink()
        raise DataError(
            f"{archive}: {size} bytes, expected {expected_size} (truncated or incomplete "
            f"download); removed {path}, download it again"
        )
    with open(path, "rb") as source:
        md5 = hashlib.file_digest(source, "md5").hexdigest()
    if md5 != expected_md5:
        path.unlink()
        raise DataError(
            f"{archive}: MD5 {md5}, expected {expected_md5} (corrupt or wrong file); "
            f"removed {path}, download it again"
        )


def read_cifar10(archive: Path, *, records_per_file: int = CIFAR10_RECORDS_PER_FILE):
    """Read CIFAR-10 straight from its binary tar.gz: `(x_train, y_train, x_test, y_test, names)`.

    Images are uint8 NHWC, labels uint8. Every member is checked before anything is read: only
    regular files with the official names (and their folder) are accepted, each batch file must
    hold exactly `records_per_file` records (the official layout's 10,000; tests of small archives
    pass fewer) and the class listing at most `CIFAR10_META_MAX_BYTES`, so that no member of an
    unexpected size is ever read into memory.
    """
    archive = Path(archive)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {member.name: member for member in tar.getmembers()}
            for member in members.values():
                _check_member(archive, member)
            needed = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
            missing = [name for name in needed if f"{CIFAR10_FOLDER}/{name}" not in members]
            if missing:
                raise DataError(f"{archive}: missing member(s) {missing} in {CIFAR10_FOLDER}/")
            for name in needed:
                _check_size(archive, members[f"{CIFAR10_FOLDER}/{name}"], records_per_file)
            contents = {
                name: tar.extractfile(members[f"{CIFAR10_FOLDER}/{name}"]).read() for name in needed
            }
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{archive}: unreadable archive ({error})") from error
    train = [_decode_records(archive, name, contents[name]) for name in CIFAR10_TRAIN_FILES]
    x_test, y_test = _decode_records(archive, CIFAR10_TEST_FILE, contents[CIFAR10_TEST_FILE])
    class_names = contents[CIFAR10_META_FILE].decode("ascii").split()
    if len(class_names) != 10:
        raise DataError(f"{archive}: {CIFAR10_META_FILE} lists {len(class_names)} classes, not 10")
    x_train = np.concatenate([images for images, _ in train])
    y_train = np.concatenate([labels for _, labels in train])
    return x_train, y_train, x_test, y_test, class_names


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Reject members that could escape the target folder, links, and unexpected names."""
    name = member.name
    if name.startswith("/") or ".." in PurePosixPath(name).parts:
        raise DataError(f"{archive}: member {name!r} points outside the archive folder")
    if member.issym() or member.islnk():
        raise DataError(f"{archive}: member {name!r} is a link")
    is_folder = member.isdir() and name.rstrip("/") == CIFAR10_FOLDER
    if not (is_folder or (member.isfile() and name in CIFAR10_MEMBERS)):
        raise DataError(f"{archive}: unexpected member {name!r}")


def _check_size(archive: Path, member: tarfile.TarInfo, records_per_file: int) -> None:
    """Reject, from its header, a batch file that is not `records_per_file` whole records, or a
    class listing larger than `CIFAR10_META_MAX_BYTES`."""
    if member.name.endswith(CIFAR10_META_FILE):
        if member.size > CIFAR10_META_MAX_BYTES:
            raise DataError(f"{archive}: {member.name} holds {member.size} bytes, more than "
                            f"{CIFAR10_META_MAX_BYTES} for ten class names")
    elif member.size != records_per_file * CIFAR10_RECORD_BYTES:
        raise DataError(f"{archive}: {member.name} holds {member.size} bytes, expected {records_per_file} "
                        f"records of {CIFAR10_RECORD_BYTES} bytes ({records_per_file * CIFAR10_RECORD_BYTES} bytes)")


def _decode_records(archive: Path, name: str, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-length records (1 label byte + 3072 CHW pixel bytes, sizes checked by `_check_size`)
    -> uint8 NHWC images, labels."""
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        raise DataError(f"{archive}: {name} has label {labels.max()}, outside 0..9")
    images = records[:, 1:].reshape(-1, *CIFAR10_IMAGE_SHAPE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


# ---------------------------------------------------------------- loading and use


def load(path: Path) -> Dataset:
    """Read a file written by `prepare` and its .json metadata, checking they belong together."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    for required in (path, meta_path):
        if not required.exists():
            raise DataError(f"{required}: not found; create it with `python -m itlin prepare`")
    meta = json.loads(meta_path.read_text())
    with np.load(path, allow_pickle=False) as stored:
        missing = [name for name in ARRAY_NAMES if name not in stored]
        if missing:
            raise DataError(f"{path}: missing array(s) {missing}")
        arrays = {name: stored[name] for name in ARRAY_NAMES}
    if _arrays_sha256(arrays) != meta.get("arrays_sha256"):
        raise DataError(f"{path}: arrays do not match the checksum in {meta_path}")
    return Dataset(
        **arrays, num_classes=int(meta["num_classes"]),
        class_names=tuple(meta["class_names"]), meta=meta,
    )


def augment(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """Random crop after zero padding by `padding` pixels, then random horizontal flip, per image.

    Pure and jit-able. With `crop_key, flip_key = jax.random.split(key)`, the crop offsets are
    `randint(crop_key, (n, 2), 0, 2 * padding + 1)` (row, column) and the flips
    `bernoulli(flip_key, 0.5, (n,))`.
    """
    import jax
    import jax.numpy as jnp

    if images.ndim != 4:
        raise ValueError(f"augment: random crops and flips are for images (N, H, W, C), got inputs of shape "
                         f"{images.shape}; train without augmentation")
    n, height, width, channels = images.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * padding + 1)
    flips = jax.random.bernoulli(flip_key, 0.5, (n,))
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def crop_and_flip(image, offset, flip):
        crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))
        return jnp.where(flip, crop[:, ::-1], crop)

    return jax.vmap(crop_and_flip)(padded, offsets, flips)


TRAINING_SUBSET_SEED = 0
"""Seed of every training subset (``training_subset``): the same examples for every run of a dataset."""


def training_subset(labels: np.ndarray, size: int | None, *, class_balanced: bool) -> np.ndarray:
    """The fixed subset of ``size`` training examples (indices into ``labels``) that a run works on, drawn
    with ``TRAINING_SUBSET_SEED``; ``size`` None keeps every example, in order.

    ``class_balanced=False``, a uniform sample (in random order, so a smaller subset is a prefix of a larger
    one): the examples a training run trains on (its ``train_size``) and those on which it measures its
    train-split loss and accuracy (``eval_train_size``), which estimate those of the whole split. ``True``, a
    class-balanced, sorted subset (``probe_indices``): the training sets of C5 and C6, small sets that
    must hold every class (their targets are every class's one-hot columns).
    """
    if size is None:
        return np.arange(len(labels))
    if class_balanced:
        return probe_indices(labels, size, seed=TRAINING_SUBSET_SEED)
    return np.random.default_rng(TRAINING_SUBSET_SEED).permutation(len(labels))[:size]


def probe_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """A fixed, class-balanced, sorted subset of `n` indices into `labels` (the NTK probe set).

    Each class gets n // C examples, the first n % C classes one more; drawn with `seed`.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if not 1 <= n <= labels.size:
        raise DataError(f"probe set size {n} must be between 1 and {labels.size}")
    rng = np.random.default_rng(seed)
    chosen = []
    for position, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        count = n // classes.size + (position < n % classes.size)
        if count > members.size:
            raise DataError(f"probe set: class {label} has {members.size} examples, needs {count}")
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))
