"""The deployment aggregate every saga consumer folds: one release in one environment."""

from consumers.deployment.state import DeploymentState, Status, evolve, fold

__all__ = ["DeploymentState", "Status", "evolve", "fold"]
