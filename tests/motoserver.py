"""moto in server mode for the AWS target tests: one ``ThreadedMotoServer`` on a free
port per session, reset before each test that uses it (``moto_server`` fixture).

Lambda invocations are stubbed (no Docker), and the clients here use dummy keys —
``SECRET_KEY`` is what the credential-leak tests look for in outputs and logs.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

# moto's werkzeug logs every request at INFO; the tests read their own logs
logging.getLogger("werkzeug").setLevel(logging.WARNING)

REGION = "eu-west-1"
ACCESS_KEY = "AKIASHIPLOGTEST00001"
SECRET_KEY = "shiplog-test-secret-key-4f1d9c"  # a dummy for moto, searched for in outputs
ACCOUNT = "123456789012"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class MotoServer:
    url: str

    def reset(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10
        )
        body = json.dumps({"lambda": {"use_docker": False}}).encode()
        request = urllib.request.Request(f"{self.url}/moto-api/config", data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        urllib.request.urlopen(request, timeout=10)

    def client(self, service: str, url: str | None = None) -> Any:
        """A synchronous boto3 client for setting up and observing (never the target's)."""
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=url or self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"max_attempts": 1}),
        )

    def target_config(self, url: str | None = None, **extra: Any) -> dict[str, Any]:
        """An ``AwsTargetConfig`` for this server: dummy keys, one attempt per call and
        fast polling unless ``extra`` says otherwise."""
        return {
            "region": REGION,
            "endpoint_url": url or self.url,
            "credentials": {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY},
            "max_attempts": 1,
            "poll_interval_s": 0.05,
            "rollout_timeout_s": 10,
            **extra,
        }


@pytest.fixture(scope="session")
def moto_session() -> Iterator[MotoServer]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield MotoServer(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def moto_server(moto_session: MotoServer) -> MotoServer:
    moto_session.reset()
    return moto_session


# -- Lambda fixtures ----------------------------------------------------------------


def lambda_zip(version: str) -> bytes:
    """A Python handler that answers its version."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        # a fixed timestamp: the same version is the same bytes (and CodeSha256)
        info = zipfile.ZipInfo("handler.py", date_time=(2020, 1, 1, 0, 0, 0))
        z.writestr(info, f"def handle(event, context):\n    return {version!r}\n")
    return buf.getvalue()


def lambda_role(server: MotoServer) -> str:
    iam = server.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    try:
        return str(iam.get_role(RoleName="shiplog-lambda")["Role"]["Arn"])
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(RoleName="shiplog-lambda", AssumeRolePolicyDocument=json.dumps(trust))
        return str(role["Role"]["Arn"])


def create_function(server: MotoServer, name: str) -> None:
    """A zip function with only ``$LATEST`` (what IaC leaves for shiplog to deploy to)."""
    server.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=lambda_role(server),
        Handler="handler.handle",
        Code={"ZipFile": lambda_zip("0")},
        Environment={"Variables": {"LOG_LEVEL": "info"}},
    )
