"""The web UI in a real browser (Debian's headless chromium, driven by Playwright) against the
whole running stack with real containers: sign in, create an app (seeing the API's field
error next to its field first), press Deploy, watch the live timeline reach healthy, deploy
a second release, roll back to the first, see the rollback finish, then set a config var
and a secret. A screenshot of every step goes to test-artifacts/ui/ (gitignored).

Images are built with buildah FROM the stack's seeded busybox and pushed to the stack's
registry: `ui-hello:v1` (examples/hello) and `ui-hello:v2` (the same with another greeting).
Rollouts use tiny timings (min healthy time 0.2 s, checks every 1 s) so a deploy takes
seconds. Playwright never downloads a browser here: it launches /usr/bin/chromium.

Also here: the page's SSE parser fed awkward chunks (a CR LF split across reads), with the
page served from `load_assets()` through Playwright's request interception, no stack.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from devstack.components.base import http_request
from devstack.images import build, push
from tests.conftest import ShamanStack

pytestmark = [pytest.mark.e2e, pytest.mark.podman]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "ui"
HELLO_DIR = REPO / "examples" / "hello"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DEPLOY_TIMEOUT_MS = 180_000
V2_CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
ENV GREETING="Hello from release two"
"""
CRASH_CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
CMD ["/bin/sh", "-c", "echo 'ui-e2e: refusing to start: DATABASE_URL is not set' >&2; exit 3"]
"""
SECRET_VALUE = "ui-e2e-secret-" + uuid.uuid4().hex


@dataclass(frozen=True)
class UiImages:
    repository: str
    v1: str
    v2: str
    crash: str


@pytest.fixture(scope="module")
def ui_images(shaman_stack: ShamanStack, tmp_path_factory: pytest.TempPathFactory) -> UiImages:
    registry = shaman_stack.registry
    log = tmp_path_factory.mktemp("ui-image-logs") / "build.log"
    repository = f"{registry}/ui-hello"
    v1, v2, crash = f"{repository}:v1", f"{repository}:v2", f"{repository}:crash"
    build(shaman_stack.storage, HELLO_DIR, v1, log, build_args={"REGISTRY": registry})
    push(shaman_stack.storage, v1, log)
    context = tmp_path_factory.mktemp("ui-v2")
    (context / "Containerfile").write_text(V2_CONTAINERFILE)
    build(shaman_stack.storage, context, v2, log, build_args={"BASE": v1})
    push(shaman_stack.storage, v2, log)
    context = tmp_path_factory.mktemp("ui-crash")
    (context / "Containerfile").write_text(CRASH_CONTAINERFILE)
    build(shaman_stack.storage, context, crash, log, build_args={"BASE": v1})
    push(shaman_stack.storage, crash, log)
    return UiImages(repository=repository, v1=v1, v2=v2, crash=crash)


@pytest.fixture
def page() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (scripts/install.sh installs it)")
    errors: list[str] = []
    with sync_playwright() as pw, tempfile.TemporaryDirectory(
        prefix="shaman-chromium-"
    ) as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(20_000)
        try:
            tab = context.new_page()
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            yield tab
        finally:
            context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


class Steps:
    """Numbered full-page screenshots under test-artifacts/ui/."""

    def __init__(self, page: Any, prefix: str) -> None:
        self.page = page
        self.prefix = prefix
        self.n = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{prefix}-*.png"):
            old.unlink()

    def shot(self, name: str, element: Any = None) -> Path:
        """The whole page, or only `element` (a locator) when the page is long."""
        self.n += 1
        path = ARTIFACTS / f"{self.prefix}-{self.n:02d}-{name}.png"
        if element is None:
            self.page.screenshot(path=str(path), full_page=True)
        else:
            element.screenshot(path=str(path))
        return path


def api_get(stack_url: str, token: str, path: str) -> Any:
    response = http_request(stack_url + path, headers={"Authorization": f"Bearer {token}"})
    assert response is not None and response.status == 200, path
    return response.json()


def press_deploy(page: Any, image: str) -> str:
    """Fill the image, press the green button; the deploy id the page says it accepted."""
    page.get_by_label("Image to deploy").fill(image)
    page.get_by_role("button", name="Deploy", exact=True).click()
    notice = page.locator(".deploy-panel .notice")
    expect(notice).to_contain_text("accepted")
    match = re.search(r"Deploy (d-[0-9a-f-]+) accepted", notice.inner_text())
    assert match, notice.inner_text()
    return match.group(1)


def card(page: Any, deploy_id: str) -> Any:
    return page.locator(f'article.deploy-card[data-deploy-id="{deploy_id}"]')


def wait_healthy(page: Any, deploy_id: str) -> Any:
    found = card(page, deploy_id)
    expect(found).to_have_attribute("data-status", "healthy", timeout=DEPLOY_TIMEOUT_MS)
    return found


def run_ui_flow(page: Any, api_url: str, token: str, images: UiImages, prefix: str = "flow"
                ) -> None:
    steps = Steps(page, prefix)
    app = f"ui-{uuid.uuid4().hex[:8]}"

    # -- sign in: a wrong token is refused at the field, the right one opens the app list
    page.goto(api_url + "/")
    expect(page.get_by_role("heading", name="Sign in to Shaman")).to_be_visible()
    expect(page.get_by_label("API token")).to_be_focused()
    steps.shot("sign-in")
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#f-token-error")).to_contain_text("not valid")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Apps", exact=True)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('shaman.token')") == token
    assert page.evaluate("localStorage.getItem('shaman.token')") is None
    steps.shot("apps")

    # -- create the app: the API's field error shows next to its field first
    page.get_by_role("link", name="New app").first.click()
    expect(page.get_by_role("heading", name="Create an app")).to_be_visible()
    page.get_by_label("Name", exact=True).fill(app)
    page.get_by_label("Image repository").fill(images.repository)
    page.get_by_label("Health check path").fill("health")
    page.get_by_role("button", name="Create app").click()
    error = page.locator("#f-health-path-error")
    expect(error).to_contain_text("must be a URL path")
    expect(page.get_by_label("Health check path")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Health check path")).to_be_focused()
    steps.shot("create-field-error")
    page.get_by_label("Health check path").fill("/health")
    page.get_by_text("Health check timing and rollout policy").click()
    for label, value in [("Interval (s)", "1"), ("Timeout (s)", "1"),
                         ("Min healthy time (s)", "0.2"), ("Healthy deadline (s)", "20"),
                         ("Progress deadline (s)", "30")]:
        page.get_by_label(label).fill(value)
    page.get_by_role("button", name="Create app").click()
    expect(page.get_by_role("heading", name=app, exact=True)).to_be_visible()
    expect(page.locator(".stream-state")).to_have_text("Live")
    steps.shot("app-created")

    # -- the green button: v1, followed live to healthy
    first = press_deploy(page, images.v1)
    v1_card = wait_healthy(page, first)
    # These come only from the event stream (the polling fallback sets the status only).
    expect(v1_card.locator(".milestones")).to_contain_text("Release v1 created")
    expect(v1_card.locator(".milestones")).to_contain_text("Rollout healthy")
    expect(v1_card.locator(".groups progress")).to_have_count(1)
    expect(v1_card.locator(".outcome")).to_contain_text("Healthy: release v1 is running")
    expect(page.locator('tr[data-release="1"]')).to_contain_text("current")
    steps.shot("v1-healthy")

    # -- a second release
    second = press_deploy(page, images.v2)
    v2_card = wait_healthy(page, second)
    expect(v2_card.locator(".milestones")).to_contain_text("Release v2 created")
    expect(page.locator('tr[data-release="2"]')).to_contain_text("current")
    steps.shot("v2-healthy")

    # -- roll back to v1: confirm in the dialog, watch the rollback finish
    page.get_by_role("button", name="Roll back to v1").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Roll back {app} to v1?")
    steps.shot("rollback-confirm")
    dialog.get_by_role("button", name="Roll back to v1").click()
    rollback_card = page.locator('article.deploy-card[data-kind="rollback"]')
    expect(rollback_card).to_have_count(1)
    expect(rollback_card).to_have_attribute("data-status", "healthy", timeout=DEPLOY_TIMEOUT_MS)
    expect(rollback_card.locator(".milestones")).to_contain_text("Release v3 created")
    expect(page.locator('tr[data-release="3"]')).to_contain_text("current")
    expect(page.locator('tr[data-release="3"]')).to_contain_text("content of v1")
    steps.shot("rollback-healthy")

    releases = {r["version"]: r for r in
                api_get(api_url, token, f"/v1/apps/{app}/releases")["releases"]}
    assert releases[3]["digest"] == releases[1]["digest"] != releases[2]["digest"]
    assert api_get(api_url, token, f"/v1/apps/{app}")["current_release"] == 3

    # -- config var and a secret: each a new release; the secret's value never shows
    config_form = page.get_by_role("form", name="Set a config var")
    config_form.get_by_label("Name").fill("LOG_LEVEL")
    config_form.get_by_label("Value").fill("debug")
    config_form.get_by_role("button", name="Set").click()
    config_card = page.locator('article.deploy-card[data-kind="config"]')
    expect(config_card).to_have_attribute("data-status", "healthy", timeout=DEPLOY_TIMEOUT_MS)
    expect(page.locator("section[aria-labelledby=config-h] table")).to_contain_text("debug")

    secret_form = page.get_by_role("form", name="Set a secret")
    secret_form.get_by_label("Name").fill("API_KEY")
    secret_form.get_by_label("Value").fill(SECRET_VALUE)
    secret_form.get_by_role("button", name="Set secret").click()
    secret_card = page.locator('article.deploy-card[data-kind="secrets"]')
    expect(secret_card).to_have_attribute("data-status", "healthy", timeout=DEPLOY_TIMEOUT_MS)
    expect(page.locator("section[aria-labelledby=secrets-h] table")).to_contain_text("API_KEY")
    assert SECRET_VALUE not in page.content()
    assert secret_form.get_by_label("Value").input_value() == ""
    steps.shot("config-and-secret")

    # -- a release that crashes: the failure explained, rolled back automatically
    bad = press_deploy(page, images.crash)
    bad_card = card(page, bad)
    expect(bad_card).to_have_attribute("data-status", "rolled_back", timeout=DEPLOY_TIMEOUT_MS)
    failure = bad_card.locator(".failure")
    expect(failure).to_contain_text("Why the rollout failed")
    expect(failure).to_contain_text("exited with code 3")
    expect(failure).to_contain_text("DATABASE_URL is not set")
    expect(bad_card.locator(".milestones")).to_contain_text("Automatic rollback to v5 started")
    expect(bad_card.locator(".outcome")).to_contain_text("Rolled back")
    expect(page.locator('tr[data-release="7"]')).to_contain_text("current")
    steps.shot("crash-explained-and-rolled-back")
    steps.shot("crash-card", element=bad_card)

    # -- the app list shows the app's state and its last deploy
    page.locator("#nav-apps").click()
    row = page.locator(f'tr[data-app="{app}"]')
    expect(row).to_contain_text("v7")
    expect(row).to_contain_text("running")
    steps.shot("apps-after")


@pytest.mark.timeout(900)
def test_create_deploy_and_roll_back_in_the_browser(
    shaman_stack: ShamanStack, ui_images: UiImages, page: Any
) -> None:
    run_ui_flow(page, shaman_stack.api_url, shaman_stack.admin_token, ui_images)


def test_the_pages_sse_parser_handles_split_chunks(page: Any) -> None:
    from services.api.ui.shell import load_assets

    assets = load_assets()

    def serve(route: Any) -> None:
        path = route.request.url.split("://", 1)[1].split("/", 1)[1].split("?")[0]
        asset = assets.get(path.removeprefix("ui/") if path else "index.html")
        if asset is None:
            route.fulfill(status=404, body="")
        else:
            route.fulfill(status=200, body=asset.body, content_type=asset.content_type)

    page.route("http://shaman.test/**", serve)
    page.goto("http://shaman.test/")
    expect(page.get_by_role("heading", name="Sign in to Shaman")).to_be_visible()
    chunks = ["retry: 2000\n: connected\n\n", "id: 5\r", "\ndata: {\"a\"", ":1}\r\n\r",
              "\nid: 6\ndata: x\ndata:  y\n", "\n: keep-alive\n\ndata: no id change\r\r",
              # a CR at the end of a read may be half of a CR LF: it waits for the next
              "\n"]
    messages = page.evaluate(
        """(chunks) => {
          const out = [];
          const parser = new window.ShamanUI.SseParser((m) => out.push(m));
          for (const c of chunks) parser.push(c);
          return {out, retry: parser.retry};
        }""",
        chunks,
    )
    assert messages["retry"] == 2000
    assert messages["out"] == [
        {"id": "5", "data": json.dumps({"a": 1}, separators=(",", ":"))},
        {"id": "6", "data": "x\n y"},
        {"id": "6", "data": "no id change"},
    ]
