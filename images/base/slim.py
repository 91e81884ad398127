"""Shrink an installed site-packages tree for a step image (run in the image builds).

A step image only runs the steps; it never builds, installs or tests packages. So:
- third-party packages ship as bytecode only (`compileall -b` writes `x.pyc` beside `x.py`, which
  Python imports without the source). Bytecode is needed anyway, since the image's venv is
  read-only at run time and every container would otherwise compile mlflow, pandas and sklearn
  again; the sources were as big again. A library's traceback keeps its file and line.
- mlrig and the steps keep their sources, so their tracebacks show the code.
- test suites, C++ headers, pyarrow's Arrow Flight (RPC; nothing imports `pyarrow.flight`),
  Pillow's AVIF codec (no step reads or writes AVIF; Pillow's AVIF plugin is optional), the
  files only a compiler or a type checker reads (Cython sources, C/C++ sources and headers,
  static libraries, `.pyi` stubs), the installers (pip, setuptools) and botocore's models of
  AWS services other than S3 and STS go.
- with --strip, the shared libraries lose their symbol tables and debug sections (`strip
  --strip-unneeded`, as Debian strips its packages): what the dynamic linker needs stays, so
  every module loads and runs the same. The wheels ship many unstripped (pyarrow's libarrow
  alone carries 12 MB of symbols); a crash's native backtrace then names fewer functions. A
  library that strip would break (the OpenBLAS and libgfortran that auditwheel patched into
  numpy's and SciPy's wheels) is left as it is.

Usage: python3 slim.py SITE_PACKAGES [--drop-installers] [--strip] [--staged-under ROOT]
(--staged-under: the tree is installed under ROOT and copied to / later; the bytecode
names the files where they will be. --strip needs binutils' `strip` on PATH.)
"""

from __future__ import annotations

import argparse
import compileall
import re
import shutil
import struct
import subprocess
from pathlib import Path

OWN_PACKAGES = ("mlrig", "steps")
UNUSED_PATTERNS = (
    "pyarrow/include",
    "pyarrow/flight.py",
    "pyarrow/_flight.*.so",
    "pyarrow/libarrow_flight.so*",
    "pyarrow/libarrow_python_flight.so*",
    # the wheel holds three copies of libarrow_python; the modules link the one named .so.<major>
    "pyarrow/libarrow_python.so",
    "pyarrow/libarrow_python.so.*.*.*",
    # Pillow's AVIF codec and its library (5 MB): PIL.AvifImagePlugin works without them
    "PIL/_avif.*.so",
    "pillow.libs/libavif-*.so*",
)
#: what only a compiler or a type checker reads: Cython and C/C++ sources, headers, static
#: libraries and type stubs (7 MB in the base, 14 MB in evaluate's image)
BUILD_ONLY_SUFFIXES = (".pyx", ".pxd", ".pxi", ".c", ".cc", ".cpp", ".h", ".a", ".pyi")
#: packages whose C declarations cffi may read at run time: their headers stay
KEEP_HEADERS = ("cffi", "pygit2")
INSTALLERS = ("pip", "pip-*.dist-info", "setuptools", "setuptools-*.dist-info", "pkg_resources",
              "_distutils_hack", "distutils-precedence.pth")  # fmt: skip
#: botocore's service models that S3 access needs (credentials may come from STS or SSO)
BOTOCORE_SERVICES = ("s3", "sts", "sso", "sso-oidc")
PT_LOAD = 1


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_unused(site_packages: Path, drop_installers: bool) -> None:
    for tests in sorted(site_packages.rglob("tests"), reverse=True):
        remove(tests)
    for pattern in UNUSED_PATTERNS + (INSTALLERS if drop_installers else ()):
        for path in site_packages.glob(pattern):
            remove(path)
    for path in sorted(site_packages.rglob("*")):
        top = path.relative_to(site_packages).parts[0]
        if (
            path.suffix in BUILD_ONLY_SUFFIXES
            and path.is_file()
            and top not in OWN_PACKAGES + KEEP_HEADERS
        ):
            path.unlink()
    models = site_packages / "botocore" / "data"
    if models.is_dir():
        for service in models.iterdir():
            if service.is_dir() and service.name not in BOTOCORE_SERVICES:
                remove(service)


def shared_libraries(site_packages: Path) -> list[Path]:
    """The ELF shared objects under site-packages (`x.so`, `libx.so.1.2`), symlinks left out."""
    found = []
    for path in sorted(site_packages.rglob("*.so*")):
        if path.is_symlink() or not path.is_file() or not re.search(r"\.so(\.\d+)*$", path.name):
            continue
        with path.open("rb") as library:
            if library.read(4) == b"\x7fELF":
                found.append(path)
    return found


def loadable(library: Path) -> bool:
    """Whether each loadable segment of an ELF64 file sits where the loader can map it.

    `strip` can break a library that patchelf changed (auditwheel's grafted copies of OpenBLAS
    and libgfortran): its segments then lose their page alignment, and loading fails with
    "ELF load command address/offset not page-aligned".
    """
    with library.open("rb") as elf:
        header = elf.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:  # ELF64 little-endian
            return False
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        entry_size, entries = struct.unpack_from("<HH", header, 0x36)
        elf.seek(phoff)
        table = elf.read(entry_size * entries)
    for index in range(entries):
        kind, _, offset, address, _, _, _, align = struct.unpack_from(
            "<IIQQQQQQ", table, index * entry_size
        )
        if kind == PT_LOAD and align > 1 and offset % align != address % align:
            return False
    return True


def strip_libraries(site_packages: Path) -> None:
    """Drop every shared library's symbol table and debug sections, not what loading needs.

    Each library is stripped to a copy that replaces it only when it still loads; one that
    `strip` would break stays as it is.
    """
    strip = shutil.which("strip")
    if strip is None:
        raise SystemExit("slim.py --strip: no `strip` on PATH (apt-get install binutils)")
    for library in shared_libraries(site_packages):
        stripped = library.with_name(library.name + ".stripped")
        done = subprocess.run(
            [strip, "--strip-unneeded", "-o", str(stripped), str(library)], check=False
        )
        if done.returncode == 0 and loadable(stripped):
            shutil.copymode(library, stripped)
            stripped.replace(library)
        else:
            print(f"slim.py: {library.name} left unstripped (strip would break it)")
            stripped.unlink(missing_ok=True)


def compile_bytecode(site_packages: Path, staging_root: str | None) -> None:
    """Third-party packages: bytecode beside the sources, which go; mlrig's own: __pycache__.

    A module that does not compile keeps its source (compileall prints why).
    """
    own = re.compile(rf"^{re.escape(str(site_packages))}/({'|'.join(OWN_PACKAGES)})/")
    compileall.compile_dir(
        site_packages, quiet=1, legacy=True, workers=0, rx=own, stripdir=staging_root
    )
    for name in OWN_PACKAGES:
        if (site_packages / name).is_dir():
            compileall.compile_dir(site_packages / name, quiet=1, workers=0)
    for source in site_packages.rglob("*.py"):
        if not own.match(str(source)) and source.with_suffix(".pyc").exists():
            source.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site_packages", type=Path)
    parser.add_argument("--drop-installers", action="store_true")
    parser.add_argument("--strip", action="store_true", help="strip the shared libraries")
    parser.add_argument("--staged-under", metavar="ROOT")
    arguments = parser.parse_args()
    if not arguments.site_packages.is_dir():
        parser.error(f"{arguments.site_packages} is not a folder")
    remove_unused(arguments.site_packages, arguments.drop_installers)
    if arguments.strip:
        strip_libraries(arguments.site_packages)
    compile_bytecode(arguments.site_packages, arguments.staged_under)


if __name__ == "__main__":
    main()
