"""Restricted unpickling: open the official checkpoints without running their code.

The official checkpoints hold more than ``torch.load(weights_only=True)`` allows (a pickled
yacs ``CfgNode``, NumPy scalars), and a full unpickler would run whatever a file asks for.
:class:`RestrictedUnpickler` resolves only the globals in :data:`ALLOWED_GLOBALS` (tensor
rebuild functions, ``OrderedDict``, ``set``, NumPy arrays and scalars); ``yacs.config.CfgNode``
becomes :class:`~bpbreid.official.config.OfficialConfig`; any other global stops the load
with an :class:`UnsafeGlobalError` naming it. TorchScript archives, which ``torch.load`` would
hand to ``torch.jit.load`` whatever the unpickler, are refused before the file is opened
(:func:`bpbreid.serialization.check_not_torchscript`).
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from bpbreid.errors import CheckpointError
from bpbreid.official.config import OfficialConfig
from bpbreid.serialization import check_not_torchscript

__all__ = [
    "ALLOWED_GLOBALS",
    "RestrictedUnpickler",
    "UnsafeGlobalError",
    "restricted_pickle",
    "restricted_torch_load",
]


def _numpy_global(name: str) -> Any:
    """``numpy._core.multiarray.<name>`` (NumPy 2), else ``numpy.core.multiarray.<name>``."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return getattr(core.multiarray, name)


def _numpy_attr(name: str) -> Any:
    import numpy as np

    return getattr(np, name)


def _torch_utils(name: str) -> Any:
    import torch._utils

    return getattr(torch._utils, name)


# (module, name) -> a function returning the object. Everything a model checkpoint of the
# official code holds: tensors (rebuild functions; storages are handled by torch.load
# itself), ordered dicts (state dicts), sets (yacs bookkeeping), NumPy arrays and scalars
# (test scores), bytes (_codecs.encode: how protocol 2 stores bytes), and the yacs config.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): lambda: OrderedDict,
    ("collections", "Counter"): lambda: __import__("collections").Counter,
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    ("builtins", "slice"): lambda: slice,
    ("_codecs", "encode"): lambda: __import__("_codecs").encode,
    ("torch._utils", "_rebuild_tensor"): lambda: _torch_utils("_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _torch_utils("_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"): lambda: _torch_utils("_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"): lambda: _torch_utils("_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"): lambda: _torch_utils(
        "_rebuild_parameter_with_state"
    ),
    ("torch", "Size"): lambda: torch.Size,
    ("torch", "device"): lambda: torch.device,
    ("numpy", "ndarray"): lambda: _numpy_attr("ndarray"),
    ("numpy", "dtype"): lambda: _numpy_attr("dtype"),
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("yacs.config", "CfgNode"): lambda: OfficialConfig,
}


class UnsafeGlobalError(CheckpointError):
    """A pickle asked for a global outside :data:`ALLOWED_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :data:`ALLOWED_GLOBALS`.

    Torch dtypes (``torch.float32``...) are allowed too; ``torch.load`` resolves storage
    types itself before asking this class. Python 2 names (``__builtin__``) are translated
    as the standard unpickler does.
    """

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles name Python 2 modules ('__builtin__ set'): translate them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        factory = ALLOWED_GLOBALS.get((module, name))
        if factory is not None:
            return factory()
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeGlobalError(
            f"refusing to load the global '{module}.{name}': it is not on the allow-list of "
            "the restricted unpickler (only tensors, plain containers, NumPy scalars/arrays "
            "and the yacs config of the official BPBReID checkpoints may appear)"
        )


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs: Any) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# A module-like object for torch.load(pickle_module=...): torch subclasses its Unpickler
# (zip format) or calls its load() (legacy format), so both paths are restricted.
restricted_pickle = types.ModuleType("bpbreid_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
restricted_pickle.loads = _restricted_loads  # type: ignore[attr-defined]
restricted_pickle.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
restricted_pickle.__doc__ = "pickle restricted to bpbreid.official.ALLOWED_GLOBALS"


def restricted_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` through :class:`RestrictedUnpickler` (zip and legacy formats).

    Raises:
        CheckpointError: missing file, a global outside the allow-list (named), or a
            corrupt/truncated file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(
            f"Checkpoint '{p}' not found. Download an official one with "
            "bpbreid.official.download_official_checkpoint('market1501') or "
            "`python -m bpbreid infer --official market1501 ...`."
        )
    # torch.load would hand a TorchScript archive to torch.jit.load, which runs the
    # archive's own code whatever pickle_module says: refuse those before opening.
    check_not_torchscript(p)
    try:
        return torch.load(
            p, map_location=map_location, pickle_module=restricted_pickle, weights_only=False
        )
    except UnsafeGlobalError as exc:
        # The message names the refused global; torch.load's frames would add nothing.
        raise CheckpointError(f"Checkpoint '{p}' was not loaded: {exc}.") from None
    except Exception as exc:  # corrupt zip, truncated pickle, wrong file type...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"Checkpoint '{p}' could not be read ({type(exc).__name__}: {first}). The file "
            "is corrupt or incomplete: download it again."
        ) from exc
