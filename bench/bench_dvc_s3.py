"""DVC push/pull against the stack's S3 endpoint, side by side with plain parallel boto3.

Two data shapes: one 200 MB file, and 5,000 small files. The baseline uploads and downloads the
same bytes with boto3 and a thread pool (what a hand-written sync would do).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import Timings, report

BIG_FILE_BYTES = 200 * 1024 * 1024
SMALL_FILES = 5000
SMALL_FILE_BYTES = 1024
BUCKET = "mlrig-dvc"
WORKERS = 16


def make_data(folder: Path) -> None:
    folder.mkdir(parents=True)
    with (folder / "big.bin").open("wb") as stream:
        for _ in range(BIG_FILE_BYTES // (1 << 20)):
            stream.write(os.urandom(1 << 20))
    small = folder / "small"
    small.mkdir()
    for index in range(SMALL_FILES):
        (small / f"{index:05d}.bin").write_bytes(os.urandom(SMALL_FILE_BYTES))


def dvc(repo: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


def s3_client(env: dict[str, str]):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def boto_upload(env: dict[str, str], files: list[Path], root: Path, prefix: str) -> None:
    client = s3_client(env)
    with ThreadPoolExecutor(WORKERS) as pool:
        list(
            pool.map(
                lambda path: client.upload_file(
                    str(path), BUCKET, f"{prefix}/{path.relative_to(root)}"
                ),
                files,
            )
        )


def boto_download(env: dict[str, str], files: list[Path], root: Path, prefix: str) -> None:
    client = s3_client(env)

    def fetch(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, f"{prefix}/{path.relative_to(root)}", str(path))

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(fetch, files))


def run(stack_env: dict[str, str]) -> str:
    env = os.environ | stack_env
    timings = Timings()
    with tempfile.TemporaryDirectory(prefix="mlrig-bench-") as scratch:
        repo = Path(scratch) / "repo"
        make_data(repo / "data")
        dvc(repo, env, "init", "--no-scm", "-q")
        run_id = uuid.uuid4().hex[:8]
        dvc(repo, env, "remote", "add", "-d", "s3", f"s3://{BUCKET}/bench-dvc-{run_id}")
        dvc(repo, env, "remote", "modify", "s3", "endpointurl", stack_env["AWS_ENDPOINT_URL"])
        for shape, target in (("200 MB file", "data/big.bin"), ("5,000 small files", "data/small")):
            dvc(repo, env, "add", target)
            with timings.measure(f"dvc push, {shape}"):
                dvc(repo, env, "push", f"{target}.dvc")
            files = (
                [repo / target]
                if (repo / target).is_file()
                else sorted((repo / target).rglob("*.bin"))
            )
            with timings.measure(f"boto3 upload, {shape}"):
                boto_upload(env, files, repo, f"bench-boto-{run_id}")
            shutil.rmtree(repo / ".dvc" / "cache")
            shutil.rmtree(repo / target) if (repo / target).is_dir() else (repo / target).unlink()
            with timings.measure(f"dvc pull, {shape}"):
                dvc(repo, env, "pull", f"{target}.dvc")
            download_root = Path(scratch) / "download"
            with timings.measure(f"boto3 download, {shape}"):
                boto_download(
                    env,
                    [download_root / f.relative_to(repo) for f in files],
                    download_root,
                    f"bench-boto-{run_id}",
                )
    pairs = [
        (f"dvc {verb}, {shape}", f"boto3 {base}, {shape}")
        for shape in ("200 MB file", "5,000 small files")
        for verb, base in (("push", "upload"), ("pull", "download"))
    ]
    return report("DVC push/pull vs parallel boto3 (stack S3 endpoint)", timings, pairs)
