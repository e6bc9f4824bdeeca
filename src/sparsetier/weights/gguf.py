"""Open GGUF files with the `gguf` package, memory-mapped, and check they are sound.

`gguf.GGUFReader` walks metadata arrays one element at a time through `np.memmap`
views; on a 262k-token vocabulary that takes ~26 s and 1.2 GB. `_FastReader` keeps the
reader's own parsing and layout logic and changes only two internals: reads go through a
plain ndarray view of the same mapping (no memmap subclass overhead), and arrays of
scalars or strings are read in one pass. Tests check it yields exactly what the stock
reader yields. It also checks bounds, so a truncated or corrupt file fails with a clear
message instead of an IndexError deep inside numpy.
"""

from __future__ import annotations

import mmap
import os
import struct
from functools import cached_property
from typing import Any

import numpy as np
import torch
from gguf.constants import GGML_QUANT_SIZES, GGUF_MAGIC, GGMLQuantizationType, GGUFValueType
from gguf.gguf_reader import GGUFReader, ReaderField

from ..errors import ModelFileError, UnsupportedModelError
from .quant import FLOAT_TYPES, SUPPORTED_TYPES
from .tensor import FileRegion, QuantTensor


class _Truncated(Exception):
    def __init__(self, offset: int, needed: int):
        self.offset, self.needed = offset, needed


class _FastReader(GGUFReader):
    def _get(self, offset, dtype, count=1, override_order=None):
        plain = self.__dict__.get("_plain")
        if plain is None:
            plain = self._plain = self.data.view(np.ndarray)
        dt = np.dtype(dtype)
        count = int(count)
        end = offset + dt.itemsize * count
        if end > plain.shape[0]:
            raise _Truncated(offset, end)
        arr = plain[offset:end].view(dt)
        if self.byte_order == "S" or override_order not in (None, "<", "I"):
            arr = arr.view(
                arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order)
            )
        return arr

    def _get_field_parts(self, orig_offs, raw_type):
        if raw_type != GGUFValueType.ARRAY or self.byte_order == "S":
            return super()._get_field_parts(orig_offs, raw_type)
        offs = orig_offs
        raw_itype = self._get(offs, np.uint32)
        alen = self._get(offs + 4, np.uint64)
        offs += 12
        try:
            itype = GGUFValueType(int(raw_itype[0]))
        except ValueError:
            raise ModelFileError(f"unknown GGUF metadata value type {int(raw_itype[0])}") from None
        n = int(alen[0])
        if itype == GGUFValueType.STRING:
            # One view of the whole region plus start/length arrays, not two numpy views per
            # string (on a 262k vocabulary those cost ~80 MB); GGUFFile.get decodes on demand.
            plain = self._plain
            size = plain.shape[0]
            unpack = struct.Struct("<Q").unpack_from
            starts = np.empty(n, dtype=np.int64)
            lens = np.empty(n, dtype=np.int64)
            begin = offs
            for i in range(n):
                if offs + 8 > size:
                    raise _Truncated(offs, offs + 8)
                (slen,) = unpack(plain, offs)
                starts[i], lens[i] = offs + 8, slen
                offs += 8 + slen
            if offs > size:
                raise _Truncated(begin, offs)
            self._pending_strings = (starts, lens)
            return offs - orig_offs, [raw_itype, alen, plain[begin:offs]], [], [GGUFValueType.ARRAY, itype]
        nptype = self.gguf_scalar_to_np.get(itype)
        if nptype is None:  # arrays of arrays: rare, let the stock reader walk them
            return super()._get_field_parts(orig_offs, raw_type)
        arr = self._get(offs, nptype, n)
        return offs + arr.nbytes - orig_offs, [raw_itype, alen, arr], [2], [GGUFValueType.ARRAY, itype]

    def _push_field(self, field, skip_sum=False):
        pending = self.__dict__.pop("_pending_strings", None)
        if pending is not None:
            self.__dict__.setdefault("string_arrays", {})[field.name] = pending
        return super()._push_field(field, skip_sum)

    def strings(self, name: str) -> list[str]:
        """A string-array field, decoded now (the reader keeps only offsets)."""
        starts, lens = self.string_arrays[name]
        raw = self._plain
        return [
            bytes(raw[a : a + n]).decode("utf-8", "replace")
            for a, n in zip(starts.tolist(), lens.tolist(), strict=True)
        ]

    def _build_tensors(self, start_offs, fields):
        file_size = self._plain.shape[0]
        for field in fields:
            _nlen, name_data, _ndims, dims, raw_dtype, offset_tensor = field.parts
            name = bytes(name_data).decode("utf-8", "replace")
            try:
                qtype = GGMLQuantizationType(int(raw_dtype[0]))
            except ValueError:
                raise UnsupportedModelError(
                    f"tensor '{name}' has unknown GGML type id {int(raw_dtype[0])}"
                ) from None
            shape = [int(x) for x in dims]
            if any(x <= 0 for x in shape) or len(shape) > 4:
                raise ModelFileError(f"tensor '{name}' has an invalid shape {shape}")
            block, type_size = GGML_QUANT_SIZES[qtype]
            if shape[0] % block:
                raise ModelFileError(
                    f"tensor '{name}' has {shape[0]} columns, "
                    f"not a multiple of {qtype.name}'s block of {block}"
                )
            nbytes = int(np.prod(shape, dtype=np.float64)) // block * type_size
            begin = start_offs + int(offset_tensor[0])
            if begin % self.alignment:
                raise ModelFileError(f"tensor '{name}' starts at a misaligned offset {begin}")
            if begin + nbytes > file_size:
                raise ModelFileError(
                    f"tensor '{name}' needs bytes {begin}..{begin + nbytes} but the file has {file_size}"
                    " (truncated or corrupt file)"
                )
        super()._build_tensors(start_offs, fields)


def _field_value(reader: _FastReader, field: ReaderField) -> Any:
    if field.name in reader.__dict__.get("string_arrays", {}):
        return reader.strings(field.name)
    if field.types and field.types[0] == GGUFValueType.ARRAY and field.types[-1] != GGUFValueType.STRING:
        if len(field.data) == 1 and len(field.parts) == 3:
            return field.parts[2].tolist()
    return field.contents()


class GGUFFile:
    """A GGUF model file: its metadata and its tensors as zero-copy QuantTensors."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise ModelFileError(f"model file not found: {self.path}")
        if not os.path.isfile(self.path):
            raise ModelFileError(f"not a file: {self.path}")
        with open(self.path, "rb") as f:
            head = f.read(4)
        if len(head) < 4 or struct.unpack("<I", head)[0] != GGUF_MAGIC:
            raise ModelFileError(f"{self.path} is not a GGUF file (bad magic bytes {head!r})")
        try:
            # 'c' (copy-on-write) mapping: the arrays are writable for torch, the file never changes.
            self.reader = _FastReader(self.path, "c")
        except _Truncated as e:
            raise ModelFileError(
                f"{self.path}: GGUF header is truncated (needs byte {e.needed}, file has "
                f"{os.path.getsize(self.path)})"
            ) from None
        except (ModelFileError, UnsupportedModelError):
            raise
        except (ValueError, KeyError, UnicodeDecodeError, OverflowError, IndexError) as e:
            raise ModelFileError(f"{self.path}: corrupt GGUF header ({e})") from None
        self.file_size = self.reader.data.shape[0]

    def release(self, region: FileRegion) -> None:
        """Give back the mapped pages that lie wholly inside `region` (madvise DONTNEED), for
        weights that were copied elsewhere (the sparse column layout): resident memory then holds
        one copy, not two. Nothing is lost: the mapping is of an unchanged file, so a later read
        faults the pages in again."""
        mm = getattr(self.reader.data, "_mmap", None)  # numpy's memmap keeps the mmap object here
        if mm is None or not hasattr(mm, "madvise"):
            return
        start = -(-region.offset // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (region.offset + region.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)

    @cached_property
    def metadata(self) -> dict[str, Any]:
        return {
            k: _field_value(self.reader, f)
            for k, f in self.reader.fields.items()
            if not k.startswith("GGUF.")
        }

    def get(self, key: str, default: Any = None) -> Any:
        field = self.reader.fields.get(key)
        return default if field is None else _field_value(self.reader, field)

    @property
    def architecture(self) -> str:
        arch = self.get("general.architecture")
        if not isinstance(arch, str):
            raise ModelFileError(f"{self.path}: GGUF metadata has no general.architecture")
        return arch

    @cached_property
    def tensors(self) -> dict[str, QuantTensor]:
        out = {}
        for t in self.reader.tensors:
            shape = tuple(int(x) for x in reversed(t.shape.tolist()))
            data = torch.from_numpy(t.data)
            if t.tensor_type in FLOAT_TYPES and t.tensor_type != GGMLQuantizationType.BF16:
                data = data.reshape(shape)
            elif t.tensor_type == GGMLQuantizationType.BF16:  # numpy has no bfloat16: reinterpret
                data = data.view(torch.uint8).view(torch.bfloat16).reshape(shape)
            region = FileRegion(self.path, int(t.data_offset), int(t.n_bytes))
            out[t.name] = QuantTensor(t.name, t.tensor_type, shape, data, region)
        return out

    def check_supported(self) -> None:
        for t in self.tensors.values():
            if t.qtype not in SUPPORTED_TYPES:
                names = ", ".join(sorted(q.name for q in SUPPORTED_TYPES))
                raise UnsupportedModelError(
                    f"tensor '{t.name}' uses GGML type {t.qtype.name}, which sparsetier does not support "
                    f"(supported: {names})"
                )
