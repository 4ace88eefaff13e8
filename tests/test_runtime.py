"""The runtime: devices, the CPU allocator policy and the evaluation batch size."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from icepick.config import ConfigError
from icepick.runtime import default_eval_batch_size, resolve_device

# In a child process (the policy is process-wide): allocate, touch and free a 256 MiB block
# through the C allocator, and print how much of it the process still holds afterwards.
_HELD_AFTER_FREE = r"""
import ctypes, sys
from icepick.runtime import keep_cpu_allocations
if sys.argv[1] == "keep":
    assert keep_cpu_allocations(True) is True
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def rss_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20

size = 256 << 20
before = rss_mib()
block = libc.malloc(size)
libc.memset(block, 1, size)
libc.free(block)
print(rss_mib() - before)
"""


def _held_after_free(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _HELD_AFTER_FREE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_cpu_allocator_keeps_freed_activation_memory_for_reuse():
    """glibc's default returns a large freed block to the OS; the policy keeps it for the next batch."""
    assert _held_after_free("default") < 32
    assert _held_after_free("keep") > 200


def test_evaluation_batch_is_1000_on_a_gpu_and_128_on_a_cpu():
    assert default_eval_batch_size(torch.device("cpu")) == 128
    assert default_eval_batch_size(torch.device("cuda")) == 1000


def test_auto_picks_the_cpu_without_cuda_and_a_missing_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("gpu0")
