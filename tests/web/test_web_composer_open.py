"""What is typed the moment a conversation opens stays in the composer.

The conversation view used to empty its composer in an effect run after the first paint (a
``useEffect`` on the conversation's name): text typed between the render and that frame — a
fast typist, or a test that fills the composer as soon as it appears on a loaded machine — was
wiped, and the Send that followed sent nothing (CI saw a group message never appear). Here the
text goes in from a ``MutationObserver`` callback, the first moment the composer exists: always
before an after-paint effect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.web.support import (
    RelayProc,
    Vox,
    open_app,
    open_chat,
    register_in_browser,
    send_in_browser,
    unique,
)

TYPE_WHEN_THE_COMPOSER_APPEARS = """(text) => {
  const observer = new MutationObserver(() => {
    const box = document.querySelector('[data-testid=composer]');
    if (!box) return;
    observer.disconnect();
    box.value = text;
    box.dispatchEvent(new Event('input', { bubbles: true }));
  });
  observer.observe(document.body, { childList: true, subtree: true });
}"""


def test_text_typed_as_a_conversation_opens_is_kept_and_sent(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    Vox(tmp_path / "bob", relay, bob).register()
    Vox(tmp_path / "carol", relay, carol).register()
    page = open_app(context, relay)
    register_in_browser(page, alice)
    page.evaluate(TYPE_WHEN_THE_COMPOSER_APPEARS, "typed early")
    open_chat(page, bob)
    page.wait_for_timeout(500)  # every after-paint effect has run by now
    assert page.get_by_test_id("composer").input_value() == "typed early"
    send_in_browser(page, "typed early")
    # Another conversation still opens with an empty composer.
    page.get_by_test_id("composer").fill("a draft for bob")
    open_chat(page, carol)
    assert page.get_by_test_id("composer").input_value() == ""
