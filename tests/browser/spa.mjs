// The example SPA (examples/web) in Debian's chromium: log in, send a
// notification, and see its status reach SENT on screen through the
// subscription; then again with the websocket blocked, through polling.
// Usage: node spa.mjs http://127.0.0.1:4173 [screenshot-prefix]
import { checker, launch } from './lib.mjs';

const base = process.argv[2] ?? 'http://127.0.0.1:4173';
const shots = process.argv[3] ?? 'spa';
const { check, summary } = checker();

const browser = await launch();

async function scenario(name, blockWebsocket) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  if (blockWebsocket) {
    // Every websocket to /graphql/ws is refused at once.
    await page.routeWebSocket(/\/graphql\/ws/, (ws) => ws.close({ code: 1006, reason: 'blocked by the test' }));
  }
  // Whether `selector` matches within the time (a check, not a throw).
  const shows = (selector) => page.waitForSelector(selector, { timeout: 20000 }).then(() => true, () => false);
  await page.goto(base);
  const email = `spa-${name}-${Date.now()}@example.com`;
  await page.fill('#email', email);
  await page.fill('#password', 'correct horse battery');
  await page.click('#login');
  const signedIn = await shows('#app:not([hidden])') && await page.textContent('#who') === email;
  check(signedIn, `${name}: signed in as ${email}`);

  const mode = blockWebsocket ? 'polling' : 'websocket';
  check(await shows(`#mode[data-mode="${mode}"]`), `${name}: live updates by ${mode}`);

  await page.fill('#title', `Hello via ${mode}`);
  await page.fill('#content', 'from the browser test');
  await page.click('#send button');
  await page.waitForSelector('#rows td[data-status="SENT"]', { timeout: 30000 });
  const row = await page.textContent('#rows tr');
  check(row.includes(`Hello via ${mode}`) && row.includes('SENT'), `${name}: the status reaches SENT on screen`);
  check(await page.getAttribute('#mode', 'data-mode') === mode, `${name}: still on ${mode}`);
  await page.screenshot({ path: `${shots}-${name}.png` });
  await context.close();
}

try {
  await scenario('subscription', false);
  await scenario('polling', true);
} finally {
  await browser.close();
}
summary('spa');
