"""Fashion-MNIST, MNIST and CIFAR-10: the source's own train / test split is kept.

Fashion-MNIST and MNIST are read from their gzip'd (or plain) IDX files; torchvision only downloads
them. Where the files are looked for:

- fashion-mnist: ``--data-dir``, else ``/usr/share/datasets/fashion-mnist/`` (Debian's
  ``dataset-fashion-mnist``), else ``~/.cache/retracer/fashion-mnist`` (torchvision download).
- mnist: ``--data-dir``, else ``~/.cache/retracer/mnist`` (torchvision download).
- cifar10: ``--data-dir`` (holding ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``), else
  ``~/.cache/retracer/cifar10`` (torchvision download).

Downloads fail fast when offline (a short reachability check, then a socket timeout) with a
DataError that says which files to provide and where. Ids look like ``fashion-mnist-train-00042``.
"""

from __future__ import annotations

import gzip
import os
import socket
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from engine.data.manifest import DataError, ImageSet
from engine.data.sources.base import SourceOptions, register

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_NAMES = ", ".join(f"{n}.gz" for pair in IDX_FILES.values() for n in pair)
SYSTEM_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


def cache_dir(name: str) -> Path:
    """~/.cache/retracer/<name> (or $RETRACER_CACHE/<name>)."""
    return Path(os.environ.get("RETRACER_CACHE", Path.home() / ".cache" / "retracer")) / name


# -- IDX files ---------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip'd if the name ends in .gz): uint8 array of its shape."""
    p = Path(path)
    try:
        data = p.read_bytes()
        if p.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{p}: cannot read ({e})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{p}: not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise DataError(f"{p}: IDX element type 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{p}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n = int(np.prod(shape))
    if len(data) - header != n:
        raise DataError(
            f"{p}: IDX header says {shape} ({n} bytes) but the file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_files(folder: str | os.PathLike[str]) -> dict[str, Path] | None:
    """The four MNIST-style IDX files (gzip'd or not) in `folder` or its torchvision raw/ subfolders."""
    base = Path(folder).expanduser()
    for d in (base, base / "raw", base / "FashionMNIST" / "raw", base / "MNIST" / "raw"):
        found: dict[str, Path] = {}
        for name in (n for pair in IDX_FILES.values() for n in pair):
            for cand in (d / f"{name}.gz", d / name):
                if cand.is_file():
                    found[name] = cand
                    break
        if len(found) == 4:
            return found
    return None


def idx_image_set(name: str, files: dict[str, Path], class_names: list[str]) -> ImageSet:
    """Train and test from IDX files -> ImageSet with split 'train' / 'test', images (N, 1, H, W)."""
    images, labels, ids, split = [], [], [], []
    for part, (img_name, lab_name) in IDX_FILES.items():
        x, y = read_idx(files[img_name]), read_idx(files[lab_name])
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DataError(
                f"{files[img_name]}: images {x.shape} and labels {y.shape} do not match"
            )
        if y.size and int(y.max()) >= len(class_names):
            raise DataError(
                f"{files[lab_name]}: label {int(y.max())} but {name} has {len(class_names)} classes"
            )
        images.append(torch.from_numpy(x.copy()).unsqueeze(1))
        labels.append(torch.from_numpy(y.astype(np.int64)))
        ids += [f"{name}-{part}-{i:05d}" for i in range(len(y))]
        split += [part] * len(y)
    if images[0].shape[1:] != images[1].shape[1:]:
        raise DataError(f"{name}: train and test images differ in size")
    return ImageSet(torch.cat(images), torch.cat(labels), ids, list(class_names), split=split)


# -- downloads ---------------------------------------------------------------------------------
class DownloadFailed(Exception):
    """The download could not be done (offline, refused, or broken); the message says why."""


def reachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host can be opened within `timeout` seconds
    (name resolution included, which a socket timeout alone does not bound)."""
    u = urlparse(url)
    if not u.hostname:
        return False
    port = u.port or (443 if u.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((u.hostname, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    return bool(ok)


def download(urls: list[str], fetch: Callable[[], object]) -> None:
    """Run torchvision's `fetch` if one of `urls` is reachable, with a socket timeout; else fail fast."""
    if os.environ.get("RETRACER_OFFLINE"):
        raise DownloadFailed("RETRACER_OFFLINE is set")
    if not any(reachable(u) for u in urls):
        hosts = ", ".join(sorted({urlparse(u).hostname or u for u in urls}))
        raise DownloadFailed(f"cannot reach {hosts} (offline?)")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(READ_TIMEOUT_S)
    try:
        fetch()
    except Exception as e:
        raise DownloadFailed(
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else e}"
        ) from e
    finally:
        socket.setdefaulttimeout(old)


# -- sources -----------------------------------------------------------------------------------
@register("fashion-mnist")
def load_fashion_mnist(arg: str, options: SourceOptions) -> ImageSet:
    """Zalando's Fashion-MNIST: 60,000 train + 10,000 test 28x28 grayscale images, 10 classes."""
    dirs = (
        [Path(options.data_dir)]
        if options.data_dir
        else [SYSTEM_FASHION_DIR, cache_dir("fashion-mnist")]
    )
    for d in dirs:
        files = find_idx_files(d)
        if files:
            return idx_image_set("fashion-mnist", files, FASHION_CLASSES)
    root = dirs[-1]
    why = "downloading is off"
    if options.download:
        from torchvision.datasets import FashionMNIST

        try:
            download(
                FashionMNIST.mirrors, lambda: FashionMNIST(str(root), train=True, download=True)
            )
            files = find_idx_files(root)
            if files:
                return idx_image_set("fashion-mnist", files, FASHION_CLASSES)
            why = f"the download left no IDX files in {root}"
        except DownloadFailed as e:
            why = f"the download failed: {e}"
    looked = " or ".join(str(d) for d in dirs)
    raise DataError(
        f"fashion-mnist: no IDX files in {looked} and {why}. Install Debian's dataset-fashion-mnist "
        f"(make data) or pass --data-dir with the IDX files ({IDX_NAMES})"
    )


@register("mnist")
def load_mnist(arg: str, options: SourceOptions) -> ImageSet:
    """LeCun's MNIST: 60,000 train + 10,000 test 28x28 grayscale digits (torchvision download)."""
    root = Path(options.data_dir).expanduser() if options.data_dir else cache_dir("mnist")
    names = [str(i) for i in range(10)]
    files = find_idx_files(root)
    if files:
        return idx_image_set("mnist", files, names)
    why = "downloading is off"
    if options.download:
        from torchvision.datasets import MNIST

        try:
            download(MNIST.mirrors, lambda: MNIST(str(root), train=True, download=True))
            files = find_idx_files(root)
            if files:
                return idx_image_set("mnist", files, names)
            why = f"the download left no IDX files in {root}"
        except DownloadFailed as e:
            why = f"the download failed: {e}"
    raise DataError(
        f"mnist: the IDX files are not in {root} and {why}. Provide them: put {IDX_NAMES} "
        f"(from https://ossci-datasets.s3.amazonaws.com/mnist/) in a folder and pass --data-dir FOLDER, "
        f"or put them in {cache_dir('mnist')}"
    )


@register("cifar10")
def load_cifar10(arg: str, options: SourceOptions) -> ImageSet:
    """CIFAR-10: 50,000 train + 10,000 test 32x32 RGB images, 10 classes (torchvision)."""
    from torchvision.datasets import CIFAR10

    root = Path(options.data_dir).expanduser() if options.data_dir else cache_dir("cifar10")
    if root.name == CIFAR10.base_folder:
        root = root.parent

    def both() -> tuple[CIFAR10, CIFAR10]:
        return CIFAR10(str(root), train=True, download=False), CIFAR10(
            str(root), train=False, download=False
        )

    try:
        train, test = both()
    except RuntimeError:
        why = "downloading is off"
        train = test = None
        if options.download:
            try:
                fetch = lambda: CIFAR10(str(root), train=True, download=True)  # noqa: E731
                if (root / CIFAR10.filename).is_file():
                    fetch()  # torchvision checks the archive's md5 and only extracts it
                else:
                    download([CIFAR10.url], fetch)
                train, test = both()
            except (DownloadFailed, RuntimeError) as e:
                why = f"the download failed: {e}"
        if train is None or test is None:
            raise DataError(
                f"cifar10: the CIFAR-10 files are not in {root} and {why}. Provide them: get "
                f"{CIFAR10.filename} from https://www.cs.toronto.edu/~kriz/cifar.html and either put it "
                f"in a folder or extract it there (FOLDER/{CIFAR10.base_folder}/), then pass --data-dir "
                f"FOLDER, or use {cache_dir('cifar10')} as FOLDER"
            ) from None
    images, labels, ids, split = [], [], [], []
    for part, ds in (("train", train), ("test", test)):
        images.append(torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))))
        labels.append(torch.as_tensor(ds.targets, dtype=torch.int64))
        ids += [f"cifar10-{part}-{i:05d}" for i in range(len(ds.targets))]
        split += [part] * len(ds.targets)
    return ImageSet(torch.cat(images), torch.cat(labels), ids, list(train.classes), split=split)
