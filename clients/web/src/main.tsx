// The app: brand from /v1/config, one tab holds the device (Web Locks), then either the
// welcome screen (register / link) or the chat screen. UI only: the engine decides.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { Api, RelayError, type RelayConfig } from "./core/api";
import { Engine } from "./core/engine";
import { LockedError, Store } from "./core/store";
import { applyBrand } from "./ui/brand";
import { ChatScreen } from "./ui/chat";
import { Welcome } from "./ui/welcome";

type Phase =
  | { kind: "loading" }
  | { kind: "other-tab" }
  | { kind: "locked"; error?: string }
  | { kind: "welcome"; engine: Engine | null }
  | { kind: "main"; engine: Engine }
  | { kind: "error"; message: string };

function App() {
  const [config, setConfig] = useState<RelayConfig | null>(null);
  const [phase, setPhase] = useState<Phase>({ kind: "loading" });

  async function openStore(passphrase?: string): Promise<void> {
    // Nothing is created before the user registers or links (with their passphrase choice).
    const mode = await Store.mode();
    if (mode === "none") {
      setPhase({ kind: "welcome", engine: null });
      return;
    }
    if (mode === "passphrase" && passphrase === undefined) {
      setPhase({ kind: "locked" });
      return;
    }
    let store: Store;
    try {
      store = await Store.open(passphrase);
    } catch (e) {
      if (e instanceof LockedError) {
        setPhase({ kind: "locked", error: passphrase ? e.message : undefined });
        return;
      }
      throw e;
    }
    const engine = new Engine(store);
    if (await engine.load()) {
      engine.start();
      setPhase({ kind: "main", engine });
    } else {
      store.close();
      setPhase({ kind: "welcome", engine: null });
    }
  }

  useEffect(() => {
    void (async () => {
      try {
        const cfg = await new Api().config();
        setConfig(cfg);
        applyBrand(cfg.brand);
        // The offline app shell (src/sw.ts); no permission is involved (notifications are
        // asked for only after a user action).
        if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => undefined);
      } catch (e) {
        setPhase({ kind: "error", message: `The relay is not reachable (${(e as Error).message}). Reload to retry.` });
        return;
      }
      if (!("locks" in navigator)) {
        await openStore();
        return;
      }
      // One tab holds the device; the lock is held for the page's life.
      void navigator.locks.request("vox-device", { ifAvailable: true }, async (lock) => {
        if (!lock) {
          setPhase({ kind: "other-tab" });
          return;
        }
        try {
          await openStore();
        } catch (e) {
          setPhase({ kind: "error", message: (e as Error).message });
        }
        await new Promise(() => undefined);
      });
    })();
  }, []);

  if (phase.kind === "loading" || !config) {
    return phase.kind === "error" ? <Center testid="fatal-error">{phase.message}</Center> : <Center testid="loading">Loading…</Center>;
  }
  switch (phase.kind) {
    case "other-tab":
      return (
        <Center testid="other-tab">
          {config.brand.name} is open in another tab. Close it (or use that tab) and reload this one.
        </Center>
      );
    case "locked":
      return <Unlock error={phase.error} onUnlock={(p) => void openStore(p)} />;
    case "welcome":
      return (
        <Welcome
          config={config}
          onDone={async (run, passphrase) => {
            const store = await Store.open(passphrase || undefined);
            const engine = new Engine(store);
            try {
              await run(engine);
            } catch (e) {
              store.close();
              if (!engine.identity) await Store.wipe();
              throw e;
            }
            engine.start();
            setPhase({ kind: "main", engine });
          }}
        />
      );
    case "main":
      return (
        <ChatScreen
          config={config}
          engine={phase.engine}
          onLogout={async () => {
            await phase.engine.logout();
            phase.engine.store.close();
            await Store.wipe();
            setPhase({ kind: "welcome", engine: null });
          }}
          onAccountDeleted={async () => {
            // The relay deleted the account (and its tokens): nothing is left to log out of.
            phase.engine.store.close();
            await Store.wipe();
            setPhase({ kind: "welcome", engine: null });
          }}
        />
      );
    case "error":
      return <Center testid="fatal-error">{phase.message}</Center>;
  }
}

function Center(props: { testid: string; children: preact.ComponentChildren }) {
  return (
    <div class="center" data-testid={props.testid}>
      <p>{props.children}</p>
    </div>
  );
}

function Unlock(props: { error?: string; onUnlock: (p: string) => void }) {
  const [value, setValue] = useState("");
  return (
    <form
      class="center card"
      onSubmit={(e) => {
        e.preventDefault();
        props.onUnlock(value);
      }}
    >
      <h2>Unlock</h2>
      <input type="password" data-testid="unlock-passphrase" placeholder="Passphrase" value={value} onInput={(e) => setValue(e.currentTarget.value)} />
      <button type="submit" data-testid="unlock-submit">
        Unlock
      </button>
      {props.error && <p class="error">{props.error}</p>}
    </form>
  );
}

export { RelayError };
const root = document.getElementById("app");
if (root) render(<App />, root);
