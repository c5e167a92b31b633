// Register a new account, or link this browser to an existing one with a `vox link` code.
import { useState } from "preact/hooks";
import { RelayError, type RelayConfig } from "../core/api";
import type { Engine } from "../core/engine";
import { USERNAME } from "../core/keys";
import { LinkError } from "../core/link";
import { logoUrl } from "./brand";

type Run = (engine: Engine) => Promise<void>;

export function Welcome(props: { config: RelayConfig; onDone: (run: Run, passphrase: string) => Promise<void> }) {
  const { brand, registration } = props.config;
  const [mode, setMode] = useState<"register" | "link">(registration === "closed" ? "link" : "register");
  const [username, setUsername] = useState("");
  const [invite, setInvite] = useState("");
  const [passphrase, setPassphrase] = useState("");
  const [code, setCode] = useState("");
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const logo = logoUrl(brand);

  async function go(run: Run, what: string): Promise<void> {
    setBusy(what);
    setError(null);
    try {
      await props.onDone(run, passphrase);
    } catch (e) {
      if (e instanceof RelayError) setError(`${e.message} (${e.code})`);
      else if (e instanceof LinkError) setError(e.message);
      else setError((e as Error).message || String(e));
      setBusy(null);
    }
  }

  return (
    <div class="welcome">
      <div class="card">
        <header class="brand-head">
          {logo && <img class="logo" src={logo} alt="" referrerpolicy="no-referrer" />}
          <h1 data-testid="brand-name">{brand.name}</h1>
        </header>
        <p class="welcome-text" data-testid="welcome-text">
          {brand.welcome_text}
        </p>
        <div class="tabs">
          {registration !== "closed" && (
            <button type="button" class={mode === "register" ? "tab on" : "tab"} data-testid="mode-register" onClick={() => setMode("register")}>
              Create an account
            </button>
          )}
          <button type="button" class={mode === "link" ? "tab on" : "tab"} data-testid="mode-link" onClick={() => setMode("link")}>
            Link to an existing account
          </button>
        </div>
        {mode === "register" ? (
          <form
            onSubmit={(e) => {
              e.preventDefault();
              if (!USERNAME.test(username)) {
                setError("A username is 3 to 32 characters: a-z, 0-9, '.', '_' or '-'.");
                return;
              }
              void go((engine) => engine.register(username, registration === "invite" ? invite : null), "Creating your keys…");
            }}
          >
            <label>
              Username
              <input data-testid="register-username" autocomplete="username" value={username} onInput={(e) => setUsername(e.currentTarget.value.trim().toLowerCase())} />
            </label>
            {registration === "invite" && (
              <label>
                Invite
                <input data-testid="register-invite" value={invite} onInput={(e) => setInvite(e.currentTarget.value.trim())} />
              </label>
            )}
            <Passphrase value={passphrase} onChange={setPassphrase} />
            <button type="submit" class="primary" data-testid="register-submit" disabled={!!busy}>
              Create account
            </button>
          </form>
        ) : (
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void go((engine) => engine.join(code), "Waiting for the offer from your other device…");
            }}
          >
            <ol class="steps">
              <li>
                On a device already signed in, run <code>vox link</code> (or open Devices → Link a new device).
              </li>
              <li>Type the code it shows here (USERNAME:DEVICE:XXXX-XXXX-XXXX-XXXX), while it waits.</li>
            </ol>
            <label>
              Link code
              <input data-testid="link-code" placeholder="alice:123456:ABCD-EFGH-IJKL-MNOP" value={code} onInput={(e) => setCode(e.currentTarget.value)} />
            </label>
            <Passphrase value={passphrase} onChange={setPassphrase} />
            <button type="submit" class="primary" data-testid="link-submit" disabled={!!busy}>
              Link this browser
            </button>
          </form>
        )}
        {busy && <p data-testid="busy">{busy}</p>}
        {error && (
          <p class="error" data-testid={mode === "link" ? "link-error" : "register-error"}>
            {error}
          </p>
        )}
      </div>
    </div>
  );
}

function Passphrase(props: { value: string; onChange: (v: string) => void }) {
  return (
    <label>
      Passphrase for this browser (optional)
      <input type="password" data-testid="store-passphrase" autocomplete="new-password" value={props.value} onInput={(e) => props.onChange(e.currentTarget.value)} />
      <small>Without one, your keys are sealed with a key this browser keeps and never exports.</small>
    </label>
  );
}
