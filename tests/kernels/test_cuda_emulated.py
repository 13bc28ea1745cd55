"""The real CUDA source and mask_cupy host code, run on the CPU under an emulated CUDA model.

No GPU is needed: the kernels are compiled as C++ with OpenMP, one OpenMP team of
BLOCK threads per CUDA block (``__shared__`` -> static, ``__syncthreads`` -> barrier), and
mask_cupy is loaded against a stand-in ``cupy`` module backed by NumPy. This checks the
kernels' indexing and reductions, the argument order and scalar types of every launch,
and the parity of the GPU path with the NumPy path. Skipped without g++ and OpenMP.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from opticam_rt.kernels import mask_numpy
from opticam_rt.kernels.cuda_source import BLOCK, CUDA_SOURCE, KERNEL_NAMES

_PRELUDE = r"""
#include <omp.h>
#include <math.h>
#include <stdlib.h>
struct oc_dim3 { unsigned int x, y, z; };
static oc_dim3 blockIdx, blockDim, gridDim;
#define threadIdx (oc_dim3{(unsigned int)omp_get_thread_num(), 0u, 0u})
#define __global__
#define __device__ static
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __syncthreads() _Pragma("omp barrier")
template <typename F> static void oc_launch(unsigned int grid, unsigned int block, F f) {
    gridDim = oc_dim3{grid, 1u, 1u};
    blockDim = oc_dim3{block, 1u, 1u};
    for (unsigned int b = 0; b < grid; ++b) {
        blockIdx = oc_dim3{b, 1u, 1u};
#pragma omp parallel num_threads(block)
        {
            if ((unsigned int)omp_get_num_threads() != block) abort();
            f();
        }
    }
}
"""

_C_TYPES = {  # C parameter type -> (ctypes type, what the Python side must pass)
    "const float*": (ctypes.c_void_p, np.float32),
    "float*": (ctypes.c_void_p, np.float32),
    "const double*": (ctypes.c_void_p, np.float64),
    "double*": (ctypes.c_void_p, np.float64),
    "const int*": (ctypes.c_void_p, np.int32),
    "long long": (ctypes.c_longlong, np.int64),
    "float": (ctypes.c_float, np.float32),
}


def _signatures() -> dict[str, list[tuple[str, str]]]:
    sigs = {}
    for name, params in re.findall(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", CUDA_SOURCE):
        parsed = []
        for p in params.split(","):
            ctype, pname = re.match(r"\s*(.*?)\s*(\w+)\s*$", p.replace("__restrict__", "")).groups()
            parsed.append((re.sub(r"\s*\*", "*", ctype), pname))
        sigs[name] = parsed
    return sigs


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """name -> callable(grid, block, args) running that kernel on the CPU."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    sigs = _signatures()
    assert sorted(sigs) == sorted(KERNEL_NAMES)
    assert f"#define OC_BLOCK {BLOCK}" in CUDA_SOURCE
    wrappers = []
    for name, params in sigs.items():
        decl = ", ".join(f"{t} {n}" for t, n in params)
        call = ", ".join(n for _, n in params)
        wrappers.append(
            f'extern "C" void emu_{name}(unsigned int oc_grid, {decl}) '
            f"{{ oc_launch(oc_grid, {BLOCK}u, [&]() {{ {name}({call}); }}); }}"
        )
    src = tmp_path_factory.mktemp("cuda_emu") / "kernels.cpp"
    src.write_text(_PRELUDE + CUDA_SOURCE + "\n".join(wrappers) + "\n")
    lib_path = src.with_suffix(".so")
    probe = subprocess.run(
        ["g++", "-fopenmp", "-x", "c++", "-", "-o", os.devnull], input="int main(){return 0;}", text=True,
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("g++ without OpenMP support")
    subprocess.run(["g++", "-O1", "-std=c++14", "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(lib_path)],
                   check=True)
    # Oversubscribed teams (BLOCK threads on a few cores) must sleep at barriers, not
    # spin. libgomp reads the variable when it loads, so it is set only around the load.
    saved_policy = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        lib = ctypes.CDLL(str(lib_path))
    finally:
        if saved_policy is None:
            del os.environ["OMP_WAIT_POLICY"]
        else:
            os.environ["OMP_WAIT_POLICY"] = saved_policy

    def make(name: str):
        params = sigs[name]
        fn = getattr(lib, f"emu_{name}")
        fn.argtypes = [ctypes.c_uint] + [_C_TYPES[t][0] for t, _ in params]
        fn.restype = None

        def launch(grid: tuple, block: tuple, args: tuple) -> None:
            assert block == (BLOCK,) and len(grid) == 1 and grid[0] >= 1, (grid, block)
            assert len(args) == len(params), f"{name}: {len(args)} args for {len(params)} params"
            c_args = []
            for arg, (ctype, pname) in zip(args, params):
                want = _C_TYPES[ctype][1]
                if ctype.endswith("*"):
                    assert isinstance(arg, np.ndarray) and arg.dtype == want, f"{name}.{pname}: {type(arg)}"
                    assert arg.flags.c_contiguous, f"{name}.{pname} not contiguous"
                    c_args.append(arg.ctypes.data)
                else:
                    assert type(arg) is want, f"{name}.{pname}: pass {want.__name__}, got {type(arg).__name__}"
                    c_args.append(arg.item())
            fn(grid[0], *c_args)

        return launch

    return {name: make(name) for name in sigs}


@pytest.fixture(scope="module")
def emu(emulator):
    """mask_cupy, loaded against a NumPy-backed stand-in for cupy that runs the emulator."""
    fake = types.ModuleType("cupy")
    for attr in ("asarray", "ascontiguousarray", "empty", "empty_like", "matmul", "exp", "ndarray"):
        setattr(fake, attr, getattr(np, attr))

    class RawModule:
        def __init__(self, code: str, options: tuple = ()):
            assert code == CUDA_SOURCE

        def get_function(self, name: str):
            return emulator[name]

    fake.RawModule = RawModule
    fake.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0))
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = fake
    try:
        spec = importlib.util.find_spec("opticam_rt.kernels.mask_cupy")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # private copy: the real mask_cupy is untouched
    finally:
        if saved is None:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = saved
    return module


def _inputs(seed, n, k, h, w, big_h, big_w, c=3):
    rng = np.random.default_rng(seed)
    feats = np.maximum(rng.standard_normal((n, k, h, w)), 0).astype(np.float32)
    feats[:, :, 0, 0] += 3.0  # a tied clamp-zone max, to exercise the tie counts
    u = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.random((n, c, big_h, big_w)).astype(np.float32)
    g = rng.standard_normal((n, c, big_h, big_w)).astype(np.float32)
    return feats, u, x, g


@pytest.mark.parametrize("shape", [(1, 6, 5, 7, 40, 56), (3, 5, 7, 7, 25, 19)], ids=["n1", "n3"])
def test_emulated_opticam_matches_numpy(emu, shape, assert_close):
    feats, u, x, g = _inputs(0, *shape)
    sal, masked, cache = emu.opticam_forward(feats, u, x)
    r_sal, r_masked, r_cache = mask_numpy.opticam_forward(feats, u, x)
    assert_close(sal, r_sal, what="saliency")
    assert_close(masked, r_masked, what="masked")
    np.testing.assert_array_equal(cache.smin, r_cache.smin)
    np.testing.assert_array_equal(cache.smax, r_cache.smax)
    assert_close(emu.opticam_adjoint(g, cache), mask_numpy.opticam_adjoint(g, r_cache), what="grad_u")
    s2, m2 = emu.saliency_and_mask(feats, cache.weights, x)
    assert_close(s2, r_sal, what="saliency_and_mask")


@pytest.mark.parametrize("channels", [slice(None), slice(2, 5), slice(None, None, -2), slice(3, 3)])
def test_emulated_scorecam_matches_numpy(emu, channels, assert_close):
    feats, _, x, _ = _inputs(1, 2, 6, 5, 7, 20, 23)
    ks = range(6)[channels]
    got = emu.scorecam_masked_copies(feats, x, ks, None)
    ref = mask_numpy.scorecam_masked_copies(feats, x, ks, None)
    assert got.shape == ref.shape
    if ref.size:
        assert_close(got, ref, what="scorecam")


def test_cuda_source_compiles_with_nvcc(tmp_path):
    # The emulator accepts C++ that NVCC might not; where a CUDA toolkit is installed,
    # compile the source for real (to PTX: no GPU needed).
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found")
    src = tmp_path / "kernels.cu"
    src.write_text(CUDA_SOURCE)
    proc = subprocess.run([nvcc, "--ptx", "-std=c++11", str(src), "-o", str(tmp_path / "kernels.ptx")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ptx = (tmp_path / "kernels.ptx").read_text()
    assert all(f".entry {name}(" in ptx for name in KERNEL_NAMES)
