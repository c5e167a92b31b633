// Build the bundle into dist/ (deterministic: the same lockfile and sources give the same
// bytes, which CI checks against the committed dist/). Usage: node build.mjs [OUT_DIR]
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { resolve } from "node:path";

process.chdir(new URL(".", import.meta.url).pathname);
const out = resolve(process.argv[2] ?? "dist") + "/";
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const common = {
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  legalComments: "eof",
  logLevel: "warning",
  charset: "utf8",
};
await build({ ...common, entryPoints: ["src/main.tsx"], outfile: `${out}app.js` });
for (const name of readdirSync("static")) copyFileSync(`static/${name}`, `${out}${name}`);
// The service worker's offline cache is named after the shell it holds (src/sw.ts): a new
// bundle is a new sw.js, so browsers install it and drop the old cache.
const shell = createHash("sha256");
for (const name of ["index.html", "app.js", "app.css", "icon.svg"]) shell.update(readFileSync(`${out}${name}`));
const version = shell.digest("hex").slice(0, 16);
// The push notification's icon, inlined: a push must not make the worker fetch anything.
const icon = `data:image/svg+xml;base64,${readFileSync("static/icon.svg").toString("base64")}`;
await build({ ...common, entryPoints: ["src/sw.ts"], outfile: `${out}sw.js`, define: { __SHELL_VERSION__: JSON.stringify(version), __ICON__: JSON.stringify(icon) } });
// The test kit (protocol core for tests/web/test_vectors.py) is built beside dist/, never
// served by the relay nor shipped in the Python package.
await build({ ...common, entryPoints: ["src/testkit.ts"], outfile: `${out}../testkit/testkit.js` });
