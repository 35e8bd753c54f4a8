"""End to end in a real headless browser: the pages follow a running hub live.

A hub and its inspector run in this test's trio run, on a real socket; chromium (driven by
selenium, in a worker thread: its calls block) opens the sessions page, sees a session
created after it loaded appear, opens it, and sees an envelope posted after that show up in
the transcript (a page that reloads nothing by itself: only the feed brings it); back on the
list, the session's last seq follows the next post (the feed updates the row in place).
Every wait is for a condition, with a deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from tests.harness import open_hub_pair
from troupe.inspect import HubSource, inspector_app, serve_inspector

from ._browser import browser_or_skip, open_chromium

if TYPE_CHECKING:
    from selenium.webdriver import Chrome as WebDriver

#: Real seconds the browser gets for each thing it must see.
DEADLINE_S = 30


def wait_for(browser: WebDriver, condition: Callable[[WebDriver], Any]) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, DEADLINE_S, poll_frequency=0.05).until(condition)


def live_badge(browser: WebDriver) -> bool:
    from selenium.webdriver.common.by import By

    return bool(browser.find_element(By.ID, "live").text == "live")


async def test_a_browser_sees_a_new_session_and_a_posted_envelope_live(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser_or_skip()
    async with open_hub_pair() as h, trio.open_nursery() as nursery:
        source = HubSource(h.hub)
        await nursery.start(source.run)
        port = await nursery.start(serve_inspector, inspector_app(source), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}"
        alice, bob = await h.agent("alice"), await h.agent("bob")

        with open_chromium(tmp_path / "profile") as browser:

            def in_browser(step: Callable[[], Any]) -> Any:
                return trio.to_thread.run_sync(step)

            def open_sessions() -> None:
                browser.get(url + "/")
                wait_for(browser, lambda b: b.find_elements(By.ID, "session-rows"))
                wait_for(browser, live_badge)  # the feed is connected

            await in_browser(open_sessions)
            md = await h.session("conversation", alice, bob)
            sid = md.session_id

            def see_the_session() -> None:
                row = f'tr[data-session="{sid}"]'
                wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, row))
                browser.find_element(By.CSS_SELECTOR, f"{row} a").click()
                wait_for(
                    browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "tr.envelope")) == 3
                )
                wait_for(browser, live_badge)

            await in_browser(see_the_session)
            await h.say(md, alice, "seen live in a browser")

            def see_the_envelope() -> str:
                posted = 'tr.envelope[data-seq="4"]'
                found = wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, posted))
                return str(found[0].text)

            shown = await in_browser(see_the_envelope)
            assert "seen live in a browser" in shown
            assert "alice" in shown
            assert "troupe.text" in shown

            def back_to_the_list() -> None:
                browser.get(url + "/")
                wait_for(
                    browser, lambda b: b.find_elements(By.CSS_SELECTOR, f'tr[data-session="{sid}"]')
                )
                wait_for(browser, live_badge)

            await in_browser(back_to_the_list)
            await h.say(md, bob, "and its row follows")

            def see_the_last_seq() -> None:
                seq = f'tr[data-session="{sid}"] span.seq'
                wait_for(browser, lambda b: b.find_element(By.CSS_SELECTOR, seq).text == "5")

            await in_browser(see_the_last_seq)
            logs: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
            assert [entry for entry in logs if entry["level"] == "SEVERE"] == []
        nursery.cancel_scope.cancel()
