"""The scheduler's registry check is shared.registry's (strict: an unreachable registry
is a TemporaryError and the rollback command is retried)."""

from shared.registry import RegistryChecker, split_reference

__all__ = ["RegistryChecker", "split_reference"]
