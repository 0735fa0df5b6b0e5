"""The IDX datasets (MNIST, Fashion-MNIST): where they come from, their checksums, reading the files, a checked download."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from pyro_vae.errors import DataError

logger = logging.getLogger(__name__)

MNIST_RESOURCES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_RESOURCES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# name -> (sub-folder of the data dir, checksums, default mirror)
IDX_DATASETS: dict[str, tuple[str, dict[str, str], str]] = {
    "mnist": ("mnist", MNIST_RESOURCES, "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion-mnist": (
        "fashion_mnist",
        FASHION_MNIST_RESOURCES,
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
}
IDX_MAGIC_IMAGES, IDX_MAGIC_LABELS = 2051, 2049
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or raw) into a numpy array, validating its header."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path} is a damaged or truncated gzip file ({exc}); "
                            "delete it and download it again") from exc
    if len(raw) < 4:
        raise DataError(f"{path} is too short ({len(raw)} bytes) to be an IDX file")
    magic = struct.unpack(">I", raw[:4])[0]
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0 or (
            expected_magic is not None and magic != expected_magic):
        want = f"magic {expected_magic}" if expected_magic else "an IDX header"
        raise DataError(f"{path} has magic number {magic} but {want} was expected; "
                        "is it the right file (images 2051, labels 2049)?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header; download it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path} holds {len(raw) - header} data bytes but its header {dims} "
                        f"announces {expected}; the file is truncated or corrupt, download it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))



def file_md5(path: str | os.PathLike) -> str:
    """Hex MD5 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()



def download_idx(name: str, root: Path, *, base_url: str | None = None, force: bool = False) -> Path:
    """Fetch the IDX files of ``"mnist"`` or ``"fashion-mnist"`` into ``root/<name>/``.

    Each file is streamed to a temporary file in the target folder, its MD5 checked against
    the official value, and only then moved into place with ``os.replace``; a mismatch deletes
    the download and raises :class:`DataError`. Files already present with the right MD5 are
    skipped unless ``force``. Returns the dataset folder.
    """
    key = name.lower().replace("_", "-")
    if key not in IDX_DATASETS:
        raise DataError(f"cannot download {name!r}: only {', '.join(IDX_DATASETS)} have checksummed "
                        "mirrors ('digits' ships with scikit-learn; place binarized-mnist files "
                        "in the data folder yourself)")
    subdir, resources, default_url = IDX_DATASETS[key]
    folder = Path(root) / subdir
    folder.mkdir(parents=True, exist_ok=True)
    base = (base_url or default_url).rstrip("/") + "/"
    for filename, expected in resources.items():
        target = folder / filename
        if target.is_file() and not force:
            if file_md5(target) == expected:
                logger.info("%s already present with the right MD5", target)
                continue
            logger.warning("%s has a wrong MD5; downloading it again", target)
        url = base + filename
        logger.info("downloading %s -> %s", url, target)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
        try:
            digest = hashlib.md5(usedforsecurity=False)
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != expected:
                raise DataError(f"MD5 mismatch for {url}: expected {expected}, got "
                                f"{digest.hexdigest()}; the download was deleted, try another "
                                "mirror (base_url) or fetch the file by hand")
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(f"could not download {url} ({exc}); check the network or put the "
                            f"file in {folder} yourself") from exc
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return folder



__all__ = ["MNIST_RESOURCES", "FASHION_MNIST_RESOURCES", "IDX_DATASETS", "read_idx", "file_md5", "download_idx"]
