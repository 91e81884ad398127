"""What a ClearML pipeline's pods share on the DVC remote (mlrig.executors.clearml.store), on a real
S3
endpoint: SeaweedFS on loopback, as the local stack runs it (the session's `s3_server`)."""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlrig.errors import ConfigError, MlrigError
from mlrig.executors.clearml.pod import step_of_pod
from mlrig.executors.clearml.store import (
    INPUT_KEY_VARIABLE,
    STAGE_VARIABLE,
    StepStore,
    StepTask,
    workspace_archive,
)
from tests.support.s3 import S3Server

BUCKET = "mlrig-dvc"


@pytest.fixture(scope="module")
def s3_endpoint(s3_server: S3Server) -> Iterator[str]:
    """The server's endpoint, its keys in the environment as a pod has them."""
    s3_server.create_bucket(BUCKET)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env().items():
            if name != "AWS_ENDPOINT_URL":  # the store is given its endpoint
                patch.setenv(name, value)
        yield s3_server.endpoint


@pytest.fixture
def store(s3_endpoint: str, request: pytest.FixtureRequest) -> StepStore:
    """A store under its own prefix of the bucket, so the tests share nothing."""
    return StepStore.of_remote(f"s3://{BUCKET}/{request.node.name}/dvc", s3_endpoint)


def project(root: Path) -> list[str]:
    (root / "steps").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "steps" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "steps" / "run.sh").chmod(0o755)
    return ["dvc.yaml", "steps/run.sh"]


def test_the_workspace_archive_depends_on_the_files_only(tmp_path: Path) -> None:
    files = project(tmp_path / "a")
    first = workspace_archive(tmp_path / "a", files)
    os.utime(tmp_path / "a" / "dvc.yaml", (0, 0))  # a clone elsewhere: other times
    assert workspace_archive(tmp_path / "a", list(reversed(files))) == first

    (tmp_path / "a" / "dvc.yaml").write_text("stages: {x: {cmd: 'true'}}\n")
    assert workspace_archive(tmp_path / "a", files) != first


def test_a_workspace_comes_back_whole_and_is_stored_once(store: StepStore, tmp_path: Path) -> None:
    files = project(tmp_path / "project")
    archive = workspace_archive(tmp_path / "project", files)

    digest = store.upload_workspace(archive)
    assert digest == hashlib.sha256(archive).hexdigest()
    assert store.upload_workspace(archive) == digest
    listed = store.client.list_objects_v2(Bucket=BUCKET, Prefix=store.key("mlrig/workspaces"))
    assert listed["KeyCount"] == 1

    pod = tmp_path / "pod"
    store.download_workspace(digest, pod)
    assert (pod / "dvc.yaml").read_text() == "stages: {}\n"
    assert os.access(pod / "steps" / "run.sh", os.X_OK)


def test_a_missing_or_altered_workspace_is_named(store: StepStore, tmp_path: Path) -> None:
    with pytest.raises(MlrigError, match="missing: submit the pipeline again"):
        store.download_workspace("0" * 64, tmp_path / "pod")

    files = project(tmp_path / "project")
    digest = store.upload_workspace(workspace_archive(tmp_path / "project", files))
    altered = tmp_path / "altered.tar.gz"
    with tarfile.open(altered, "w:gz") as archive:
        archive.add(tmp_path / "project" / "dvc.yaml", arcname="dvc.yaml")
    store.put(store.key("mlrig/workspaces", f"{digest}.tar.gz"), altered.read_bytes())
    with pytest.raises(MlrigError, match="corrupt"):
        store.download_workspace(digest, tmp_path / "pod")
    assert not (tmp_path / "pod").exists()


def test_a_workspace_with_an_entry_outside_it_is_refused(store: StepStore, tmp_path: Path) -> None:
    (tmp_path / "evil.txt").write_text("outside\n")
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as packed:
        packed.add(tmp_path / "evil.txt", arcname="../evil.txt")
    digest = store.upload_workspace(archive.read_bytes())

    with pytest.raises(MlrigError, match=r"outside a workspace \(\.\./evil\.txt\)"):
        store.download_workspace(digest, tmp_path / "pod" / "workspace")
    assert not (tmp_path / "pod").exists()


def test_records_are_found_by_input_key_and_stage(store: StepStore) -> None:
    entry = {"cmd": "python -m steps.ingest", "outs": [{"path": "outputs/ingest", "md5": "a.dir"}]}
    assert not store.has_record("key-1")
    with pytest.raises(MlrigError, match=r"'ingest' has no result record .*did not finish"):
        store.get_record("key-1", "ingest")

    store.put_record("key-1", "ingest", entry)

    assert store.has_record("key-1")
    assert store.get_record("key-1", "ingest") == entry
    with pytest.raises(MlrigError, match="'validate' has no result record"):
        store.get_record("key-1", "validate")  # a key of another stage is no record of this one


def test_a_step_task_round_trips_through_the_store_and_the_pod_environment(
    store: StepStore,
) -> None:
    step = StepTask(
        stage="train@knn",
        input_key="key-2",
        workspace="f" * 64,
        parents={"split": "key-0"},
        git_commit="abc123",
    )
    store.put_step_task(step)

    environment = step.container_environment()
    assert step_of_pod(environment) == ("train@knn", "key-2")
    assert store.get_step_task("key-2", "train@knn") == step
    with pytest.raises(MlrigError, match="MLRIG_DVC_REMOTE_URL"):
        store.get_step_task("key-2", "evaluate@knn")


def test_a_pod_that_is_no_pipeline_step_or_lost_its_stage() -> None:
    assert step_of_pod({}) is None
    with pytest.raises(ConfigError, match=STAGE_VARIABLE):
        step_of_pod({INPUT_KEY_VARIABLE: "key-3"})


@pytest.mark.parametrize("url", [None, "/var/dvc-remote", "gs://bucket/dvc"])
def test_only_an_s3_remote_can_carry_a_pipeline(url: str | None) -> None:
    with pytest.raises(ConfigError, match="S3 DVC remote"):
        StepStore.of_remote(url, None)


def test_an_unreachable_endpoint_is_named_not_a_traceback(s3_endpoint: str) -> None:
    store = StepStore.of_remote(f"s3://{BUCKET}/dvc", "http://127.0.0.1:9")  # discard port
    with pytest.raises(MlrigError, match=r"127\.0\.0\.1:9.*AWS_ENDPOINT_URL"):
        store.has_record("key-4")


@pytest.mark.parametrize("variable", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_wrong_keys_are_refused_and_named(
    s3_endpoint: str, variable: str, request: pytest.FixtureRequest
) -> None:
    url = f"s3://{BUCKET}/{request.node.name}/dvc"
    assert not StepStore.of_remote(url, s3_endpoint).has_record("key-5")  # the right keys
    with pytest.MonkeyPatch.context() as patch:
        # read when the store is made, though the store before, in this process, read others
        patch.setenv(variable, "wrong" + os.environ[variable][5:])
        store = StepStore.of_remote(url, s3_endpoint)
        with pytest.raises(MlrigError, match=r"(SignatureDoesNotMatch|InvalidAccessKeyId).*"
                           r"AWS_SECRET_ACCESS_KEY"):  # fmt: skip
            store.put_record("key-5", "ingest", {"cmd": "true"})
    assert not StepStore.of_remote(url, s3_endpoint).has_record("key-5")
