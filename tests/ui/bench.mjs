// Timings of cairn ui in Debian's chromium, for tests/bench/ui.sh:
//   node tests/ui/bench.mjs URL ROUNDS
// with CAIRN_BIN. Prints one line per measure: name, median, min..max (milliseconds).
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";

const [url, roundsText] = process.argv.slice(2);
const rounds = Number(roundsText || 10);
const cairn = process.env.CAIRN_BIN;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const report = (name, xs) => {
  const s = [...xs].sort((a, b) => a - b);
  console.log(`${name.padEnd(58)} ${median(s).toFixed(1)} ms (${s[0].toFixed(1)}..${s[s.length - 1].toFixed(1)})`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
// The token becomes the context's cookie once.
const first = await context.newPage();
await first.goto(url);
await first.waitForSelector("#row-memory");
await first.close();
const origin = new URL(url).origin;

const settings = [], history = [];
for (let i = 0; i < rounds; i++) {
  const page = await context.newPage();
  let t = performance.now();
  await page.goto(`${origin}/`);
  await page.waitForSelector("#row-schema-version");
  settings.push(performance.now() - t);
  t = performance.now();
  await page.click("#tab-history");
  await page.waitForFunction(() => document.querySelectorAll(".commit").length >= 50);
  history.push(performance.now() - t);
  await page.close();
}
report("settings page: load until every key is shown", settings);
report("history: tab clicked until 50 commits are shown", history);

const page = await context.newPage();
await page.goto(`${origin}/`);
await page.waitForSelector("#in-hostname");
const visible = [], get = [];
for (let i = 0; i < rounds * 2; i++) {
  const name = `bench-${i}`;
  const t = performance.now();
  execFileSync(cairn, ["set", "hostname", name], { stdio: "ignore" });
  await page.waitForFunction((n) => document.querySelector("#in-hostname").value === n, name, { polling: "raf" });
  visible.push(performance.now() - t);
  const g = performance.now();
  execFileSync(cairn, ["get", "hostname"], { stdio: "ignore" });
  get.push(performance.now() - g);
}
report("cairn set -> the new value on the open page (SSE)", visible);
report("cairn get, same run", get);
await browser.close();
