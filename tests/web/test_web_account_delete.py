"""Deleting the account from the browser (Devices → Delete account…): only once its name is
typed, signed with the account key (``DELETE /v1/accounts/me``); the relay then has no such
account (contacts are told it was deleted) and the browser forgets everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.web.support import RelayProc, Vox, open_app, register_in_browser, unique, wait_message

#: Records in the browser's store (its IndexedDB database, opened as the app opens it).
RECORDS_KEPT = """async () => {
  const db = await new Promise((ok, fail) => {
    const r = indexedDB.open('vox-web', 1);
    r.onupgradeneeded = () => {
      r.result.createObjectStore('meta');
      r.result.createObjectStore('kv');
    };
    r.onsuccess = () => ok(r.result);
    r.onerror = () => fail(r.error);
  });
  const count = (name) => new Promise((ok) => {
    const r = db.transaction(name).objectStore(name).count();
    r.onsuccess = () => ok(r.result);
  });
  const n = (await count('meta')) + (await count('kv'));
  db.close();
  return n;
}"""


def test_an_account_deleted_from_the_browser_is_gone_on_the_relay_and_in_the_browser(
    context: Any, relay: RelayProc, tmp_path: Path
) -> None:
    alice, bob = unique("alice"), unique("bob")
    vbob = Vox(tmp_path / "bob", relay, bob).register()
    page = open_app(context, relay)
    register_in_browser(page, alice)
    vbob.send(alice, "before")
    page.get_by_test_id(f"chat-item-{bob}").click()
    wait_message(page, bob, "before")
    assert page.evaluate(RECORDS_KEPT) > 0

    page.get_by_test_id("devices-open").click()
    page.get_by_test_id("account-delete-open").click()
    submit = page.get_by_test_id("account-delete-submit")
    assert submit.is_disabled()
    page.get_by_test_id("account-delete-confirm").fill(bob)  # not the account's name
    assert submit.is_disabled()
    page.get_by_test_id("account-delete-confirm").fill(alice)
    submit.click()

    # The browser is back at the start, with nothing of the account kept (also after a reload).
    page.get_by_test_id("register-username").wait_for()
    page.reload()
    page.get_by_test_id("register-username").wait_for()
    assert page.evaluate(RECORDS_KEPT) == 0

    # The relay deleted it: a contact's send is refused as to a deleted account.
    refused = vbob.run("send", alice, "after", check=False)
    assert refused.returncode != 0
    assert "deleted" in (refused.stdout + refused.stderr), refused
