"""Internal work messages: what the api asks the builder and the scheduler to do.

Commands travel on the work-queue streams (shared.subjects *_work_subject),
each published with `Nats-Msg-Id = <deploy_id>:<step>` so a retry of the same
step is stored once. They carry references and names, never secret values.
Unlike timeline events these are not a public contract.
"""

from __future__ import annotations

import msgspec

from shared.events.deploy import GitRef


class ImageSource(msgspec.Struct, frozen=True, kw_only=True, tag="image"):
    image: str  # a reference; the builder resolves it to a digest


class GitSource(msgspec.Struct, frozen=True, kw_only=True, tag="git"):
    git: GitRef


class UploadSource(msgspec.Struct, frozen=True, kw_only=True, tag="upload"):
    object_name: str  # in the shaman_sources object store
    digest: str  # sha256 of the uploaded tarball
    size: int


Source = ImageSource | GitSource | UploadSource


class BuildRequested(msgspec.Struct, frozen=True, kw_only=True, tag="build"):
    """Turn a source into an image digest (for an image source: resolve it)."""

    deploy_id: str
    app: str
    source: Source
    requested_by: str
    team: str = "default"


class DeployImage(msgspec.Struct, frozen=True, kw_only=True, tag="deploy_image"):
    """Create a release of this image digest and roll it out."""

    deploy_id: str
    app: str
    image: str  # repository@sha256:...
    digest: str
    description: str
    created_by: str


class ChangeConfig(msgspec.Struct, frozen=True, kw_only=True, tag="change_config"):
    deploy_id: str
    app: str
    set: dict[str, str]
    unset: list[str]
    created_by: str


class ChangeSecrets(msgspec.Struct, frozen=True, kw_only=True, tag="change_secrets"):
    """The app's secrets now have Vault version `version` with these key names."""

    deploy_id: str
    app: str
    version: int
    keys: list[str]
    description: str
    created_by: str


class ChangeProcess(msgspec.Struct, frozen=True, kw_only=True, tag="change_process"):
    """The app's process spec changed (PATCH /v1/apps/{app})."""

    deploy_id: str
    app: str
    description: str
    created_by: str


class Rollback(msgspec.Struct, frozen=True, kw_only=True, tag="rollback"):
    """Create a release with the content of `to_version` (None: last healthy)."""

    deploy_id: str
    app: str
    to_version: int | None
    automatic: bool
    created_by: str
    reason: str = ""
    failed_deploy_id: str | None = None


class Scale(msgspec.Struct, frozen=True, kw_only=True, tag="scale"):
    app: str
    instances: int
    previous: int
    requested_by: str
    request_id: str


class Reconcile(msgspec.Struct, frozen=True, kw_only=True, tag="reconcile"):
    """Ask the scheduler to reconcile an app now (e.g. after a destroy)."""

    app: str
    reason: str


ReleaseCommand = (
    DeployImage | ChangeConfig | ChangeSecrets | ChangeProcess | Rollback | Scale | Reconcile
)

build_decoder: msgspec.json.Decoder[BuildRequested] = msgspec.json.Decoder(BuildRequested)
release_decoder: msgspec.json.Decoder[ReleaseCommand] = msgspec.json.Decoder(ReleaseCommand)
_encoder = msgspec.json.Encoder()


def encode_command(command: msgspec.Struct) -> bytes:
    return _encoder.encode(command)
