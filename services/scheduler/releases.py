"""What goes into a new release: pure rules, no I/O.

A release pins everything a rollout needs: the image digest, the config vars, the
secret version and key names, the process spec, who made it and why. Each command
starts from the app's current release (`base`, None before the first one) and changes
one thing:

- `DeployImage`: a new image; config and secrets carried over;
- `ChangeConfig`: config vars set/unset; image and secrets carried over;
- `ChangeSecrets`: a new secret version and key names; the rest carried over;
- `ChangeProcess`: the process spec as the app record has it now;
- `Rollback`: the whole content of the target release (image, config, secrets AND
  process), so rolling back undoes all of it.

Every release but a rollback takes the process spec from the app record at that time.
A release made before any image was deployed has `image == ""` (Heroku does the same
with config set on a fresh app): it is history, and the first deploy inherits it, but
there is nothing to run.

Numbering rules are here too (`adopt_release`, `skip_release_number`), as pure changes
to an app record that the command handler writes back with the record's revision
(release_commands.py does the storage and the races).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.scheduler import descriptions
from shared.commands import ChangeConfig, ChangeProcess, ChangeSecrets, DeployImage, Rollback
from shared.records import AppRecord, ReleaseKind, ReleaseRecord, SecretsPin

ReleaseCommandWithDeploy = DeployImage | ChangeConfig | ChangeSecrets | ChangeProcess | Rollback

KIND: dict[type, ReleaseKind] = {
    DeployImage: "deploy",
    ChangeConfig: "config",
    ChangeSecrets: "secrets",
    ChangeProcess: "process",
    Rollback: "rollback",
}


def kind_of(command: ReleaseCommandWithDeploy) -> ReleaseKind:
    return KIND[type(command)]


def apply_config(base: dict[str, str], set_: dict[str, str], unset: list[str]) -> dict[str, str]:
    """Unset first, then set: a name in both ends up set."""
    config = {k: v for k, v in base.items() if k not in set(unset)}
    config.update(set_)
    return dict(sorted(config.items()))


def build_release(
    command: ReleaseCommandWithDeploy,
    *,
    app: AppRecord,
    version: int,
    base: ReleaseRecord | None,
    target: ReleaseRecord | None = None,
) -> ReleaseRecord:
    """The release `command` creates as number `version` of `app`.

    `target` is required for a Rollback (the release whose content is restored).
    """
    name = app.spec.name
    image = base.image if base else ""
    digest = base.digest if base else ""
    config = dict(base.config) if base else {}
    secrets = base.secrets if base else None
    process = app.spec.process
    rollback_of: int | None = None
    created_by = command.created_by

    match command:
        case DeployImage():
            image, digest = command.image, command.digest
            description = descriptions.deploy_description(command.digest, command.description)
        case ChangeConfig():
            config = apply_config(config, command.set, command.unset)
            description = descriptions.config_description(command.set, command.unset)
        case ChangeSecrets():
            secrets = SecretsPin(version=command.version, keys=sorted(set(command.keys)))
            description = descriptions.secrets_description(command.keys, command.description)
        case ChangeProcess():
            description = descriptions.process_description(command.description)
        case Rollback():
            if target is None:
                raise ValueError("a rollback needs the target release")
            image, digest = target.image, target.digest
            config = dict(target.config)
            secrets = target.secrets
            process = target.process
            rollback_of = target.version
            description = descriptions.rollback_description(target.version)
        case _:  # pragma: no cover - the union is exhaustive
            raise TypeError(f"not a release command: {type(command).__name__}")

    return ReleaseRecord(
        app=name,
        version=version,
        kind=kind_of(command),
        description=description,
        created_by=created_by,
        deploy_id=command.deploy_id,
        image=image,
        digest=digest,
        config=config,
        secrets=secrets,
        process=process,
        rollback_of=rollback_of,
    )


def same_content(a: ReleaseRecord, b: ReleaseRecord) -> bool:
    """Would the two releases run the same thing (image, config, secrets, process)?"""
    return (a.image, a.digest, a.config, a.secrets, a.process) == (
        b.image, b.digest, b.config, b.secrets, b.process)


def rollback_search_order(app: AppRecord) -> list[int]:
    """Release numbers to try, best first, for "the last healthy release before the current".

    The app's `last_healthy_release` when it is older than the current one; otherwise
    walk back from the release before the current one (the caller checks each one's
    deploy really went healthy).
    """
    current = app.current_release
    if current is None:
        return []
    order: list[int] = []
    if app.last_healthy_release is not None and app.last_healthy_release < current:
        order.append(app.last_healthy_release)
    order.extend(v for v in range(current - 1, 0, -1) if v not in order)
    return order


@dataclass
class Adoption:
    """What making release `version` current decided for the app record."""

    changed: bool = False  # the record must be written back
    current: bool = False  # the release is (now) the app's current one
    previous_active: str | None = None  # the deploy it took over from, if any
    superseded_by: str | None = None  # a newer release is current: ours is superseded


def adopt_release(app: AppRecord, version: int, deploy_id: str) -> Adoption:
    """Make release `version` (of deploy `deploy_id`) current unless a newer one is.

    Latest number wins. `next_release` always ends past `version`. Idempotent: adopting
    the same release for the same deploy again changes nothing.
    """
    decision = Adoption()
    if app.next_release <= version:
        app.next_release = version + 1
        decision.changed = True
    if app.current_release is None or app.current_release < version:
        decision.current = True
        decision.previous_active = app.active_deploy_id
        app.current_release = version
        app.active_deploy_id = deploy_id
        decision.changed = True
    elif app.current_release == version:
        decision.current = True
        if app.active_deploy_id != deploy_id:
            decision.previous_active = app.active_deploy_id
            app.active_deploy_id = deploy_id
            decision.changed = True
    else:
        decision.superseded_by = app.active_deploy_id or f"v{app.current_release}"
    return decision


def skip_release_number(app: AppRecord, taken: int) -> bool:
    """Move `next_release` past a number another deploy holds; False if already past."""
    if app.next_release > taken:
        return False
    app.next_release = taken + 1
    return True
