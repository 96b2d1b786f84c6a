"""Reading pickles without running code: an allow-list unpickler.

A pickle names the callables that rebuild its objects, and plain ``pickle.load`` calls whatever it
names (``os.system`` included). ``load_pickle`` only resolves the names that plain data needs:

* numpy array and scalar reconstruction: ``numpy.core.multiarray._reconstruct`` / ``scalar``,
  ``numpy.core.numeric._frombuffer`` (protocol 5), ``numpy.ndarray``, ``numpy.dtype``, and numpy 2's
  ``numpy._core...`` spellings of the same;
* ``collections.OrderedDict``;
* the builtin containers and numbers (``list``, ``dict``, ``tuple``, ``set``, ``frozenset``, ``str``,
  ``bytes``, ``bytearray``, ``int``, ``float``, ``complex``, ``bool``);
* ``_codecs.encode`` with the ``latin1`` codec only: protocol 0-2 pickles store ``bytes`` (numpy's raw
  array data among them) as ``_codecs.encode(text, "latin1")``.

Anything else is refused with ``UnsafePickleError`` naming the file and the ``module.name`` found,
before anything is called. Lists, dicts, strings and numbers themselves need no name at all.
"""

from __future__ import annotations

import _codecs
import collections
import os
import pickle
from pathlib import Path

import numpy as np

from mmckd.interop.errors import InteropError, UnsafePickleError

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_BUILTINS = ("list", "dict", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex",
             "bool")  # fmt: skip


class _Refused(Exception):
    """Raised inside the unpickler; load_pickle turns it into UnsafePickleError naming the file."""


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` restricted to what pickle protocols 0-2 use it for: str -> bytes via latin1."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") != "latin1":
        raise _Refused(f"the pickle calls _codecs.encode with codec {encoding!r} (only latin1 is allowed)")
    return _codecs.encode(text, "latin1", "strict")


def _allowed() -> dict[tuple[str, str], object]:
    table: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _latin1_encode,
    }
    try:  # numpy 2 (and numpy 1.26's forward alias)
        from numpy._core import multiarray, numeric
    except ImportError:  # older numpy
        from numpy.core import multiarray, numeric

    for mod in _NUMPY_MODULES:
        table[(mod, "_reconstruct")] = multiarray._reconstruct
        table[(mod, "scalar")] = multiarray.scalar
    for mod in _NUMPY_NUMERIC:
        if hasattr(numeric, "_frombuffer"):
            table[(mod, "_frombuffer")] = numeric._frombuffer
    import builtins

    for name in _BUILTINS:
        table[("builtins", name)] = getattr(builtins, name)
        table[("__builtin__", name)] = getattr(builtins, name)  # protocol 0-2 pickles written by Python 2
    return table


class _AllowListUnpickler(pickle.Unpickler):
    """An Unpickler whose find_class resolves only the names in ``_allowed()``."""

    def __init__(self, file) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 numpy pickles keep their raw bytes
        self._table = _allowed()

    def find_class(self, module: str, name: str):
        found = self._table.get((module, name))
        if found is None:
            raise _Refused(f"the pickle calls {module}.{name}, which is not plain data")
        return found

    def persistent_load(self, pid):
        raise _Refused(f"the pickle uses persistent ids ({str(pid)[:60]!r})")


def load_pickle(path: str | os.PathLike) -> object:
    """The object stored in the pickle at path, rebuilt with the allow-list only (see module docstring).

    Raises UnsafePickleError for a pickle that names anything else, InteropError for a file that is
    missing or not a readable pickle.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InteropError(f"{path}: cannot open ({e.strerror or e})") from None
    with f:
        try:
            return _AllowListUnpickler(f).load()
        except _Refused as e:
            raise UnsafePickleError(
                f"{path}: refused to load: {e} (only numpy arrays, lists, dicts, strings and numbers are read)"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
            raise InteropError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
        except MemoryError:
            raise InteropError(f"{path}: not enough memory to load this pickle") from None
