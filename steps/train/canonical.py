"""A saved model whose bytes depend only on the model: the same fit writes the same files.

Train is seeded, so the same inputs fit the same model; but the files MLflow and skops write
also carry the moment and the process that wrote them. skops names each array it stores after
the object's `id()` in memory and stamps every zip entry with the time; MLflow's `MLmodel` has
a random `model_uuid` and the creation time. With those, every run writes a model DVC has never
seen, and a fresh clone's first run rewrites every hash in dvc.lock from train on.

Here the skops archive is rewritten with its ids and file names numbered in the order the
schema holds them (the same objects keep sharing one number) and entries dated 1980-01-01, and
`MLmodel` gets a `model_uuid` derived from the model's bytes and no creation time (MLflow fills
it in when it loads one). The run that logged the model stays in MLflow, tagged with the
model's md5 (tracking/train_runs.py). A model saved with cloudpickle is left as it is.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import yaml

from mlrig.lineage import file_md5

SKOPS_SCHEMA = "schema.json"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold
MLMODEL = "MLmodel"
#: MLmodel fields that say when and by which process a model was written, not what it is
VOLATILE_FIELDS = ("utc_time_created", "model_uuid")


class Renumbering:
    """The numbers and file names of one skops schema, in the order they first appear."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}
        self.files: dict[str, str] = {}

    def renumber(self, node: Any) -> Any:
        """The node with every `__id__` and `file` replaced by its number."""
        if isinstance(node, list):
            return [self.renumber(item) for item in node]
        if not isinstance(node, dict):
            return node
        renumbered = {key: self.renumber(value) for key, value in node.items()}
        if isinstance(node.get("__id__"), int):  # skops treats 0 as "no id": start at 1
            renumbered["__id__"] = self.ids.setdefault(node["__id__"], len(self.ids) + 1)
        if isinstance(node.get("file"), str):
            suffix = Path(node["file"]).suffix
            renumbered["file"] = self.files.setdefault(node["file"], f"{len(self.files)}{suffix}")
        return renumbered


def canonical_skops(path: Path) -> None:
    """Rewrite a skops file so that its bytes depend only on the objects it holds."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: (info, archive.read(info)) for info in archive.infolist()}
    numbering = Renumbering()
    schema = numbering.renumber(json.loads(entries.pop(SKOPS_SCHEMA)[1]))
    members = {numbering.files[name]: entry for name, entry in entries.items()}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(dated(SKOPS_SCHEMA), json.dumps(schema, indent=2))
        for name in sorted(members):
            info, data = members[name]
            archive.writestr(dated(name, info.compress_type), data)


def dated(name: str, compress_type: int = zipfile.ZIP_STORED) -> zipfile.ZipInfo:
    """A zip entry for `name` with a fixed date and permissions."""
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = compress_type
    info.external_attr = 0o644 << 16
    return info


def content_md5(model_dir: Path) -> str:
    """MD5 over every file of a model folder but MLmodel, with its relative path."""
    digest = hashlib.md5()
    for file in sorted(model_dir.rglob("*")):
        if file.is_file() and file.name != MLMODEL:
            digest.update(f"{file.relative_to(model_dir).as_posix()}\0".encode())
            digest.update(file_md5(file).encode())
    return digest.hexdigest()


def canonical_model_dir(model_dir: Path) -> None:
    """Make the model folder MLflow wrote depend only on the model: its skops file
    canonical, its MLmodel free of the time and the random id, and a size that matches."""
    for skops_file in model_dir.glob("*.skops"):
        canonical_skops(skops_file)
    mlmodel_path = model_dir / MLMODEL
    mlmodel = yaml.safe_load(mlmodel_path.read_text())
    for name in VOLATILE_FIELDS:
        mlmodel.pop(name, None)
    mlmodel["model_uuid"] = uuid.UUID(content_md5(model_dir)).hex
    if "model_size_bytes" in mlmodel:
        files = [file for file in model_dir.rglob("*") if file.is_file() and file != mlmodel_path]
        mlmodel["model_size_bytes"] = sum(file.stat().st_size for file in files)
    mlmodel_path.write_text(yaml.safe_dump(mlmodel, default_flow_style=False, sort_keys=True))
