// Opens usergraph's GraphiQL page in headless Chromium with every other host blocked, types a
// query, runs it and prints what happened as JSON: node graphiql.mjs <graphql-url> <query>
import { chromium } from "playwright-core";

const [url, query] = process.argv.slice(2);
const origin = new URL(url).origin;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  const requests = [];
  const elsewhere = [];
  page.on("console", (message) => { if (message.type() === "error") errors.push(message.text()); });
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.route("**/*", (route) => {
    const requested = route.request().url();
    requests.push(requested);
    if (new URL(requested).origin === origin || requested.startsWith("data:")) return route.continue();
    elsewhere.push(requested);
    return route.abort();
  });
  const response = await page.goto(url, { waitUntil: "load" });
  const csp = response.headers()["content-security-policy"] || null;
  await page.waitForSelector(".graphiql-query-editor .CodeMirror", { timeout: 30000 });
  // Type the query as a person would: select what the editor holds, then type over it.
  await page.click(".graphiql-query-editor .CodeMirror");
  await page.keyboard.press("Control+A");
  await page.keyboard.type(query);
  await page.click(".graphiql-execute-button");
  await page.waitForFunction(
    () => (document.querySelector(".graphiql-response .CodeMirror")?.CodeMirror?.getValue() || "").includes("data"),
    null, { timeout: 30000 },
  );
  const result = await page.evaluate(
    () => document.querySelector(".graphiql-response .CodeMirror").CodeMirror.getValue(),
  );
  console.log(JSON.stringify({ status: response.status(), csp, result, requests, elsewhere, errors }));
} finally {
  await browser.close();
}
