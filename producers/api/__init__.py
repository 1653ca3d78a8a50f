"""The command API (FastAPI): authenticated, signed commands on ``shiplog.commands``."""

from producers.api.app import create_app
from producers.api.deps import DEFAULT_OPERATOR_ROLES, ApiDeps, Signer

__all__ = ["DEFAULT_OPERATOR_ROLES", "ApiDeps", "Signer", "create_app"]
