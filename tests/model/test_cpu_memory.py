"""The training allocator setting: a freed large block stays mapped, so allocating it again costs no page faults."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting applies to glibc's allocator only")

# Prints the fewest page faults among sixteen 64 MiB tensors (above glibc's
# mmap threshold), allocated, filled and freed in turn, as a training step's
# activations are. A kept heap grows until it holds the block, then serves it
# without faults; glibc's default maps and faults every one afresh.
PROBE = """
import resource, sys
import torch
from model.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults_for_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(16 << 20)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(min(faults_for_block() for _ in range(16)))
"""
PAGES_IN_BLOCK = (64 << 20) // 4096


def _fewest_block_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1])


def test_glibc_default_maps_a_large_block_afresh_every_time():
    assert _fewest_block_faults("default") > PAGES_IN_BLOCK // 2


def test_kept_memory_serves_a_freed_block_again_without_faults():
    assert _fewest_block_faults("keep") < PAGES_IN_BLOCK // 100
