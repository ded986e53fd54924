"""Helpers for the browser tests: a real headless Chromium (Playwright) against a real daphne.
The `browser` fixture lives in tests/conftest.py."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.db import connection
from playwright.sync_api import Page, expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"
ROOT = Path(__file__).resolve().parent.parent
# Git-ignored (var/): the tests save what a person would see, to look at after a run.
SCREENSHOTS = ROOT / "var" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SMALL_PHONE = {"width": 360, "height": 740}

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def orm(query):
    """Playwright's sync API keeps an event loop running in this thread, where Django refuses
    synchronous ORM calls: run them in a worker thread instead."""

    def run():
        try:
            return query()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def sign_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=login]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Start a conversation")).to_be_visible()


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


# Layout facts a person notices, measured in the page.
HORIZONTAL_OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"
STICKING_OUT = """() => {
  const clipped = (el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== 'visible') return p.getBoundingClientRect().right <= window.innerWidth + 0.5;
    }
    return false;
  };
  return [...document.querySelectorAll('body *')].filter((el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.right > window.innerWidth + 0.5 && !clipped(el);
  }).slice(0, 8).map((el) => `${el.tagName.toLowerCase()}.${el.className} right=${Math.round(el.getBoundingClientRect().right)}`);
}"""


ELEMENT_IN_VIEWPORT = """(selector) => {
  const r = document.querySelector(selector).getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0
    && r.bottom <= window.innerHeight + 0.5 && r.right <= window.innerWidth + 0.5;
}"""

# Whatever the user would hit at points spread over the composer must belong to it.
COVERING_COMPOSER = """() => {
  const composer = document.querySelector('[data-role=composer]');
  const r = composer.getBoundingClientRect();
  const covering = [];
  for (const fx of [0.05, 0.3, 0.5, 0.7, 0.95]) {
    for (const fy of [0.2, 0.5, 0.8]) {
      const hit = document.elementFromPoint(r.left + r.width * fx, r.top + r.height * fy);
      if (!hit || !composer.contains(hit)) covering.push(hit ? hit.outerHTML.slice(0, 120) : 'nothing');
    }
  }
  return covering;
}"""


def assert_layout(page: Page, *, composer: bool = True) -> None:
    # What a person sees: the page with its stylesheet. Right after a navigation the document
    # may be parsed (so a locator matches) before app.css has been applied.
    page.wait_for_load_state("load")
    overflow = page.evaluate(HORIZONTAL_OVERFLOW)
    assert overflow <= 0, (
        f"the page scrolls sideways by {overflow}px at {page.viewport_size}: {page.evaluate(STICKING_OUT)}"
    )
    if composer:
        assert page.evaluate(ELEMENT_IN_VIEWPORT, "[data-role=composer]"), "the composer is outside the window"
        assert page.evaluate(COVERING_COMPOSER) == [], "something covers the composer"


def assert_accessible(page: Page, name: str) -> None:
    """axe-core (axe-playwright-python): no serious or critical violations."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    report = "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} — " + "; ".join(n["target"][0] if isinstance(n["target"][0], str) else str(n["target"]) for n in v["nodes"][:5])
        for v in bad
    )
    assert not bad, f"{name}: axe found {len(bad)} serious/critical violation(s):\n{report}"


REPLY_WITH_CODE = """Here is what I found.

1. The time came from the **clock** tool.
2. The order came from the *orders* tool.

| Item | Qty | Price |
|:-----|----:|------:|
| Lamp | 1 | $39.90 |
| Bulb | 2 | $10.00 |

```python
def refund(order: str, amount: float) -> str:
    # Issue a refund and say so.
    return f"Refund of {amount:.2f} USD issued for {order}"
```

Run it with `refund("A-7", 3)`."""


def seed_history(user, *, agent_key: str = "diagnostics", agent_name: str = "Diagnostics", title: str = "Order A-7 and a refund"):
    """A conversation with history, stored as the run service stores it: questions, replies
    with tool calls, a handoff, Markdown with code and a table, and an order card."""
    from chat.tests.factories import ConversationFactory, MessageFactory, finished_reply

    conversation = ConversationFactory(owner=user, agent_key=agent_key, current_agent_name=agent_name, title=title)
    MessageFactory(conversation=conversation, content="What time is it, and where is my order A-7?")
    finished_reply(
        conversation=conversation,
        agent_name=agent_name,
        content=REPLY_WITH_CODE,
        activity=[
            {"kind": "tool", "call_id": "call-time", "name": "get_current_time", "arguments": {}, "agent": agent_name,
             "status": "completed", "output": "2026-11-21 12:00 (UTC)"},
            {"kind": "handoff", "agent": "Order Status"},
            {"kind": "tool", "call_id": "call-order", "name": "lookup_order", "arguments": {"order_number": "A-7"},
             "agent": "Order Status", "status": "completed", "output": '{"status": "shipped", "carrier": "DHL"}'},
        ],
        structured={
            "type": "OrderStatus",
            "data": {
                "order_number": "A-7", "found": True, "status": "shipped",
                "items": [{"name": "Desk lamp", "quantity": 1}, {"name": "Bulb", "quantity": 2}],
                "total": "$59.90", "carrier": "DHL", "estimated_delivery": "2026-11-24",
                "summary": "Your order A-7 is on its way with DHL.",
            },
        },
    )
    MessageFactory(conversation=conversation, content="Thanks! And a short poem about lighthouses, please.")
    finished_reply(
        conversation=conversation,
        agent_name=agent_name,
        content="A lamp that turns above the foam,\nkeeps every ship from harm,\nand brings the sailors home.",
    )
    return conversation
