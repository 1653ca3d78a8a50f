"""The dashboard in a real headless Chromium (Debian's, driven by Playwright's async
API) against `shiplog dev` with the demo pipeline, the embedded broker and database.

One running system is shared by the module, and the tests run in file order as one
story: 1.0.0 is built (the overview shows it live) and approved for production in
the dashboard; the bad 1.1.0 waits for approval, a viewer sees no button and their
forged posts are refused, the release manager approves it, its canary fails analysis
(the chart shows both series) and it rolls back; the audit view verifies the chain.
Screenshots go to the module's temporary directory (printed at the end).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, async_playwright

from adapters.eventlog import PostgresEventLog
from adapters.identity.tokens import PostgresTokenStore
from consumers.deployment import fold
from events.access import REFUSALS_STREAM
from events.deployment import deployment_stream
from tests.e2e.devproc import Dev, running_dev

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "demo"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
INSTALL_TIMEOUT_S = 600


def ensure_chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (never `playwright install`)."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    apt = shutil.which("apt-get")
    sudo: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            pytest.fail("chromium is not installed and neither root nor sudo can install it")
        sudo = ["sudo", "-n"]
    if apt is None:
        pytest.fail("chromium is not installed and there is no apt-get to install it with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        [*sudo, apt, "update", "-qq"],
        [*sudo, apt, "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"the chromium package was installed but {CHROMIUM} is missing")
    return CHROMIUM


@dataclass
class System:
    dev: Dev
    url: str
    log: PostgresEventLog
    producer: AIOKafkaProducer
    alice: str  # release manager
    victor: str  # viewer
    shots: Path
    builds: dict[str, str]

    def production(self, version: str) -> str:
        return f"sample.production.{self.builds[version]}"

    async def publish(self, version: str) -> str:
        build_id = str(uuid.uuid4())
        build: dict[str, Any] = {
            "specversion": "1.0",
            "id": build_id,
            "source": "ci/github/acme/sample",
            "type": "shiplog.build.completed.v1",
            "time": datetime.now(UTC).isoformat(),
            "subject": "sample",
            "datacontenttype": "application/json",
            "data": {
                "service": "sample",
                "version": version,
                "artifact": f"registry.example.com/sample:{version}",
                "digest": "sha256:" + "cd" * 32,
                "commit": "1" * 40,
                "branch": "main",
                "author": "bob",
                "pipeline": "default",
                "tests": {"passed": 120, "failed": 0, "coverage": 87.5},
                "security": {"critical": 0, "high": 0},
            },
        }
        await self.producer.send_and_wait("shiplog.builds", json.dumps(build).encode(), key=b"sample")
        self.builds[version] = build_id
        return build_id

    async def history(self, deployment: str) -> list[Any]:
        return [r.event for r in await self.log.read_stream(deployment_stream(deployment))]

    async def status(self, deployment: str) -> str:
        return fold(await self.history(deployment)).status.value

    async def until_status(self, deployment: str, *statuses: str, within: float = 60) -> str:
        deadline = time.monotonic() + within
        while True:
            status = await self.status(deployment)
            if status in statuses:
                return status
            assert time.monotonic() < deadline, f"{deployment} is {status}, not {statuses}"
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    running = cast(Generator[Dev, None, None], running_dev(tmp_path_factory.mktemp("dashboard"), DEMO))
    d = next(running)
    try:
        d.start()
        yield d
        # open event streams end with the hub: the server stops, cleanly
        assert d.stop() == 0
    finally:
        running.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(dev: Dev, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[System]:
    runtime = dev.runtime
    assert runtime["dashboard"] == runtime["api"] + "/ui/"
    assert f"{runtime['api']}/ui/" in "".join(dev.output)  # `shiplog dev` says where it is
    log = await PostgresEventLog.connect(runtime["database"], schema=runtime["log_schema"], max_size=3)
    tokens = PostgresTokenStore(log)
    expires = datetime.now(UTC) + timedelta(hours=1)
    _, alice = await tokens.create("alice", ["release-manager"], expires)
    _, victor = await tokens.create("victor", ["viewer"], expires)
    producer = AIOKafkaProducer(bootstrap_servers=runtime["kafka"], enable_idempotence=False)
    await producer.start()
    shots = tmp_path_factory.mktemp("screenshots")
    try:
        yield System(dev, runtime["api"], log, producer, alice, victor, shots, {})
    finally:
        print(f"\nscreenshots: {shots}")
        await producer.stop()
        await log.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = await asyncio.to_thread(ensure_chromium)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def sign_in(
    browser: Browser, system: System, token: str, **options: Any
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=DESKTOP, **options)
    context.set_default_timeout(15_000)
    page = await context.new_page()
    await page.goto(system.url + "/ui/")
    assert "/ui/signin" in page.url  # not signed in: sent to sign in first
    await page.fill("#token", token)
    await page.click("form[action='/ui/signin'] button[type=submit]")
    await page.wait_for_url(system.url + "/ui/")
    cookies = await context.cookies()
    [session] = [c for c in cookies if c["name"] == "shiplog_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert token not in await page.content()
    return context, page


async def shot(page: Page, system: System, name: str) -> None:
    await page.screenshot(path=str(system.shots / f"{name}.png"), full_page=True)


async def test_a_build_appears_on_the_overview_within_a_second(system: System, browser: Browser) -> None:
    context, page = await sign_in(browser, system, system.alice)
    await page.locator("#live-state.on").wait_for()  # the event stream is open
    started = time.monotonic()
    await system.publish("1.0.0")
    build = page.locator("tr[data-service='sample'] .build", has_text="build 1.0.0")
    await build.wait_for(timeout=1_000)
    assert time.monotonic() - started < 1.0
    assert page.url == system.url + "/ui/"  # no reload: the event stream updated the table

    # dev and staging deploy by themselves; production waits for a release manager
    production = page.locator(
        "tr[data-service='sample'] td[data-env='production'] .deploying.status-awaiting_approval"
    )
    await production.wait_for(timeout=60_000)
    await shot(page, system, "overview")
    phone = await context.new_page()
    await phone.set_viewport_size(PHONE)
    await phone.goto(system.url + "/ui/")
    await phone.locator("tr[data-service='sample']").wait_for()
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the overview scrolls sideways at phone width ({width}px)"
    await shot(phone, system, "overview-phone")
    await context.close()


async def test_an_approver_signs_in_approves_and_the_deployment_moves_on(
    system: System, browser: Browser
) -> None:
    production = system.production("1.0.0")
    await system.until_status(production, "awaiting_approval")
    context, page = await sign_in(browser, system, system.alice)
    await page.click("nav a[href='/ui/approvals']")
    card = page.locator(f".approval[data-deployment='{production}']")
    await card.wait_for()
    assert "→ 1.0.0" in await card.inner_text()  # the change: nothing -> 1.0.0
    assert "staging: succeeded" in await card.inner_text()  # the evidence so far
    await card.locator("textarea[name=comment]").fill("canary plan looks good")
    await shot(page, system, "approvals")
    watch = await context.new_page()
    await watch.goto(system.url + "/ui/")
    await watch.locator("#live-state.on").wait_for()
    await card.locator("button.approve").click()
    await page.locator(".flash", has_text="approve: sent").wait_for()
    # the overview follows the canary live: its strategy, step and weight
    canary = watch.locator("td[data-env='production'] .deploying.status-running")
    await canary.locator(".weight", has_text="20%").wait_for(timeout=30_000)
    assert "canary" in await canary.inner_text()
    await shot(watch, system, "overview-canary")

    await page.goto(f"{system.url}/ui/deployments/{production}")
    # the page follows the deployment live: approved, canary steps, succeeded
    await page.locator("#status", has_text="succeeded").wait_for(timeout=60_000)
    await shot(page, system, "deployment-succeeded")
    granted = [e for e in await system.history(production) if e.type_name == "shiplog.approval.granted"]
    assert granted[0].actor == "alice"
    assert granted[0].data["role"] == "release-manager"
    assert granted[0].data["comment"] == "canary plan looks good"
    assert granted[0].data["client"] == "127.0.0.1"
    await context.close()


async def test_without_the_role_there_is_no_approve_button_and_a_forged_post_is_refused(
    system: System, browser: Browser
) -> None:
    await system.publish("1.1.0")
    production = system.production("1.1.0")
    await system.until_status(production, "awaiting_approval")
    context, page = await sign_in(browser, system, system.victor)
    await page.goto(system.url + "/ui/approvals")
    card = page.locator(f".approval[data-deployment='{production}']")
    await card.wait_for()
    assert "none of the roles" in await card.inner_text()
    assert await page.locator("button.approve").count() == 0
    assert await page.locator("form[action$='/approve']").count() == 0
    await shot(page, system, "approvals-viewer")

    approve = f"{system.url}/ui/deployments/{production}/approve"
    csrf = await page.locator("form[action='/ui/signout'] input[name=csrf]").input_value()
    # with the session cookie but no CSRF token (what another site's form would send)
    forged = await page.request.post(approve, form={"comment": "forged", "role": "release-manager"})
    assert forged.status == 403
    # with a CSRF token, but in a role victor does not hold: the command API refuses
    claimed = await page.request.post(
        approve, form={"csrf": csrf, "comment": "me too", "role": "release-manager"}
    )
    assert claimed.status == 403
    # and without any session at all
    stranger = await browser.new_context()
    anonymous = await stranger.request.post(approve, form={"csrf": csrf, "role": "release-manager"})
    assert anonymous.status == 401
    await stranger.close()
    refusals = [r.event for r in await system.log.read_stream(REFUSALS_STREAM)]
    reasons = {(e.data["reason"], e.data.get("principal"), e.data["status"]) for e in refusals}
    assert ("missing or invalid CSRF token", "victor", 403) in reasons
    assert ("victor does not hold the role 'release-manager'", "victor", 403) in reasons
    assert ("no dashboard session", None, 401) in reasons
    assert await system.status(production) == "awaiting_approval"  # nothing was approved
    assert not [e for e in await system.history(production) if e.type_name == "shiplog.approval.granted"]
    await context.close()

    # the release manager approves it; its canary fails analysis and it rolls back
    context, page = await sign_in(browser, system, system.alice)
    await page.goto(system.url + "/ui/approvals")
    await page.locator(f".approval[data-deployment='{production}'] button.approve").click()
    await page.locator(".flash", has_text="approve: sent").wait_for()
    await context.close()
    assert await system.until_status(production, "rolled_back", "succeeded") == "rolled_back"


async def test_a_canary_analysis_chart_shows_both_series(system: System, browser: Browser) -> None:
    production = system.production("1.1.0")
    context, page = await sign_in(browser, system, system.alice)
    await page.goto(f"{system.url}/ui/deployments/{production}")
    chart = page.locator("#analysis figure svg", has_text="error_rate")
    await chart.wait_for()
    assert await chart.locator("polyline.series-canary").count() == 1
    assert await chart.locator("polyline.series-baseline").count() == 1
    assert await chart.locator("line.threshold").count() == 1
    assert await page.locator("#snapshot-version").inner_text() == "1.0.0"  # what a rollback restores
    assert await page.locator("#status").inner_text() == "rolled back"
    # alice approves releases but does not operate deployments: no buttons for her
    assert await page.locator("button[data-action=rollback]").count() == 0
    await shot(page, system, "deployment-canary-analysis")
    await context.close()


async def test_the_audit_view_shows_the_chain_verified_and_a_deployment_as_it_was(
    system: System, browser: Browser
) -> None:
    production = system.production("1.1.0")
    context, page = await sign_in(browser, system, system.alice)
    await page.click("nav a[href='/ui/audit']")
    chain = page.locator("#chain")
    assert "Hash chain verified" in await chain.inner_text()
    assert await page.locator("#chain.good").count() == 1
    await shot(page, system, "audit")

    # as it was a moment before alice's approval was first written down: awaiting her
    # approval. Her command is recorded by the recorder, which may come after the
    # approvals consumer has already counted it, so take the earliest of the two.
    records = await system.log.read_stream(deployment_stream(production))
    answered = [
        r.recorded_at
        for r in records
        if r.event.type_name in ("shiplog.approval.granted", "shiplog.approval.recorded")
    ]
    before = (min(answered) - timedelta(milliseconds=1)).isoformat()
    await page.fill("input[name=deployment]", production)
    await page.fill("input[name=at]", before)
    await page.click("form:has(input[name=at]) button[type=submit]")
    assert await page.locator("#as-of-status").inner_text() == "awaiting_approval"
    await page.fill("input[name=at]", "")
    await page.click("form:has(input[name=at]) button[type=submit]")
    assert await page.locator("#as-of-status").inner_text() == "rolled_back"

    await page.click("nav a[href='/ui/metrics']")
    assert await page.locator("#dora svg").count() == 4
    assert "sample / production" in await page.locator("#dora").inner_text()
    await shot(page, system, "metrics")
    await context.close()


async def test_an_operator_sends_a_command_through_the_command_api(system: System, browser: Browser) -> None:
    admin = (system.dev.home / "admin.token").read_text().strip()
    context, page = await sign_in(browser, system, admin)
    await page.goto(f"{system.url}/ui/deployments/{system.production('1.1.0')}")
    await page.locator("button[data-action=rollback]").click()
    await page.locator(".flash", has_text="rollback: sent for sample in production").wait_for()
    await context.close()
