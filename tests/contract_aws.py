"""Harnesses of the target contract suite for the AWS targets (``lambda``, ``ecs``),
against moto in server mode (tests/motoserver.py).

What runs is observed with a plain boto3 client, never through the target:

- Lambda: the alias's version and routing; the version's ``CodeSha256`` is matched
  against the SHA-256 of each release's zip (moto hashes zip uploads as AWS does;
  its ``update_function_code`` from S3 hashes the previous code, so the harness ships
  zip files, not S3 keys).
- ECS: the service's task definition's container image. moto never progresses a
  deployment (``rolloutState`` stays ``IN_PROGRESS``); it does report
  ``runningCount == desiredCount`` once ``update_service`` set the desired count and
  keeps a single deployment, which is the ``services-stable`` condition the target
  follows (see ``adapters.targets.aws.ecs``).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from adapters.targets import Release, Target
from adapters.targets.aws import EcsTarget
from adapters.targets.aws.config import AwsTargetConfig
from adapters.targets.serverless import LambdaTarget
from tests.motoserver import MotoServer, create_function, lambda_zip

ENV = "production"
COLOURS = ("blue", "green")


def _sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class LambdaHarness:
    def __init__(self, tmp_path: Path, service: str, server: MotoServer) -> None:
        self.service, self.environment = service, ENV
        self.tmp_path, self.server = tmp_path, server
        create_function(server, service)
        self._lambda = server.client("lambda")

    def target(self) -> Target:
        return LambdaTarget(AwsTargetConfig.model_validate(self.server.target_config()))

    def release(self, n: int) -> Release:
        path = self.tmp_path / f"{self.service}-{n}.zip"
        path.write_bytes(lambda_zip(self.expected(n)))
        return Release(
            service=self.service,
            environment=ENV,
            version=self.expected(n),
            artifact=str(path),
            config={"RELEASE": str(n)},
        )

    def expected(self, n: int) -> str:
        return f"{n}.0.0"

    def _alias(self) -> dict[str, Any] | None:
        try:
            alias: dict[str, Any] = self._lambda.get_alias(FunctionName=self.service, Name=ENV)
        except self._lambda.exceptions.ResourceNotFoundException:
            return None
        return alias

    async def observe(self) -> str | None:
        alias = self._alias()
        if alias is None:
            return None
        routing = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        if routing:
            return f"split {alias['FunctionVersion']} / {routing}"
        sha = self._lambda.get_function_configuration(
            FunctionName=self.service, Qualifier=alias["FunctionVersion"]
        )["CodeSha256"]
        for n in range(1, 4):
            if sha == _sha(lambda_zip(self.expected(n))):
                return self.expected(n)
        return f"unknown code {sha}"

    async def effects(self) -> object:
        alias = self._alias()
        versions = self._lambda.list_versions_by_function(FunctionName=self.service)["Versions"]
        return (len(versions), None if alias is None else alias["RevisionId"])

    async def close(self) -> None:
        return None


class EcsHarness:
    """Two colour services (blue serving, green at 0 tasks) of one cluster, each in
    its own target group, behind a listener forwarding 100/0 — what Terraform would
    leave for shiplog. Every strategy runs on them; rolling rolls the active colour."""

    def __init__(self, service: str, server: MotoServer) -> None:
        self.service, self.environment = service, ENV
        self.server = server
        self._ecs, self._elb = server.client("ecs"), server.client("elbv2")
        self._ecs.create_cluster(clusterName=ENV)
        ec2 = server.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"eu-west-1{z}")[
                "Subnet"
            ]["SubnetId"]
            for i, z in ((1, "a"), (2, "b"))
        ]
        lb = self._elb.create_load_balancer(Name=f"lb-{service}", Subnets=subnets)["LoadBalancers"][0]
        self.groups = {
            c: self._elb.create_target_group(
                Name=f"{service}-{c}", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip"
            )["TargetGroups"][0]["TargetGroupArn"]
            for c in COLOURS
        }
        forward = [
            {"TargetGroupArn": self.groups[c], "Weight": w} for c, w in zip(COLOURS, (100, 0), strict=True)
        ]
        self.listener = self._elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": forward}}],
        )["Listeners"][0]["ListenerArn"]
        self.services = {c: f"{service}-{c}" for c in COLOURS}
        for colour, desired in zip(COLOURS, (1, 0), strict=True):
            td = self._ecs.register_task_definition(
                family=self.services[colour],
                containerDefinitions=[
                    {
                        "name": service,
                        "image": f"registry.example/{service}:0.0.0",
                        "memory": 128,
                        "portMappings": [{"containerPort": 80}],
                        "environment": [{"name": "LOG_LEVEL", "value": "info"}],
                    }
                ],
            )["taskDefinition"]["taskDefinitionArn"]
            self._ecs.create_service(
                cluster=ENV,
                serviceName=self.services[colour],
                taskDefinition=td,
                desiredCount=desired,
                loadBalancers=[
                    {"targetGroupArn": self.groups[colour], "containerName": service, "containerPort": 80}
                ],
            )

    def target(self) -> Target:
        return EcsTarget(AwsTargetConfig.model_validate(self.server.target_config()))

    def release(self, n: int) -> Release:
        version = self.expected(n)
        settings = {
            "cluster": ENV,
            "colour_services": self.services,
            "target_groups": self.groups,
            "listener_arn": self.listener,
        }
        return Release(
            service=self.service,
            environment=ENV,
            version=version,
            artifact=f"registry.example/{self.service}:{version}",
            config={"RELEASE": str(n)},
            settings=settings,
        )

    def expected(self, n: int) -> str:
        return f"{n}.0.0"

    def _weights(self) -> dict[str, int]:
        listener = self._elb.describe_listeners(ListenerArns=[self.listener])["Listeners"][0]
        groups = listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"]
        by_arn = {g["TargetGroupArn"]: int(g["Weight"]) for g in groups}
        return {c: by_arn.get(self.groups[c], 0) for c in COLOURS}

    def _service(self, colour: str) -> dict[str, Any]:
        found: dict[str, Any] = self._ecs.describe_services(cluster=ENV, services=[self.services[colour]])[
            "services"
        ][0]
        return found

    async def observe(self) -> str | None:
        serving = [c for c, w in self._weights().items() if w > 0]
        if len(serving) != 1:
            return f"split {self._weights()}"
        svc = self._service(serving[0])
        if svc["desiredCount"] == 0:
            return f"{serving[0]} takes traffic with no tasks"
        td = self._ecs.describe_task_definition(taskDefinition=svc["taskDefinition"])["taskDefinition"]
        return str(td["containerDefinitions"][0]["image"]).rsplit(":", 1)[1]

    async def effects(self) -> object:
        revisions = [
            len(self._ecs.list_task_definitions(familyPrefix=self.services[c])["taskDefinitionArns"])
            for c in COLOURS
        ]
        services = [(self._service(c)["taskDefinition"], self._service(c)["desiredCount"]) for c in COLOURS]
        return (revisions, services, self._weights())

    async def close(self) -> None:
        return None
