"""Reading a Keras model file without Keras or TensorFlow: config JSON and weight arrays.

Supported containers:
- `.h5` full-model files (tf.keras 2.x and Keras 3 legacy writer): the config is the
  `model_config` attribute; weights live under `model_weights/<layer>` with `weight_names`.
- `.keras` zips (Keras 3): `config.json` and `model.weights.h5`, whose `.../vars` groups
  carry the owning layer's name.
Weights are read lazily, one layer at a time, straight from the HDF5 file.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ...graph.errors import ModelFileError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"


def sha256(path: Path) -> str:
    """The sha256 of a source file; of a directory ktorch wrote for Keras, of its model.py and
    model.weights.h5 in turn (what builds the model)."""
    path = Path(path)
    files = [path / "model.py", path / "model.weights.h5"] if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class KerasFile:
    """A Keras model file opened for reading (read-only)."""

    path: Path
    kind: str  # "h5" or "keras"
    config: dict[str, Any]
    keras_version: str
    backend: str
    _h5: h5py.File
    _zip: zipfile.ZipFile | None = None
    _vars_index: dict[tuple[str, ...], list[tuple[str, h5py.Dataset]]] = field(default_factory=dict)

    def close(self) -> None:
        self._h5.close()
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> KerasFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def keras2(self) -> bool:
        return self.keras_version.startswith("2.")

    def layer_weights(self, path: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
        """The weights of the layer at `path` (outer model names, then the layer's name),
        in the layer's own order, as (name, array) pairs."""
        if self.kind == "keras":
            return [(name, _array(ds)) for name, ds in self._vars_index.get(path, [])]
        group = self._h5["model_weights"] if "model_weights" in self._h5 else self._h5
        top = path[0]
        if top not in group:
            return []
        layer_group = group[top]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in layer_group.attrs.get("weight_names", [])]
        prefix = "/".join(path[1:]) if len(path) > 1 else None
        out = []
        for name in names:
            short = name
            if prefix is not None:
                # nested model: weights of its layers are listed under the outer layer
                inner = path[-1]
                if not (name.startswith(inner + "/") or f"/{inner}/" in name):
                    continue
                short = name[name.index(inner + "/") :]
            out.append((short, _array(layer_group[name])))
        return out


def _array(ds: h5py.Dataset) -> np.ndarray:
    """A weight as numpy: bfloat16, which HDF5 does not know, is stored by Keras as 2-byte
    opaque values (tagged dtype=bfloat16 in a .keras file); it is read as bfloat16 (ml_dtypes,
    as TensorFlow and JAX do), or widened exactly to float32 where ml_dtypes is missing."""
    array = np.asarray(ds)
    if array.dtype.kind != "V" or array.dtype.itemsize != 2:
        return array
    tag = _attr_text(ds.attrs.get("dtype", "bfloat16"))
    if tag != "bfloat16":
        raise ValueError(f"weight {ds.name} is stored as opaque 2-byte values tagged {tag!r}")
    bits = array.view(np.uint16)
    try:
        import ml_dtypes

        return bits.view(ml_dtypes.bfloat16)
    except ImportError:
        return (bits.astype(np.uint32) << 16).view(np.float32)


def open_keras_file(path: str | Path) -> KerasFile:
    """Open a `.h5` or `.keras` model file, read its config, and index its weights."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a Keras model file (.h5 or .keras)")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise ModelFileError(f"{path}: the file is empty")
    if head.startswith(HDF5_MAGIC):
        return _open_h5(path)
    if head.startswith(ZIP_MAGIC):
        return _open_zip(path)
    raise ModelFileError(f"{path}: not a Keras model file (neither HDF5 nor a .keras zip)")


def _attr_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _open_h5(path: Path) -> KerasFile:
    try:
        h5 = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001  (h5py raises OSError, RuntimeError, ... on damaged files)
        raise ModelFileError(f"{path}: cannot read the HDF5 file ({exc}); it may be truncated or corrupt") from None
    try:
        if "model_config" not in h5.attrs:
            raise ModelFileError(
                f"{path}: this .h5 holds weights only (no model config). Save the whole model "
                "(model.save('model.h5') or 'model.keras'), or rebuild it in Keras and save it"
            )
        config = json.loads(_attr_text(h5.attrs["model_config"]))
        keras_version = _attr_text(h5.attrs.get("keras_version", ""))
        backend = _attr_text(h5.attrs.get("backend", ""))
    except ModelFileError:
        h5.close()
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        h5.close()
        raise ModelFileError(f"{path}: the model config is not valid JSON ({exc})") from None
    except (OSError, RuntimeError, KeyError, TypeError) as exc:
        h5.close()
        raise ModelFileError(f"{path}: cannot read the HDF5 file ({exc}); it may be truncated or corrupt") from None
    return KerasFile(path=path, kind="h5", config=config, keras_version=keras_version, backend=backend, _h5=h5)


def _open_zip(path: Path) -> KerasFile:
    try:
        archive = zipfile.ZipFile(path, "r")
        names = set(archive.namelist())
        if "config.json" not in names:
            raise ModelFileError(f"{path}: the zip has no config.json; it is not a .keras model")
        config = json.loads(archive.read("config.json").decode("utf-8"))
        metadata = json.loads(archive.read("metadata.json").decode("utf-8")) if "metadata.json" in names else {}
        if "model.weights.h5" not in names:
            raise ModelFileError(f"{path}: the .keras archive has no model.weights.h5")
        # h5py reads from a file-like object; keep the member open for lazy reads
        member = archive.open("model.weights.h5")
        data = io.BytesIO(member.read()) if not member.seekable() else member
        h5 = h5py.File(data, "r")
        vars_index = _index_vars(h5)
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, UnicodeDecodeError, RuntimeError) as exc:
        raise ModelFileError(
            f"{path}: cannot read the .keras archive ({exc}); it may be truncated or corrupt"
        ) from None
    kf = KerasFile(
        path=path,
        kind="keras",
        config=config,
        keras_version=str(metadata.get("keras_version", "3")),
        backend="",
        _h5=h5,
        _zip=archive,
    )
    kf._vars_index = vars_index
    return kf


def _index_vars(h5: h5py.File) -> dict[tuple[str, ...], list[tuple[str, h5py.Dataset]]]:
    """Map layer-name paths to their variables in a Keras 3 weights file.

    Every `.../vars` group is tagged with its owner's `name`. A layer's variables are its
    own `vars/i` followed by those of its sub-objects (e.g. a MultiHeadAttention's
    `_query_dense`), which are not named layers of the model config.
    """
    owners: dict[str, str] = {}  # owner group path -> layer name

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and name.endswith("vars") and (name == "vars" or name.endswith("/vars")):
            owner = name[: -len("vars")].rstrip("/")
            owners[owner] = _attr_text(obj.attrs.get("name", owner.rsplit("/", 1)[-1]))

    h5.visititems(visit)

    def model_path(owner: str) -> tuple[str, ...]:
        # names of enclosing models (owners whose path is followed by /layers/)
        parts = owner.split("/")
        names = []
        for i in range(len(parts)):
            prefix = "/".join(parts[:i])
            if i < len(parts) and parts[i] == "layers" and prefix in owners and prefix != "":
                names.append(owners[prefix])
        return tuple(names)

    index: dict[tuple[str, ...], list[tuple[str, h5py.Dataset]]] = {}
    for owner, layer_name in sorted(owners.items()):
        if owner == "":
            continue
        parts = owner.split("/")
        if len(parts) >= 2 and parts[-2] == "layers":
            key = model_path(owner) + (layer_name,)
            entries = []
            group = h5[owner]

            def collect(name: str, obj: Any, entries=entries) -> None:
                if isinstance(obj, h5py.Dataset):
                    entries.append((name, obj))

            # own vars first (numeric order), then sub-objects in the walk order of Keras
            own = group["vars"] if "vars" in group else {}
            for k in sorted(own.keys(), key=int):
                entries.append((f"vars/{k}", own[k]))
            for child in sorted(group.keys(), key=_walk_key):
                if child in ("vars", "layers"):
                    continue
                group[child].visititems(lambda n, o, c=child: collect(f"{c}/{n}", o))
            index[key] = entries
    return index


def _walk_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in name.split("/"))
