// Drives headless Chromium (Debian's `chromium`) through the sitelog console with
// playwright-core: visits every page given, fails on console errors, page errors, failed
// requests and HTTP errors, extracts the figures the Rust test compares with the ground truth
// and the CLI, writes a PNG screenshot per page, and checks that requests without a (valid)
// login are refused. Prints one JSON object on stdout.
//
// Usage: node console.mjs CONFIG.json
//   { "base": "http://127.0.0.1:PORT", "user": "...", "password": "...",
//     "pages": [{"name": "now", "path": "/"}, ...], "screenshots": "DIR", "profile": "DIR",
//     "playwright": "DIR containing node_modules/playwright-core" }
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const cfg = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const require = createRequire(path.join(cfg.playwright, "package.json"));
const { chromium } = require("playwright-core");

const out = { pages: {}, problems: [], refused: {} };

// Without a login, and with a wrong one: refused (401) before any page is rendered.
for (const [what, headers] of [
  ["none", {}],
  ["wrong", { authorization: "Basic " + Buffer.from(`${cfg.user}:wrong-${cfg.password}`).toString("base64") }],
]) {
  for (const p of ["/", "/usage", "/security"]) {
    const r = await fetch(cfg.base + p, { headers, redirect: "manual" });
    out.refused[`${what} ${p}`] = r.status;
  }
}

const context = await chromium.launchPersistentContext(cfg.profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  httpCredentials: { username: cfg.user, password: cfg.password, send: "always" },
  viewport: { width: 1280, height: 900 },
});
const base = new URL(cfg.base);
const page = context.pages()[0] ?? (await context.newPage());
let current = "";
page.on("console", (m) => {
  if (m.type() === "error") out.problems.push(`${current}: console error: ${m.text()}`);
});
page.on("pageerror", (e) => out.problems.push(`${current}: page error: ${e.message}`));
page.on("requestfailed", (r) => out.problems.push(`${current}: request failed: ${r.url()} ${r.failure()?.errorText}`));
page.on("request", (r) => {
  const u = new URL(r.url());
  if (u.protocol !== "data:" && u.host !== base.host) out.problems.push(`${current}: external request: ${r.url()}`);
});
page.on("response", (r) => {
  if (r.status() >= 400) out.problems.push(`${current}: HTTP ${r.status()} ${r.url()}`);
});

fs.mkdirSync(cfg.screenshots, { recursive: true });
for (const { name, path: p } of cfg.pages) {
  current = p;
  const started = Date.now();
  const resp = await page.goto(cfg.base + p, { waitUntil: "load" });
  const loadMs = Date.now() - started;
  const timing = resp.headers()["server-timing"] ?? "";
  const figures = await page.evaluate(() => {
    const all = (sel) => [...document.querySelectorAll(sel)];
    return {
      title: document.title,
      h1: document.querySelector("h1")?.textContent ?? "",
      role: document.querySelector(".role")?.textContent ?? "",
      incidents: all("[data-incident]").map((e) => e.dataset.incident),
      customers: all("tr[data-customer]").map((e) => ({ ...e.dataset })),
      values: Object.fromEntries(all("[id][data-value]").map((e) => [e.id, e.dataset.value])),
      monthRequests: all("[data-site-id]")
        .filter((e) => e.querySelector(".month-requests"))
        .map((e) => ({ site: e.dataset.siteId, requests: e.querySelector(".month-requests").dataset.value })),
      sources: all("tr[data-source][data-behind]").map((e) => ({ source: e.dataset.source, behind: e.dataset.behind })),
      ipSites: all("tr[data-site]").map((e) => ({ site: e.dataset.site, requests: e.dataset.requests })),
      charts: all("svg.chart").length,
      missing: all(".missing").map((e) => e.textContent),
      errors: all(".error").map((e) => e.textContent),
      overflowX: document.documentElement.scrollWidth > window.innerWidth + 1,
    };
  });
  await page.screenshot({ path: path.join(cfg.screenshots, `${name}.png`), fullPage: true });
  out.pages[name] = { path: p, status: resp.status(), serverTiming: timing, loadMs, ...figures };
}

// The Now page on a phone-sized screen: readable without sideways scrolling of the page.
await page.setViewportSize({ width: 390, height: 844 });
current = "/ (phone)";
await page.goto(cfg.base + "/", { waitUntil: "load" });
out.phoneOverflowX = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
await page.screenshot({ path: path.join(cfg.screenshots, "now-phone.png"), fullPage: true });

await context.close();
process.stdout.write(JSON.stringify(out) + "\n");
