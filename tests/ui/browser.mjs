// cairn ui in a real browser (Debian's chromium through playwright-core), for tests/ui.rs:
//   node tests/ui/browser.mjs URL
// with CAIRN_BIN (the cairn binary, whose CAIRN_HOME is the page's) and ARTIFACTS (where the
// screenshots go). Prints one JSON line per step; exits 1 at the first step that fails.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { join } from "node:path";

const url = process.argv[2];
const cairn = process.env.CAIRN_BIN;
const artifacts = process.env.ARTIFACTS;
const say = (step, extra = {}) => console.log(JSON.stringify({ step, ...extra }));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  await page.goto(url);
  await page.waitForSelector("#row-memory input");
  // The token went into a cookie and out of the address bar.
  if (page.url().includes("token=")) throw new Error(`the token stayed in the URL: ${page.url()}`);
  say("loaded", { head: await page.textContent("#head") });

  // A refused value: the schema's message beside the field, and Save stays off.
  await page.fill("#in-memory", "100");
  await page.selectOption("#in-memory-unit", "M");
  await page.waitForFunction(() => document.querySelector("#err-memory").textContent.includes("allowed"));
  const refused = await page.textContent("#err-memory");
  if (!(await page.isDisabled("#save"))) throw new Error("Save is on with a refused value");
  say("refused", { message: refused });

  // A valid one: the plan in `cairn plan`'s words, then one commit with the message.
  await page.fill("#in-memory", "3");
  await page.selectOption("#in-memory-unit", "G");
  await page.fill("#in-hostname", "from-the-page");
  await page.waitForFunction(() => document.querySelector("#plan").textContent.startsWith("reboot:"));
  const plan = await page.textContent("#plan");
  await page.fill("#message", "bigger, from the browser");
  await page.click("#save");
  await page.waitForFunction(() => document.querySelector("#save-result").textContent.startsWith("Saved"));
  say("saved", { plan, result: await page.textContent("#save-result") });

  // A change made with the CLI shows without a reload.
  const before = Date.now();
  execFileSync(cairn, ["set", "hostname", "from-the-cli"], { stdio: "ignore" });
  await page.waitForFunction(() => document.querySelector("#in-hostname").value === "from-the-cli", null, { timeout: 10000 });
  say("live", { ms: Date.now() - before });
  await page.screenshot({ path: join(artifacts, "ui-settings.png"), fullPage: false });

  // The history: newest first, then a rollback to the commit before the page's save.
  await page.click("#tab-history");
  await page.waitForSelector(".commit");
  const messages = await page.$$eval(".commit .message", (all) => all.map((m) => m.textContent));
  say("history", { messages });
  await page.screenshot({ path: join(artifacts, "ui-history.png"), fullPage: false });
  const target = await page.$$eval(".commit", (all) => all[2].id.replace("commit-", ""));
  await page.click(`#commit-${target} button:has-text("Roll back")`);
  await page.waitForSelector("#confirm[open]");
  const confirmPlan = await page.textContent("#confirm-plan");
  await page.click("#confirm-ok");
  await page.waitForFunction(
    () => document.querySelector(".commit .message")?.textContent.startsWith("rollback to"),
    null, { timeout: 10000 },
  );
  say("rolled back", { target, plan: confirmPlan, head: await page.textContent("#head") });
  // Keyboard: the tabs answer the arrow keys.
  await page.focus("#tab-history");
  await page.keyboard.press("ArrowLeft");
  if ((await page.getAttribute("#tab-settings", "aria-selected")) !== "true") throw new Error("arrow keys do not move between the tabs");
  if (failures.length) throw new Error(failures.join("; "));
  say("done");
} catch (e) {
  say("failed", { error: String(e.message || e) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
