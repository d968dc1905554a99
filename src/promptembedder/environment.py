"""What a number was measured on: the machine and the versions of the libraries that decide the numerics.

Training summaries, evaluation results and benchmark reports all carry it, so a run that scores differently on
another install (experiments/regime/LOG.md has such a case) can be traced to a changed library or device instead
of guessed at.
"""

from __future__ import annotations

import platform
import resource
from datetime import datetime, timezone
from importlib import metadata

import torch

#: Distributions whose version can change a score or a timing; those not installed are left out.
LIBRARIES = ("promptembedder", "torch", "transformers", "peft", "accelerate", "numpy", "scikit-learn",
             "sentence-transformers")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_name() -> str:
    """The CPU's model name on Linux (platform.processor() says only "x86_64" there), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | str | None = None) -> dict:
    """Date, Python, the libraries' versions, the CPU and the vector instructions torch's kernels use there (they
    change float results), torch's threads, the device when known, and the GPU's name when there is one."""
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "libraries": library_versions(), "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    device = None if device is None else torch.device(device)
    if device is not None:
        info["device"] = str(device)
    if torch.cuda.is_available():  # the run's GPU, or the current one when the device is not a GPU or not known
        info["gpu"] = torch.cuda.get_device_name(device if device is not None and device.type == "cuda" else None)
    return info


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated on GPU; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
