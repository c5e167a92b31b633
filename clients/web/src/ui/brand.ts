// Branding from /v1/config at run time: no rebuild for a whitelabel deployment.
import type { Brand } from "../core/api";

function luminance(hex: string): number {
  const v = parseInt(hex.slice(1), 16);
  const c = [(v >> 16) & 255, (v >> 8) & 255, v & 255].map((x) => {
    const s = x / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  }) as [number, number, number];
  return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
}

export function applyBrand(brand: Brand): void {
  const root = document.documentElement;
  const valid = (c: string, d: string): string => (/^#[0-9a-fA-F]{6}$/.test(c) ? c : d);
  const bg = valid(brand.background_color, "#0f172a");
  const dark = luminance(bg) < 0.35;
  root.style.setProperty("--primary", valid(brand.primary_color, "#4f46e5"));
  root.style.setProperty("--accent", valid(brand.accent_color, "#22c55e"));
  root.style.setProperty("--bg", bg);
  root.dataset["theme"] = dark ? "dark" : "light";
  document.title = brand.name;
  const meta = document.querySelector('meta[name="theme-color"]');
  if (meta) meta.setAttribute("content", valid(brand.primary_color, "#4f46e5"));
}

/** The logo is the only outside resource, and only over https (or the relay itself). */
export function logoUrl(brand: Brand): string | null {
  const url = brand.logo_url;
  if (!url) return null;
  try {
    const u = new URL(url, location.href);
    if (u.protocol === "https:" || u.origin === location.origin || u.hostname === "localhost" || u.hostname === "127.0.0.1") return u.href;
  } catch {
    return null;
  }
  return null;
}
