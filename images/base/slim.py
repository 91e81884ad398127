"""Shrink an installed site-packages tree for a step image (run in the image builds).

A step image only runs the steps; it never builds, installs or tests packages. So:
- third-party packages ship as bytecode only (`compileall -b` writes `x.pyc` beside `x.py`, which
  Python imports without the source). Bytecode is needed anyway, since the image's venv is
  read-only at run time and every container would otherwise compile mlflow, pandas and sklearn
  again; the sources were as big again. A library's traceback keeps its file and line.
- mlrig and the steps keep their sources, so their tracebacks show the code.
- test suites, C++ headers, pyarrow's Arrow Flight (RPC; nothing imports `pyarrow.flight`), the
  installers (pip, setuptools) and botocore's models of AWS services other than S3 and STS go.

Usage: python3 slim.py SITE_PACKAGES [--drop-installers] [--staged-under ROOT]
(--staged-under: the tree is installed under ROOT and copied to / later; the bytecode
names the files where they will be.)
"""

from __future__ import annotations

import argparse
import compileall
import re
import shutil
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
)
INSTALLERS = ("pip", "pip-*.dist-info", "setuptools", "setuptools-*.dist-info", "pkg_resources",
              "_distutils_hack", "distutils-precedence.pth")  # fmt: skip
#: botocore's service models that S3 access needs (credentials may come from STS or SSO)
BOTOCORE_SERVICES = ("s3", "sts", "sso", "sso-oidc")


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
    models = site_packages / "botocore" / "data"
    if models.is_dir():
        for service in models.iterdir():
            if service.is_dir() and service.name not in BOTOCORE_SERVICES:
                remove(service)


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
    parser.add_argument("--staged-under", metavar="ROOT")
    arguments = parser.parse_args()
    if not arguments.site_packages.is_dir():
        parser.error(f"{arguments.site_packages} is not a folder")
    remove_unused(arguments.site_packages, arguments.drop_installers)
    compile_bytecode(arguments.site_packages, arguments.staged_under)


if __name__ == "__main__":
    main()
