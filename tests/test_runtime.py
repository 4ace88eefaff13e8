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


# ---------------------------------------------------------------- fp16 with a gradient scaler


def test_fp16_autocasts_to_float16_and_scales_the_loss_and_the_other_precisions_do_not():
    """torch 2.14 runs float16 autocast on the CPU as well, so the fp16 path is the same here."""
    from icepick.runtime import PRECISIONS, autocast, grad_scaler

    assert "fp16" in PRECISIONS
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    for precision, dtype in (("fp32", torch.float32), ("tf32", torch.float32), ("bf16", torch.bfloat16),
                             ("fp16", torch.float16)):
        with autocast(torch.device("cpu"), precision):
            assert conv(x).dtype == dtype, precision
        assert (grad_scaler(torch.device("cpu"), precision) is None) == (precision != "fp16")
    assert grad_scaler(torch.device("cpu"), "fp16").get_scale() == 2.0**16


def test_the_scaler_skips_an_update_whose_gradients_overflow_and_lowers_its_scale():
    """Our SGD under torch.amp.GradScaler: a finite step updates as plain SGD would (the scale
    divided out again), an infinite gradient leaves the weights and halves the scale."""
    from icepick.finetune import SGD
    from icepick.runtime import grad_scaler

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = SGD([w], lr=0.1)
    scaler = grad_scaler(torch.device("cpu"), "fp16")
    scaler.scale((w * torch.tensor([3.0, 4.0])).sum()).backward()
    assert torch.equal(w.grad, torch.tensor([3.0, 4.0]) * 2.0**16)
    scaler.step(opt)
    scaler.update()
    assert torch.allclose(w.detach(), torch.tensor([1.0 - 0.3, -2.0 - 0.4]))
    before = w.detach().clone()
    opt.zero_grad()
    scaler.scale((w * torch.tensor([float("inf"), 1.0])).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(w.detach(), before) and scaler.get_scale() == 2.0**15


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_an_fp16_fine_tuning_trains_like_fp32_within_float16_rounding(
        model_and_teacher, random_split):
    from icepick.finetune import FinetuneConfig, finetune

    split = random_split(48, seed=1)
    results, weights = {}, {}
    for precision in ("fp32", "fp16"):
        model, teacher = model_and_teacher("resnet20")
        cfg = FinetuneConfig(batch_size=16, early_halt=0, precision=precision)
        results[precision] = finetune(model, teacher, split, 0.01, cfg, seed=0)
        weights[precision] = torch.cat([p.detach().flatten() for p in model.parameters()])
    fp32, fp16 = results["fp32"], results["fp16"]
    assert fp16.batches == fp32.batches == 3 and fp16.samples == fp32.samples
    assert all(abs(a - b) < 0.02 * abs(b) for a, b in zip(fp16.losses, fp32.losses))
    change = (weights["fp16"] - weights["fp32"]).abs().max() / weights["fp32"].abs().max()
    assert 0 < change < 1e-2  # float16 rounds differently, but it trained the same way
