"""The Vault/OpenBao port: app secrets in KV v2, names and versions out, values never.

Import from here: `from shared.vault import VaultClient`.
"""

from shared.vault.client import APP_PREFIX, SecretMetadata, SecretsWrite, VaultClient

__all__ = ["APP_PREFIX", "SecretMetadata", "SecretsWrite", "VaultClient"]
