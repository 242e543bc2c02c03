"""dlx.data: batching (seeded shuffle, drop_remainder, prefetch), load_digits, and the
IDX reader / MNIST loader on small IDX files written by the tests (no download)."""

import gzip
import struct

import numpy as np
import pytest

import dlx
from dlx.data import IDXError, batches, load_digits, load_fashion_mnist, load_mnist, read_idx
from dlx.data.mnist import write_idx


# -- batching -------------------------------------------------------------------------------
def labels_of(iterable):
    return [dlx.to_numpy(by).tolist() for _, by, _ in iterable]


def test_batches_cover_every_sample_once_in_a_seeded_order(backend):
    x = np.arange(20, dtype="float32").reshape(10, 2)
    y = np.arange(10)
    dlx.set_seed(5)
    first = labels_of(batches(x, y, batch_size=4, shuffle=True))
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10))
    dlx.set_seed(5)
    again = batches(x, y, batch_size=4, shuffle=True)
    assert labels_of(again) == first
    assert labels_of(again) != first  # a new order on each pass
    assert labels_of(batches(x, y, batch_size=4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_drop_remainder_and_structures():
    x = {"a": np.zeros((10, 3)), "b": np.ones((10,))}
    y = [np.arange(10), np.arange(10) * 2]
    it = batches(x, y, batch_size=4, drop_remainder=True)
    assert len(it) == 2
    got = list(it)
    assert (
        len(got) == 2
        and got[0][0]["a"].shape == (4, 3)
        and got[1][1][1].tolist() == [8, 10, 12, 14]
    )


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_gives_the_same_batches_on_the_device(backend, depth):
    x = np.random.default_rng(0).normal(size=(23, 3)).astype("float32")
    y = np.arange(23)
    w = np.linspace(0, 1, 23).astype("float32")
    dlx.set_seed(1)
    plain = list(batches(x, y, w, batch_size=5, shuffle=True))
    dlx.set_seed(1)
    ahead = list(batches(x, y, w, batch_size=5, shuffle=True, prefetch=depth))
    assert len(plain) == len(ahead) == 5
    for a, b in zip(plain, ahead):
        for part_a, part_b in zip(a, b):
            assert backend.owns(part_b)  # already on the current backend
            np.testing.assert_array_equal(dlx.to_numpy(part_b), part_a)


def test_prefetch_stops_its_thread_when_the_loop_breaks():
    import threading

    x = np.zeros((100, 2))
    before = threading.active_count()
    for step, _ in enumerate(batches(x, batch_size=2, prefetch=2)):
        if step == 3:
            break
    for _ in range(50):
        if threading.active_count() == before:
            break
        threading.Event().wait(0.02)
    assert threading.active_count() == before


def test_prefetch_hands_errors_to_the_caller():
    class Exploding(np.ndarray):
        def __getitem__(self, index):
            raise RuntimeError("bad sample")

    x = np.zeros((6, 2)).view(Exploding)
    with pytest.raises(RuntimeError, match="bad sample"):
        list(batches(x, batch_size=2, prefetch=1))


def test_batching_arguments_are_checked():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        batches(x, batch_size=0)
    with pytest.raises(ValueError, match="prefetch must be"):
        batches(x, prefetch=-1)
    with pytest.raises(ValueError, match="x has 4, y has 3"):
        batches(x, np.zeros(3))


def test_load_digits():
    (x_train, y_train), (x_test, y_test) = load_digits()
    assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert set(np.unique(y_train)) == set(range(10))
    (flat, _), _ = load_digits(image_shape=(64,))
    assert flat.shape == (1437, 64)


# -- IDX files ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array)
    raw = path.read_bytes()
    assert raw[:2] == (b"\x1f\x8b" if compress else b"\x00\x00")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_reader_on_hand_written_bytes(tmp_path):
    # the layout from LeCun's page: magic 0x00000803, dims as big-endian uint32, then data
    images = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    (tmp_path / "img").write_bytes(struct.pack(">IIII", 0x0803, 2, 2, 3) + images.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "img"), images)
    values = np.array([1.5, -2.25], dtype=">f4")
    (tmp_path / "f").write_bytes(struct.pack(">II", 0x0D01, 2) + values.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), [1.5, -2.25])


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "truncated IDX file: the header"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated IDX file: the shape"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", r"shape \(5,\) of uint8 needs 5 bytes, got 3"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "trailing bytes"),
        (b"\x00\x00\x0e\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "over max_bytes"),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader_rejects_bad_files(tmp_path, blob, message, compress):
    path = tmp_path / "bad.idx"
    path.write_bytes(gzip.compress(blob) if compress else blob)
    with pytest.raises(IDXError, match=message):
        read_idx(path)


def test_idx_reader_rejects_a_corrupt_gzip(tmp_path):
    blob = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")
    (tmp_path / "x.gz").write_bytes(blob[:-6])
    with pytest.raises(IDXError, match="x.gz"):
        read_idx(tmp_path / "x.gz")


def write_fake_mnist(folder, n_train=12, n_test=5, compress=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / (name + suffix), array)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_from_a_cache_folder(tmp_path, compress):
    arrays = write_fake_mnist(tmp_path / "mnist", compress=compress)
    (x_train, y_train), (x_test, y_test) = load_mnist(tmp_path / "mnist", download=False)
    assert x_train.shape == (12, 28, 28) and x_train.dtype == np.uint8
    np.testing.assert_array_equal(x_train, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    (x, _), _ = load_fashion_mnist(
        tmp_path / "mnist", download=False, normalize=True, image_shape=(28, 28, 1)
    )
    assert x.shape == (12, 28, 28, 1) and x.dtype == np.float32 and x.max() <= 1.0


def test_load_mnist_uses_dlx_data_and_explains_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DLX_DATA", str(tmp_path))
    write_fake_mnist(tmp_path / "fashion_mnist", n_train=3, n_test=2)
    (x, _), (xt, _) = load_fashion_mnist(download=False)
    assert len(x) == 3 and len(xt) == 2
    with pytest.raises(
        FileNotFoundError, match=r"train-images-idx3-ubyte\(\.gz\) is not in .*mnist"
    ):
        load_mnist(download=False)


def test_load_mnist_checks_images_against_labels(tmp_path):
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(IDXError, match="do not match labels"):
        load_mnist(tmp_path, download=False)


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(url, timeout=None):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match="could not download train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path / "m", download=True)


def test_download_checks_the_md5_and_caches(tmp_path, monkeypatch):
    import hashlib
    import io
    import urllib.request

    from dlx.data import mnist

    arrays = write_fake_mnist(tmp_path / "source")
    served = {
        name: (tmp_path / "source" / name).read_bytes() for name in [n + ".gz" for n in arrays]
    }
    monkeypatch.setitem(
        mnist.DATASETS,
        "mnist",
        {
            "mirrors": ("https://bad.example/", "https://good.example/"),
            "md5": {n: hashlib.md5(b).hexdigest() for n, b in served.items()},
        },
    )
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        name = url.rsplit("/", 1)[1]
        body = served[name] if url.startswith("https://good") else b"tampered"
        return io.BytesIO(body)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    (x, _), _ = load_mnist(tmp_path / "cache")
    np.testing.assert_array_equal(x, arrays["train-images-idx3-ubyte"])
    assert len(requested) == 8  # each file: the tampered mirror, then the good one
    load_mnist(tmp_path / "cache")  # now from the cache
    assert len(requested) == 8
