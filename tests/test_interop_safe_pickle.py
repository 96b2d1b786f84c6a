"""The allow-list unpickler: plain data loads, anything that would call code is refused before it runs."""

from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest

from mmckd.interop.errors import InteropError, UnsafePickleError
from mmckd.interop.safe_pickle import load_pickle


class _RunsCode:
    """Unpickling this calls os.system (what a hostile 'aligned_50.pkl' would do)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def _plain_data() -> dict:
    return {
        "train": {
            "id": np.array(["a$_$1", "b$_$2"], dtype=object),
            "raw_text": np.array(["fine", "bad"]),  # fixed-width unicode dtype
            "text": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
            "text_bert": np.ones((2, 3, 3), np.int64),
            "audio_lengths": [3, 2],
            "regression_labels": np.array([1.5, -0.4], np.float64),
            "scalar": np.float32(2.5),
            "nested": collections.OrderedDict(a=(1, 2.0, "x", b"y", None, True), s={1, 2}, f=frozenset({3})),
        }
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_loads_identically(tmp_path, protocol):
    data = _plain_data()
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    got = load_pickle(path)
    t, g = data["train"], got["train"]
    assert list(g["id"]) == list(t["id"]) and list(g["raw_text"]) == list(t["raw_text"])
    for key in ("text", "text_bert", "regression_labels"):
        assert g[key].dtype == t[key].dtype and np.array_equal(g[key], t[key])
    assert g["audio_lengths"] == [3, 2] and g["scalar"] == np.float32(2.5)
    assert g["nested"] == t["nested"] and isinstance(g["nested"], collections.OrderedDict)


def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"train": {"id": np.array(["x"]), "text": _RunsCode(f"touch {marker}")}}
    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(UnsafePickleError) as err:
        load_pickle(path)
    msg = str(err.value)
    assert str(path) in msg and "system" in msg and "\n" not in msg
    assert not marker.exists()
    # the same pickle does run code with plain pickle.load: the refusal above is what protected us
    pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize(
    "payload, name",
    [
        (_Evals(), r"(__builtin__|builtins)\.eval"),  # protocol 2 writes Python 2's module name
        (collections.Counter("ab"), r"collections\.Counter"),  # not plain data either, even if harmless
    ],
)
def test_other_callables_are_refused_by_name(tmp_path, payload, name):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"k": payload}, protocol=2))
    with pytest.raises(UnsafePickleError, match=name):
        load_pickle(path)


def test_codecs_encode_is_only_allowed_for_latin1(tmp_path):
    # hand-written protocol-2 pickle: _codecs.encode("abc", "rot13")
    evil = b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcq\x01X\x05\x00\x00\x00rot13q\x02\x86q\x03Rq\x04."
    path = tmp_path / "codec.pkl"
    path.write_bytes(evil)
    with pytest.raises(UnsafePickleError, match="rot13"):
        load_pickle(path)
    ok = evil.replace(b"\x05\x00\x00\x00rot13", b"\x06\x00\x00\x00latin1")
    path.write_bytes(ok)
    assert load_pickle(path) == b"abc"


def test_unreadable_files_are_clear_errors(tmp_path):
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(pickle.dumps(_plain_data(), protocol=4)[:200])
    with pytest.raises(InteropError, match="not a readable pickle") as err:
        load_pickle(trunc)
    assert str(trunc) in str(err.value)
    with pytest.raises(InteropError, match="cannot open"):
        load_pickle(tmp_path / "missing.pkl")


# --------------------------------------------------------------------------- allocation bombs (issue 11, problem 6)


class _Call:
    """Pickles as a call of func(*args): what a hostile pickle writes by hand."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _object_array_claiming(items: int) -> bytes:
    """A real protocol-2 pickle of a 2-item object array whose state then claims `items` items."""
    data = pickle.dumps(np.array([1, 2], dtype=object), protocol=2)
    assert data.count(b"K\x02\x85") == 1  # the shape tuple (2,)
    return data.replace(b"K\x02\x85", b"J" + int(items).to_bytes(4, "little") + b"\x85")


def _bombs() -> dict[str, bytes]:
    from numpy.core.multiarray import _reconstruct

    return {
        "bytearray(8 GiB)": pickle.dumps({"x": _Call(bytearray, 2**33)}, protocol=2),
        "bytes(1 GB)": pickle.dumps({"x": _Call(bytes, 10**9)}, protocol=4),
        "ndarray (10^6, 10^6) f8 via _reconstruct": pickle.dumps(
            _Call(_reconstruct, np.ndarray, (10**6, 10**6), b"f8"), protocol=4
        ),
        "numpy.ndarray((10^5, 10^5), f8)": pickle.dumps(_Call(np.ndarray, (10**5, 10**5), "f8"), protocol=4),
        "subarray dtype of 8 GB": pickle.dumps(_Call(_reconstruct, np.ndarray, (10,), np.dtype(("f8", (10**8,)))), 4),
        "object array state claiming 10^9 items": _object_array_claiming(10**9),
        "BYTEARRAY8 of 10^12 bytes": b"\x80\x05\x96" + (10**12).to_bytes(8, "little") + b".",
        "300,000 empty sets": b"\x80\x04(" + b"\x8f" * 300_000 + b"l.",
        "300,000 memo entries": b"\x80\x04N" + b"\x94" * 300_000 + b".",
    }


@pytest.mark.parametrize("name", list(_bombs()))
def test_allocation_bombs_are_refused_before_they_allocate(tmp_path, name):
    import resource

    path = tmp_path / "bomb.pkl"
    path.write_bytes(_bombs()[name])
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    # 4 GiB of address space for this test: a bomb that got through would fail with MemoryError
    # ("not enough memory", an InteropError) instead of the UnsafePickleError asserted below.
    limit = 4 << 30 if hard == resource.RLIM_INFINITY else min(hard, 4 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        with pytest.raises(UnsafePickleError) as err:
            load_pickle(path)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    msg = str(err.value)
    assert msg.startswith(f"{path}: refused to load: ") and "\n" not in msg


def test_forged_length_prefix_is_a_truncated_pickle_not_an_allocation(tmp_path):
    path = tmp_path / "forged.pkl"
    path.write_bytes(b"\x80\x04\x8e" + (10**12).to_bytes(8, "little") + b".")  # BINBYTES8 of 10^12 bytes
    with pytest.raises(InteropError, match="truncated"):
        load_pickle(path)


def test_plain_data_of_small_objects_still_loads(tmp_path):
    # Python objects of small ints and short strings take many times their pickled size: still plain data.
    data = {"ints": list(range(200_000)), "ids": [f"v{i}$_${i % 7}" for i in range(50_000)], "f": [0.5] * 1000}
    for protocol in (2, 4, 5):
        path = tmp_path / f"small{protocol}.pkl"
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        assert load_pickle(path) == data


def test_real_mmsa_pickle_loads_within_budget(shared_data):
    path = shared_data / "mosi-poria" / "dev.pkl"
    if not path.exists():
        pytest.skip(f"{path} not found")
    data = load_pickle(path)
    assert set(data) >= {"train", "valid", "test"}
    plain = pickle.loads(path.read_bytes(), encoding="latin1")  # trusted here: the file is our own test data
    for split, part in plain.items():
        for key, value in part.items():
            assert np.array_equal(np.asarray(data[split][key]), np.asarray(value)), (split, key)
