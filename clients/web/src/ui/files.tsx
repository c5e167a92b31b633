// A file in a message: decrypted on demand (images inline), downloaded as a Blob URL.
import { useEffect, useState } from "preact/hooks";
import type { Engine, Message } from "../core/engine";

export function FileView(props: { m: Message; engine: Engine }) {
  const file = props.m.file as NonNullable<Message["file"]>;
  const image = /^image\/(png|jpeg|gif|webp)$/.test(file.type);
  const [url, setUrl] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = async (): Promise<string | null> => {
    try {
      const blob = await props.engine.openFile(file.pointer);
      const u = URL.createObjectURL(blob);
      setUrl(u);
      return u;
    } catch (e) {
      setError(`could not open the file (${(e as Error).name})`);
      return null;
    }
  };
  useEffect(() => {
    if (image) void load();
  }, [props.m.id]);
  useEffect(() => () => void (url && URL.revokeObjectURL(url)), [url]);
  return (
    <div class="file" data-testid="attachment" data-name={file.name} data-size={file.size}>
      {image && url && <img data-testid="attachment-image" src={url} alt={file.name} />}
      <button
        type="button"
        data-testid="attachment-download"
        onClick={async () => {
          const u = url ?? (await load());
          if (!u) return;
          const a = document.createElement("a");
          a.href = u;
          a.download = file.name;
          a.click();
        }}
      >
        ⬇ {file.name} ({formatSize(file.size)})
      </button>
      {error && <small class="error">{error}</small>}
    </div>
  );
}

export function formatSize(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
