"""The llama.cpp runtime of `export`: llama-cpp-python, and llama.cpp's own HF-to-GGUF converter.

Both come from one registry package, pinned in requirements-llama-cpp.txt: `make setup` downloads
its source package, builds it with pip (llama.cpp compiled on this machine; nothing is downloaded at
run time), and unpacks the converter that the source package vendors (`vendor/llama.cpp/`:
`convert_hf_to_gguf.py`, `conversion/`, `gguf-py/`) into CONVERTER_DIR with `python -m
training.export_runtime SDIST`. So the GGUF files are written by the converter of the very llama.cpp
that then loads, quantizes and checks them.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import sys
import tarfile
from pathlib import Path

from common.atomic import replace_dir, write_json_atomic
from common.errors import EnvironmentProblem

PACKAGE = "llama-cpp-python"
REQUIREMENTS = "requirements-llama-cpp.txt"
SETUP = f"make setup (builds {PACKAGE} from its source package, pinned in {REQUIREMENTS})"
# Beside the environment that built llama-cpp-python, so the two always come from the same source package.
CONVERTER_DIR = Path(sys.prefix) / "src" / "llama.cpp"
CONVERTER_SCRIPT = "convert_hf_to_gguf.py"
SOURCE_FILE = "source.json"  # which source package the converter was unpacked from
# What the converter needs from the source package's vendor/llama.cpp/ (and the licence it ships under).
CONVERTER_PARTS = (CONVERTER_SCRIPT, "conversion/", "gguf-py/gguf/", "LICENSE")
VENDORED = "vendor/llama.cpp/"


def load_llama_cpp():
    """The `llama_cpp` module (loading llama.cpp's shared libraries), or a one-line EnvironmentProblem."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise EnvironmentProblem(f"GGUF export needs {PACKAGE} ({exc.__class__.__name__}: {exc}); run {SETUP}") from None
    except OSError as exc:  # the package is there but its compiled library is not loadable
        raise EnvironmentProblem(f"{PACKAGE} is installed but llama.cpp's library does not load ({exc}); "
                                 f"rebuild it: {SETUP}") from None
    return llama_cpp


def converter_script() -> Path:
    script = CONVERTER_DIR / CONVERTER_SCRIPT
    if not script.is_file():
        raise EnvironmentProblem(f"llama.cpp's converter is not in {CONVERTER_DIR}; run {SETUP}")
    return script


def runtime_versions() -> dict:
    """What reads and writes the GGUF files: the package version and the source package of the converter."""
    import json

    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = None
    source = CONVERTER_DIR / SOURCE_FILE
    return {PACKAGE: version, "converter": json.loads(source.read_text()) if source.is_file() else None}


def unpack_converter(sdist: Path, dest: Path = CONVERTER_DIR) -> Path:
    """Unpack the converter from llama-cpp-python's source package `sdist` into `dest` (replaced whole)."""
    from training.provenance import sha256_file

    def fill(tmp: Path) -> None:
        with tarfile.open(sdist) as archive:
            members = []
            for member in archive.getmembers():
                root, _, inner = member.name.partition("/")
                relative = inner.removeprefix(VENDORED) if inner.startswith(VENDORED) else None
                if relative and any(relative == part or (part.endswith("/") and relative.startswith(part))
                                    for part in CONVERTER_PARTS):
                    member.name = relative
                    members.append(member)
            if not any(m.name == CONVERTER_SCRIPT for m in members):
                raise EnvironmentProblem(f"{sdist}: no {VENDORED}{CONVERTER_SCRIPT} in this source package")
            archive.extractall(tmp, members=members, filter="data")
        write_json_atomic(tmp / SOURCE_FILE, {"sdist": sdist.name, "sha256": sha256_file(sdist)})

    return replace_dir(dest, fill)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="unpack llama.cpp's HF-to-GGUF converter from "
                                                 f"{PACKAGE}'s source package (run by make setup)")
    parser.add_argument("sdist", type=Path, help=f"the {PACKAGE} .tar.gz source package")
    parser.add_argument("--dest", type=Path, default=CONVERTER_DIR, help=f"default {CONVERTER_DIR}")
    args = parser.parse_args(argv)
    print(f"llama.cpp converter unpacked into {unpack_converter(args.sdist, args.dest)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
