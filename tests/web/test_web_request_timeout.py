"""A REST call the relay (or a proxy before it) takes and never answers fails as ``Offline``
after ``Api.timeoutMs`` (30 s, the SDK's ``timeout``) instead of holding its caller for good —
a blob's ``DELETE`` held that way kept the blob marked "being deleted" for the page's whole
life, so no later connection tried it again. Chromium's own fetch against a request that
Playwright holds unanswered; the body of an answer that never ends counts too.
"""

from __future__ import annotations

from typing import Any

from tests.web.support import kit_call, kit_page


def test_an_unanswered_rest_call_fails_as_offline_after_its_deadline(browser: Any) -> None:
    with kit_page(browser) as page:
        held: list[str] = []
        page.route("**/v1/attachments/held", lambda route: held.append(route.request.method))
        outcome = kit_call(page, "apiDeadline", "/v1/attachments/held", 500, 10_000)
        assert held == ["DELETE"], held
        assert outcome == "Offline: the relay did not answer within 0.5 s", outcome


def test_an_answered_rest_call_is_not_cut_short(browser: Any) -> None:
    with kit_page(browser) as page:
        page.route("**/v1/attachments/gone", lambda route: route.fulfill(status=204))
        assert kit_call(page, "apiDeadline", "/v1/attachments/gone", 5_000, 10_000) == "answered"
