"""The devstack's name for the shared podman/buildah settings (shared/containers.py)."""

from shared.containers import CONTAINERS_CONF, ContainerStorage

__all__ = ["CONTAINERS_CONF", "ContainerStorage"]
