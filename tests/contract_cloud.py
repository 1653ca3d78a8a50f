"""Target contract harnesses for the cloud targets (tests/integration/test_target_contract.py):
``cloud_run`` against tests/gcpfake.py and ``azure_container_apps`` against
tests/azurefake.py, each with the official client and a static token.

The observation reads the fake's own state, never the target: the revision that
carries all the traffic (and is ready), as the version in its image tag.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from azure.core.credentials import AccessToken
from google.oauth2.credentials import Credentials

from adapters.targets import Release, Target
from adapters.targets.azure import AzureContainerAppsTarget, AzureContainerAppsTargetConfig
from adapters.targets.gcp import CloudRunTarget, CloudRunTargetConfig
from tests.azurefake import AzureFake, AzureFakeServer, azure_fake_server
from tests.gcpfake import GcpFake, GcpFakeServer, gcp_fake_server

PROJECT, REGION = "shiplog-test", "europe-west1"
SUBSCRIPTION, RESOURCE_GROUP = "00000000-0000-0000-0000-000000000000", "shiplog-test"
MANAGED_ENVIRONMENT = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    "/providers/Microsoft.App/managedEnvironments/test-env"
)
GCP_TOKEN = "ya29.gcp-contract-secret-token"
AZURE_TOKEN = "eyJ0eXAi.azure-contract-secret-token"
ENV = "production"


class StaticTokenCredential:
    """An azure-core ``AsyncTokenCredential`` with one fixed token (tests only)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None


# -- quick settings: short polls, short backoff --------------------------------------


def cloud_run_config(server: GcpFakeServer, **overrides: object) -> CloudRunTargetConfig:
    values: dict[str, object] = {
        "project": PROJECT,
        "region": REGION,
        "api_endpoint": server.url,
        "credentials": Credentials(token=GCP_TOKEN),
        "operation_timeout": 20,
        "poll_initial": 0.02,
        "poll_maximum": 0.05,
        "retry_initial": 0.01,
        "retry_maximum": 0.05,
        "retry_timeout": 1.0,
        **overrides,
    }
    return CloudRunTargetConfig.model_validate(values)


def azure_config(server: AzureFakeServer, **overrides: object) -> AzureContainerAppsTargetConfig:
    values: dict[str, object] = {
        "subscription_id": SUBSCRIPTION,
        "resource_group": RESOURCE_GROUP,
        "base_url": server.url,
        "credential": StaticTokenCredential(AZURE_TOKEN),
        "polling_interval": 0.01,
        "revision_poll": 0.02,
        "revision_timeout": 20,
        "retry_total": 3,
        "retry_backoff_factor": 0.01,
        "retry_backoff_max": 0.05,
        **overrides,
    }
    return AzureContainerAppsTargetConfig.model_validate(values)


@contextmanager
def gcp_server() -> Iterator[GcpFakeServer]:
    with gcp_fake_server(GcpFake(ready_after=0.05, token=GCP_TOKEN)) as server:
        yield server


@contextmanager
def azure_server() -> Iterator[AzureFakeServer]:
    with azure_fake_server(AzureFake(ready_after=0.05, token=AZURE_TOKEN)) as server:
        yield server


def _version_of(image: str) -> str:
    return image.rsplit(":", 1)[1]


# -- cloud_run -----------------------------------------------------------------------


class CloudRunHarness:
    def __init__(self, service: str, server: GcpFakeServer) -> None:
        self.service, self.environment = service, ENV
        self.server = server
        self.name = f"projects/{PROJECT}/locations/{REGION}/services/{service}"

    def target(self) -> Target:
        return CloudRunTarget(cloud_run_config(self.server))

    def release(self, n: int) -> Release:
        version = self.expected(n)
        return Release(
            service=self.service,
            environment=self.environment,
            version=version,
            artifact=f"registry.example/{self.service}:{version}",
            config={"GREETING": f"hello {n}"},
            settings={"port": 8080},
        )

    def expected(self, n: int) -> str:
        return f"{n}.0.0"

    async def observe(self) -> str | None:
        fake = self.server.fake
        if self.name not in fake.services:
            return None
        serving = fake.serving(self.name)
        if len(serving) != 1:
            return repr(sorted(serving.items()))
        (revision,) = serving
        rev = fake.revisions[f"{self.name}/revisions/{revision}"]
        if time.monotonic() < rev.ready_at:
            return f"not ready {revision}"
        return _version_of(rev.image)

    async def effects(self) -> object:
        fake = self.server.fake
        if self.name not in fake.services:
            return None
        revisions = sorted(r.name for r in fake.revisions.values() if r.service == self.name)
        routes = [(t.revision, t.percent, t.tag) for t in fake.services[self.name].traffic]
        return revisions, routes

    async def close(self) -> None:
        return None


# -- azure_container_apps ------------------------------------------------------------


class AzureContainerAppsHarness:
    def __init__(self, service: str, server: AzureFakeServer) -> None:
        self.service, self.environment = service, ENV
        self.server = server
        self.key = (SUBSCRIPTION, RESOURCE_GROUP.lower(), service)

    def target(self) -> Target:
        return AzureContainerAppsTarget(azure_config(self.server))

    def release(self, n: int) -> Release:
        version = self.expected(n)
        return Release(
            service=self.service,
            environment=self.environment,
            version=version,
            artifact=f"registry.example/{self.service}:{version}",
            config={"GREETING": f"hello {n}"},
            settings={
                "managed_environment_id": MANAGED_ENVIRONMENT,
                "location": "westeurope",
                "target_port": 8080,
            },
        )

    def expected(self, n: int) -> str:
        return f"{n}.0.0"

    async def observe(self) -> str | None:
        fake = self.server.fake
        if self.key not in fake.apps:
            return None
        serving = fake.serving(self.key)
        if len(serving) != 1:
            return repr(sorted(serving.items()))
        (revision,) = serving
        rev = fake.revisions[self.key][revision]
        if not rev.active or time.monotonic() < rev.ready_at:
            return f"not running {revision}"
        return _version_of(fake.image(self.key, revision))

    async def effects(self) -> object:
        fake = self.server.fake
        if self.key not in fake.apps:
            return None
        revisions = sorted((r.name, r.active) for r in fake.revisions[self.key].values())
        weights = [(w.get("revisionName"), w.get("weight"), w.get("label")) for w in fake.traffic(self.key)]
        return revisions, weights

    async def close(self) -> None:
        return None
