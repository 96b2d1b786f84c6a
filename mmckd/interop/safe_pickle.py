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

Allocation is bounded too: a pickle of a few hundred bytes must not allocate gigabytes
(``bytearray(10**10)``, an ``ndarray`` of shape (10**6, 10**6), an object array whose state claims a
billion items). The unpickler (the pure-Python one, whose opcodes can be checked one by one) charges
every object it builds - strings, bytes, containers and their growth, memo entries, marks, the results
of the allowed calls and array states - against a budget of ``ALLOC_FACTOR`` times the file's size
plus ``ALLOC_SLACK``, computed *before* each call from its arguments, and refuses the pickle as soon as
the budget is exceeded. What it cannot bound it refuses: a call of anything but the allowed names, state
set on anything but arrays and dtypes, items added to anything but lists, dicts and sets, and the
object-building opcodes no plain-data pickle uses (NEWOBJ, INST, OBJ, out-of-band buffers). Reading
is capped by the file's size (a length prefix larger than the rest of the file is refused before
anything is allocated for it).
"""

from __future__ import annotations

import _codecs
import collections
import math
import os
import pickle
import sys
from pathlib import Path
from struct import error as struct_error

import numpy as np

from mmckd.interop.errors import InteropError, UnsafePickleError

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
_BUILTINS = ("list", "dict", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex",
             "bool")  # fmt: skip


ALLOC_FACTOR = 32  # what a pickle may build: this many times its own size (Python objects of small ints and
# short strings take 10-20x their pickled bytes; a bomb takes thousands of times) ...
ALLOC_SLACK = 1 << 20  # ... plus 1 MiB (Python object overheads of small files)


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


class _BudgetExceeded(_Refused):
    pass


def _prod(shape) -> int:
    if isinstance(shape, int):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _Refused(f"the pickle asks for an array of shape {str(shape)[:60]} (not a tuple of sizes)")
    return math.prod(shape)


def _itemsize(dtype) -> int:
    try:
        return int(np.dtype(dtype).itemsize)
    except (TypeError, ValueError) as e:
        raise _Refused(f"the pickle asks for an invalid dtype ({e})") from None


def _size_of(obj) -> int:
    return len(obj) if hasattr(obj, "__len__") else 0


_TEXT_CODECS = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "utf-8", "utf8", "ascii"}


def _plain_codec(args, name: str) -> None:
    for a in args[1:2]:
        if not isinstance(a, str) or a.lower().replace("_", "-") not in _TEXT_CODECS:
            raise _Refused(f"the pickle calls {name} with codec {a!r} (only latin1, utf-8 and ascii are allowed)")


class _Guard:
    """An allowed callable and how much its call will allocate, judged from its arguments before it runs."""

    def __init__(self, func, name: str, cost) -> None:
        self.func, self.name, self.cost = func, name, cost


def _guards() -> dict[int, _Guard]:
    """id(callable returned by find_class) -> its guard."""
    import builtins

    table = _allowed()
    guards: dict[int, _Guard] = {}

    def add(func, name, cost):
        guards[id(func)] = _Guard(func, name, cost)

    def buffer_cost(name):
        def cost(args):
            if len(args) == 1 and isinstance(args[0], int) and not isinstance(args[0], bool):
                return args[0]  # bytes(n) / bytearray(n): n zero bytes
            _plain_codec(args, name)
            return 2 * _size_of(args[0]) if args else 0

        return cost

    def container_cost(per_item):
        return lambda args: per_item * _size_of(args[0]) if args else 0

    def str_cost(args):
        _plain_codec(args, "str")
        return 4 * _size_of(args[0]) if args else 0

    add(builtins.bytes, "bytes", buffer_cost("bytes"))
    add(builtins.bytearray, "bytearray", buffer_cost("bytearray"))
    add(builtins.str, "str", str_cost)
    for name, per_item in (("list", 8), ("tuple", 8), ("set", 64), ("frozenset", 64), ("dict", 64)):
        add(getattr(builtins, name), name, container_cost(per_item))
    add(collections.OrderedDict, "OrderedDict", container_cost(128))
    for name in ("int", "float", "complex", "bool"):
        add(getattr(builtins, name), name, lambda args: sum(_size_of(a) for a in args if isinstance(a, (str, bytes))))
    add(_latin1_encode, "_codecs.encode", lambda args: 2 * _size_of(args[0]) if args else 0)
    add(np.dtype, "numpy.dtype", lambda args: 0)

    def ndarray_cost(args):  # ndarray(shape, dtype=float, ...)
        if not args:
            return 0
        return _prod(args[0]) * _itemsize(args[1] if len(args) > 1 else float)

    add(np.ndarray, "numpy.ndarray", ndarray_cost)
    for (mod, name), func in table.items():
        if name == "_reconstruct":  # _reconstruct(ndarray, shape, dtype): np.empty(shape, dtype)

            def reconstruct_cost(args):
                if len(args) != 3 or args[0] is not np.ndarray:
                    raise _Refused("the pickle calls numpy _reconstruct for something other than numpy.ndarray")
                return _prod(args[1]) * _itemsize(args[2])

            add(func, f"{mod}._reconstruct", reconstruct_cost)
        elif name == "scalar":  # scalar(dtype, data)
            add(func, f"{mod}.scalar", lambda args: _itemsize(args[0]) if args else 0)
        elif name == "_frombuffer":  # a view of a buffer the pickle holds (its size is checked by numpy)
            add(func, f"{mod}._frombuffer", lambda args: 0)
    missing = [k for k, f in table.items() if id(f) not in guards]
    assert not missing, f"allowed callables without a guard: {missing}"
    return guards


class _LimitedReader:
    """A binary file whose reads never ask for more than what is left in it (a forged length prefix of
    10**12 bytes is an error, not an allocation)."""

    def __init__(self, f, size: int) -> None:
        self._f, self._left = f, size

    def read(self, n: int = -1) -> bytes:
        if n is not None and n > self._left:
            raise pickle.UnpicklingError(f"pickle data was truncated (a length of {n} bytes, {self._left} left)")
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readinto(self, b) -> int:
        if len(b) > self._left:
            raise pickle.UnpicklingError("pickle data was truncated")
        k = self._f.readinto(b)
        self._left -= k
        return k

    def readline(self) -> bytes:
        line = self._f.readline()
        self._left -= len(line)
        return line


_OP = pickle  # opcode constants live in the pickle module
_CREATES = [  # opcodes that push a new object built from the pickle's bytes: charged its size
    _OP.INT, _OP.BININT, _OP.BININT1, _OP.BININT2, _OP.LONG, _OP.LONG1, _OP.LONG4, _OP.STRING, _OP.BINSTRING,
    _OP.SHORT_BINSTRING, _OP.BINBYTES, _OP.SHORT_BINBYTES, _OP.BINBYTES8, _OP.UNICODE, _OP.BINUNICODE,
    _OP.SHORT_BINUNICODE, _OP.BINUNICODE8, _OP.FLOAT, _OP.BINFLOAT, _OP.EMPTY_LIST, _OP.EMPTY_DICT,
    _OP.EMPTY_SET, _OP.LIST, _OP.DICT, _OP.TUPLE, _OP.TUPLE1, _OP.TUPLE2, _OP.TUPLE3, _OP.FROZENSET,
]  # fmt: skip
_GROWS = {  # opcode -> (where its target sits before the opcode runs, the target's allowed types)
    _OP.APPEND[0]: ("stack", 2, (list,)),
    _OP.APPENDS[0]: ("mark", 1, (list,)),
    _OP.SETITEM[0]: ("stack", 3, (dict, collections.OrderedDict)),
    _OP.SETITEMS[0]: ("mark", 1, (dict, collections.OrderedDict)),
    _OP.ADDITEMS[0]: ("mark", 1, (set,)),
}
_MEMO_PUTS = [_OP.PUT, _OP.BINPUT, _OP.LONG_BINPUT, _OP.MEMOIZE]
_REFUSED_OPS = {
    _OP.NEWOBJ[0]: "NEWOBJ (builds an arbitrary class)",
    _OP.NEWOBJ_EX[0]: "NEWOBJ_EX (builds an arbitrary class)",
    _OP.INST[0]: "INST (builds an arbitrary class)",
    _OP.OBJ[0]: "OBJ (builds an arbitrary class)",
    _OP.NEXT_BUFFER[0]: "out-of-band buffers",
}
_MEMO_ENTRY_COST = 64
_MARK_COST = 64


class _AllowListUnpickler(pickle._Unpickler):
    """The pure-Python Unpickler with an allow-list find_class and an allocation budget (module docstring)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, budget: int) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 numpy pickles keep their raw bytes
        self._table = _allowed()
        self._guards = _guards()
        self._budget = budget
        self._spent = 0

    def _charge(self, n: int, what: str = "its objects") -> None:
        self._spent += int(n)
        if self._spent > self._budget:
            raise _BudgetExceeded(
                f"{what} would take it past {self._budget:,} bytes of memory, the most a pickle of its size may "
                f"allocate ({ALLOC_FACTOR}x its size + {ALLOC_SLACK >> 20} MiB)"
            )

    def find_class(self, module: str, name: str):
        found = self._table.get((module, name))
        if found is None:
            raise _Refused(f"the pickle calls {module}.{name}, which is not plain data")
        return found

    def persistent_load(self, pid):
        raise _Refused(f"the pickle uses persistent ids ({str(pid)[:60]!r})")

    # --- calls: only the allowed callables, each charged before it runs
    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        guard = self._guards.get(id(func))
        if guard is None or guard.func is not func:
            raise _Refused(f"the pickle calls a {type(func).__name__} object, which is not an allowed name")
        if not isinstance(args, tuple):
            raise _Refused(f"the pickle calls {guard.name} with {type(args).__name__} arguments")
        cost = guard.cost(args)
        self._charge(cost, f"calling {guard.name} for {cost:,} bytes")
        stack[-1] = func(*args)

    dispatch[_OP.REDUCE[0]] = load_reduce

    # --- state: arrays (checked against their shape) and dtypes only
    def load_build(self) -> None:
        stack = self.stack
        state, inst = stack[-1], stack[-2]
        if type(inst) is np.ndarray:
            cost = self._array_state_cost(state)
            self._charge(cost, f"an array of {cost:,} bytes")
        elif not isinstance(inst, np.dtype):
            raise _Refused(f"the pickle sets the state of a {type(inst).__name__} (only arrays and dtypes have one)")
        stack.pop()
        inst.__setstate__(state)

    dispatch[_OP.BUILD[0]] = load_build

    @staticmethod
    def _array_state_cost(state) -> int:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("the pickle gives an array a state that is not (version, shape, dtype, fortran, data)")
        shape, dtype, raw = state[-4], state[-3], state[-1]
        if not isinstance(dtype, np.dtype):
            raise _Refused(f"the pickle gives an array the dtype {type(dtype).__name__}")
        n = _prod(shape)
        if dtype.hasobject:
            if not isinstance(raw, list) or len(raw) != n:
                found = len(raw) if isinstance(raw, list) else type(raw).__name__
                raise _Refused(f"the pickle gives an object array of {n} items a state of {found} items")
            return 8 * n
        nbytes = n * dtype.itemsize
        if not isinstance(raw, (bytes, bytearray, str)) or len(raw) != nbytes:
            raise _Refused(f"the pickle gives an array of {nbytes:,} bytes a state of {_size_of(raw):,} bytes")
        return nbytes

    def load_bytearray8(self) -> None:  # the base class allocates bytearray(n) before reading
        (n,) = pickle.unpack("<Q", self.read(8))
        self._charge(n, f"a bytearray of {n:,} bytes")
        b = self.read(n)
        if len(b) != n:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(b))

    dispatch[_OP.BYTEARRAY8[0]] = load_bytearray8


def _charged_create(load):
    def op(self) -> None:
        load(self)
        obj = self.stack[-1]
        if type(obj) is int and -5 <= obj <= 256:
            return  # Python's cached small ints cost nothing
        self._charge(sys.getsizeof(obj))

    return op


def _charged_growth(load, where: str, depth: int, kinds: tuple):
    def op(self) -> None:
        try:
            target = self.stack[-depth] if where == "stack" else self.metastack[-1][-depth]
        except IndexError:
            raise pickle.UnpicklingError("the pickle adds items to nothing") from None
        if type(target) not in kinds:
            raise _Refused(f"the pickle adds items to a {type(target).__name__}")
        before = sys.getsizeof(target)
        load(self)
        self._charge(max(0, sys.getsizeof(target) - before))

    return op


def _charged_fixed(load, cost: int):
    def op(self) -> None:
        self._charge(cost)
        load(self)

    return op


def _refused_op(what: str):
    def op(self) -> None:
        raise _Refused(f"the pickle uses {what}, which plain data does not need")

    return op


for _code in _CREATES:
    _AllowListUnpickler.dispatch[_code[0]] = _charged_create(pickle._Unpickler.dispatch[_code[0]])
for _key, (_where, _depth, _kinds) in _GROWS.items():
    _AllowListUnpickler.dispatch[_key] = _charged_growth(pickle._Unpickler.dispatch[_key], _where, _depth, _kinds)
for _code in _MEMO_PUTS:
    _AllowListUnpickler.dispatch[_code[0]] = _charged_fixed(pickle._Unpickler.dispatch[_code[0]], _MEMO_ENTRY_COST)
_AllowListUnpickler.dispatch[pickle.MARK[0]] = _charged_fixed(pickle._Unpickler.dispatch[pickle.MARK[0]], _MARK_COST)
for _key, _what in _REFUSED_OPS.items():
    _AllowListUnpickler.dispatch[_key] = _refused_op(_what)


def allocation_budget(size: int) -> int:
    """The most a pickle of ``size`` bytes may allocate while it is read."""
    return ALLOC_FACTOR * size + ALLOC_SLACK


def load_pickle(path: str | os.PathLike) -> object:
    """The object stored in the pickle at path, rebuilt with the allow-list only (see module docstring).

    Raises UnsafePickleError for a pickle that names anything else or would allocate far more than its
    size, InteropError for a file that is missing or not a readable pickle.
    """
    path = Path(path)
    try:
        f = open(path, "rb", buffering=1 << 20)
        size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise InteropError(f"{path}: cannot open ({e.strerror or e})") from None
    with f:
        reader = _LimitedReader(f, size)
        try:
            return _AllowListUnpickler(reader, allocation_budget(size)).load()
        except _Refused as e:
            raise UnsafePickleError(
                f"{path}: refused to load: {e} (only numpy arrays, lists, dicts, strings and numbers are read, "
                f"{'within a memory budget' if isinstance(e, _BudgetExceeded) else 'without calling code'})"
            ) from None
        except RecursionError:
            raise UnsafePickleError(f"{path}: refused to load: its objects are nested too deeply") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                struct_error, OverflowError) as e:  # fmt: skip
            raise InteropError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
        except MemoryError:
            raise InteropError(f"{path}: not enough memory to load this pickle") from None
