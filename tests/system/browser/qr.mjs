// Reads a QR code as a phone's camera would, for tests/system/test_second_factors.py: renders the
// SVG (JSON {"svg", "backgrounds"} on stdin) in headless Chromium as an <img> with a data: URI,
// draws it to a canvas over each page background colour (as served, scaled up, and tilted,
// blurred and dimmed like a photo of a screen) and decodes each picture with jsQR in the page.
// Prints JSON: {renderings: {background: [{name, width, height, text}]}, requests, consoleErrors}.
// The page is set from a string and loads nothing: any request it tries is refused and reported.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const { svg, backgrounds } = JSON.parse(readFileSync(0, "utf8"));
const jsQR = readFileSync(createRequire(import.meta.url).resolve("jsqr/dist/jsQR.js"), "utf8");

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
  page.on("request", (request) => requests.push(request.url()));
  await page.route("**/*", (route) => route.abort());
  const source = `data:image/svg+xml;base64,${Buffer.from(svg).toString("base64")}`;
  await page.setContent(`<!doctype html><html><body><img id="qr" alt="" src="${source}"></body></html>`);
  await page.addScriptTag({ content: jsQR });
  const renderings = await page.evaluate(async (backgrounds) => {
    const img = document.getElementById("qr");
    await img.decode();
    const read = (background, name, scale, draw) => {
      const canvas = document.createElement("canvas");
      canvas.width = Math.round(img.naturalWidth * scale);
      canvas.height = Math.round(img.naturalHeight * scale);
      const context = canvas.getContext("2d");
      context.fillStyle = background; // the page, seen through the image's transparent parts
      context.fillRect(0, 0, canvas.width, canvas.height);
      draw(context, canvas);
      const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
      const found = window.jsQR(pixels.data, canvas.width, canvas.height);
      return { name, width: canvas.width, height: canvas.height, text: found ? found.data : null };
    };
    const whole = (c, canvas) => c.drawImage(img, 0, 0, canvas.width, canvas.height);
    const photo = (c, canvas) => {
      c.filter = "blur(1px) brightness(0.9)";
      c.translate(canvas.width / 2, canvas.height / 2);
      c.rotate((12 * Math.PI) / 180);
      const side = Math.min(canvas.width, canvas.height) * 0.75;
      c.drawImage(img, -side / 2, -side / 2, side, side);
    };
    const found = {};
    for (const background of backgrounds) {
      document.body.style.background = background;
      found[background] = [
        read(background, "as served", 1, whole),
        read(background, "scaled up 3x", 3, whole),
        read(background, "tilted, blurred, dimmed", 2.5, photo),
      ];
    }
    return found;
  }, backgrounds);
  console.log(JSON.stringify({ renderings, requests, consoleErrors }));
} finally {
  await browser.close();
}
