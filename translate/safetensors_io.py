"""Writing a .safetensors file one tensor at a time.

`safetensors.numpy.save_file` builds the whole file in memory before writing it, which costs
one more copy of every weight; this writer streams each array to disk instead (same format:
an 8-byte little-endian header length, a JSON header padded to 8 bytes, then the raw data).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_DTYPES = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}
try:  # bfloat16 weights (read from Keras files) keep their dtype
    import ml_dtypes

    _DTYPES[np.dtype(ml_dtypes.bfloat16)] = "BF16"
except ImportError:
    pass


def save_streaming(tensors: dict[str, np.ndarray], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (name -> array) to `path` in the safetensors format."""
    header: dict[str, object] = {}
    offset = 0
    order = sorted(tensors)
    for name in order:
        array = tensors[name]
        dtype = _DTYPES.get(array.dtype.newbyteorder("=") if array.dtype.byteorder not in "=|" else array.dtype)
        if dtype is None:
            raise ValueError(f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot hold here")
        size = array.size * array.itemsize
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = dict(metadata)
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in order:
            array = np.asarray(tensors[name])
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            f.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data if array.size else b"")


class StreamingReader:
    """Read tensors of a safetensors file one at a time with plain reads: unlike a memory
    map, a tensor read and dropped leaves nothing of the file resident in this process."""

    def __init__(self, path: str | Path) -> None:
        import json

        self._file = open(path, "rb")  # noqa: SIM115 (closed by close() / the with block)
        length = int.from_bytes(self._file.read(8), "little")
        header = json.loads(self._file.read(length))
        header.pop("__metadata__", None)
        self._start = 8 + length
        self._header = header
        self._dtypes = {code: dtype for dtype, code in _DTYPES.items()}

    def get_tensor(self, name: str) -> np.ndarray:
        entry = self._header[name]
        begin, end = entry["data_offsets"]
        self._file.seek(self._start + begin)
        data = bytearray(end - begin)
        self._file.readinto(data)
        return np.frombuffer(data, dtype=self._dtypes[entry["dtype"]].newbyteorder("<")).reshape(entry["shape"])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> StreamingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
