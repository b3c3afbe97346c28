// Opens one of usergraph's email-link pages in headless Chromium, completes its form and
// prints what happened as JSON: node pages.mjs <url-with-#token> [new password]
import { chromium } from "playwright-core";

const [url, password] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage();
  const consoleErrors = [];
  const requests = [];
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  page.on("request", (request) => requests.push({
    url: request.url(), method: request.method(), referer: request.headers()["referer"] || null,
    body: request.postData() || null,
  }));
  const response = await page.goto(url);
  const csp = response.headers()["content-security-policy"] || null;
  const addressAfterLoad = page.url();
  if (password !== undefined) {
    await page.fill('input[name="newPassword"]', password);
    await page.fill('input[name="repeat"]', password);
  }
  await page.click("button");
  await page.waitForFunction(() => document.getElementById("result").textContent.length > 0);
  const result = await page.textContent("#result");
  const resultClass = await page.getAttribute("#result", "class");
  console.log(JSON.stringify({ csp, addressAfterLoad, result, resultClass, requests, consoleErrors }));
} finally {
  await browser.close();
}
