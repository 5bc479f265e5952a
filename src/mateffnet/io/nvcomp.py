"""LZ4 and zstd blocks decoded on a CUDA GPU by NVIDIA's nvCOMP, called through ctypes (nothing to build).

nvCOMP is optional: the `nvidia-libnvcomp-cu13` wheel (or `-cu12`, matching `torch.version.cuda`), or a
system `libnvcomp.so.6`. Its batched decoders read the plain blocks and frames that `lz4.block` and
`zstandard` write, so flow stores of the lz4, lz4-near, zstd and zstd-near codecs decode on the GPU as
they are. Only nvCOMP 6's C API is used (`nvcompBatched{LZ4,Zstd}DecompressAsync`, options by value).
"""

from __future__ import annotations

import ctypes
import functools
import os

import torch

from mateffnet.errors import MateffnetError

SONAME = "libnvcomp.so.6"
INSTALL_HINT = "pip install nvidia-libnvcomp-cu13 (or -cu12, as torch.version.cuda)"
# Blocks of a deferred batch start at multiples of this (nvCOMP needs 4 at most; aligned input reads faster).
ALIGNMENT = 16
_ALGORITHMS = {"lz4": "LZ4", "zstd": "Zstd"}


class _DecompressOptions(ctypes.Structure):
    """nvcompBatchedLZ4DecompressOpts_t / nvcompBatchedZstdDecompressOpts_t: 64 bytes, the backend first; zero
    elsewhere is the default (LZ4's data type "char", no bitshuffle)."""

    _fields_ = [("backend", ctypes.c_int), ("reserved", ctypes.c_char * 60)]


# NVCOMP_DECOMPRESS_BACKEND_CUDA: it reports a block it cannot decode; the hardware engine of newer GPUs does not.
_OPTIONS = _DecompressOptions(2)


@functools.cache
def library() -> ctypes.CDLL | None:
    """nvCOMP's library (from its wheel, else the system's), or None where it is not installed."""
    paths = []
    try:
        import nvidia.libnvcomp as package

        folder = os.path.dirname(package.__file__)
        paths = [os.path.join(folder, sub, SONAME) for sub in ("lib64", "lib")]
    except ImportError:
        pass
    for path in [p for p in paths if os.path.isfile(p)] + [SONAME]:
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        except OSError:
            continue
        size, pointer = ctypes.c_size_t, ctypes.c_void_p
        for name in _ALGORITHMS.values():
            temp_size = getattr(lib, f"nvcompBatched{name}DecompressGetTempSize")
            temp_size.argtypes = [size, size, _DecompressOptions, ctypes.POINTER(size), size, pointer]
            temp_size.restype = ctypes.c_int
            decompress = getattr(lib, f"nvcompBatched{name}DecompressAsync")
            decompress.argtypes = [pointer, pointer, pointer, pointer, size, pointer, size, pointer,
                                   _DecompressOptions, pointer, pointer]
            decompress.restype = ctypes.c_int
        return lib
    return None


def available() -> bool:
    return library() is not None


def decompress(data: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, sizes: torch.Tensor,
               kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks data[starts[i] : starts[i] + lengths[i]] ("lz4" blocks or "zstd" frames; `data` uint8 on a CUDA
    device, `starts` multiples of 4), block i `sizes[i]` bytes once decoded → (one uint8 buffer on that device,
    where block i starts in it: CPU int64 multiples of ALIGNMENT), decoded on the device's current stream. A
    block that does not decode to exactly its size is a MateffnetError."""
    lib = library()
    if lib is None:
        raise MateffnetError(f"decoding {kind} flow on the GPU needs nvCOMP: {INSTALL_HINT}")
    algorithm = _ALGORITHMS[kind]
    device, count = data.device, len(lengths)
    sizes = sizes.to(torch.int64)
    padded = (sizes + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
    offsets = torch.cumsum(padded, 0) - padded
    size_t = ctypes.c_size_t
    temp_bytes = size_t(0)
    status = getattr(lib, f"nvcompBatched{algorithm}DecompressGetTempSize")(
        count, int(sizes.max()), _OPTIONS, ctypes.byref(temp_bytes), int(sizes.sum()), None)
    if status != 0:
        raise MateffnetError(f"nvCOMP cannot size its {algorithm} decoder for {count} blocks (status {status})")
    with torch.cuda.device(device):
        out = torch.empty(int(padded.sum()), dtype=torch.uint8, device=device)
        sources = starts.to(device, torch.int64) + data.data_ptr()
        targets = offsets.to(device) + out.data_ptr()
        source_bytes = lengths.to(device, torch.int64)
        capacity = sizes.to(device)
        decoded_bytes = torch.empty(count, dtype=torch.int64, device=device)
        statuses = torch.empty(count, dtype=torch.int32, device=device)
        temp = torch.empty(max(temp_bytes.value, 1), dtype=torch.uint8, device=device)
        stream = torch.cuda.current_stream(device).cuda_stream
        status = getattr(lib, f"nvcompBatched{algorithm}DecompressAsync")(
            sources.data_ptr(), source_bytes.data_ptr(), capacity.data_ptr(), decoded_bytes.data_ptr(), count,
            temp.data_ptr(), temp_bytes.value, targets.data_ptr(), _OPTIONS, statuses.data_ptr(), stream)
        if status != 0:
            raise MateffnetError(f"nvCOMP could not start decoding {count} {kind} blocks (status {status})")
        failed = int(((statuses != 0) | (decoded_bytes != capacity)).sum())  # waits for this stream
    if failed:
        raise MateffnetError(f"nvCOMP could not decode {failed} of {count} stored {kind} flow planes")
    return out, offsets
