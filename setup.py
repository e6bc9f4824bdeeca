"""Builds the C++ kernels (sparsetier._C) against the installed PyTorch.

Install with `pip install --no-build-isolation -e .` after torch, so the extension links
the same torch it runs with. Set SPARSETIER_NO_EXT=1 to skip the build (the package then
runs on its plain PyTorch reference kernels, much slower).
"""

import glob
import os

from setuptools import setup

ext_modules = []
cmdclass = {}
sources = sorted(glob.glob("src/sparsetier/kernels/csrc/*.cpp"))
if sources and not os.environ.get("SPARSETIER_NO_EXT"):
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    # -march=native: the extension is built on the machine that runs it (install time);
    # the code picks AVX-512 / AVX2 / scalar paths from the macros this defines.
    # -ffp-contract=off: the dequantizers must round like the reference (d*q, then +m),
    # so the compiler may not fuse a multiply and an add on its own; the kernels ask for
    # fused multiply-adds explicitly where they want them.
    arch = os.environ.get("SPARSETIER_MARCH", "native")
    ext_modules.append(
        CppExtension(
            "sparsetier._C",
            sources,
            depends=sorted(glob.glob("src/sparsetier/kernels/csrc/*.h")),
            extra_compile_args=["-O3", f"-march={arch}", "-ffp-contract=off", "-fopenmp", "-std=c++20"],
            extra_link_args=["-fopenmp"],
        )
    )
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=False)

setup(ext_modules=ext_modules, cmdclass=cmdclass)
