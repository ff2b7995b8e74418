"""A description of the machine a figure was measured on: CPU, ISA flags, memory, library versions."""
from __future__ import annotations

import os
import platform
from importlib import metadata

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni")
LIBRARIES = ("numpy", "tensorflow", "keras", "intel-extension-for-tensorflow", "scikit-learn",
             "scikit-learn-intelex", "openvino", "nncf", "pillow", "scikit-image")


def describe_machine() -> dict:
    cpu, flags, mhz = platform.processor() or "", set(), None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("cpu MHz") and mhz is None:
                    try:
                        mhz = float(line.split(":", 1)[1])
                    except ValueError:
                        pass
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break  # model name comes first in each processor's block
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gib = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "cpus_usable": usable, "cpu_mhz": mhz, "memory_gib": mem_gib,
        "load_average": load,  # 1, 5, 15 min: other work running during a benchmark lowers and blurs its figures
        "isa": {f: f in flags for f in ISA_FLAGS},
        "python": platform.python_version(), "system": f"{platform.system()} {platform.release()}",
        "versions": versions,
    }
