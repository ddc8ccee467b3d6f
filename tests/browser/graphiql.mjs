// Opens Herald's GraphiQL in Debian's chromium, checks that no request
// leaves the server, registers through the IDE, subscribes to live status
// changes there, sends a notification and waits for SENT on screen.
// Usage: node graphiql.mjs http://127.0.0.1:8000 [screenshot.png]
import { checker, launch } from './lib.mjs';

const base = process.argv[2] ?? 'http://127.0.0.1:8000';
const screenshot = process.argv[3] ?? 'graphiql.png';
const origin = new URL(base);
const { check, summary } = checker();

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const foreign = [];
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (url.host !== origin.host && url.protocol !== 'data:') foreign.push(req.url());
  });
  page.on('websocket', (ws) => {
    if (new URL(ws.url()).host !== origin.host) foreign.push(ws.url());
  });

  // The schema is fetched (introspection over HTTP) right after rendering.
  const schemaLoaded = page.waitForResponse(
    (r) => r.url().endsWith('/graphql') && r.request().method() === 'POST', { timeout: 20000 });
  await page.goto(`${base}/graphql`);
  await page.waitForSelector('.graphiql-container', { timeout: 20000 });
  const introspection = await (await schemaLoaded).json();
  await page.waitForTimeout(500);
  const schemaOk = Array.isArray(introspection?.data?.__schema?.types);
  check(schemaOk, schemaOk ? 'GraphiQL renders and loads the schema'
    : `GraphiQL's introspection failed: ${JSON.stringify(introspection).slice(0, 300)}`);

  // Set the query editor and headers through CodeMirror.
  // GraphiQL picks up editor changes after a short debounce.
  const setEditor = async (selector, text) => {
    await page.evaluate(([sel, value]) => {
      document.querySelector(sel).CodeMirror.setValue(value);
    }, [selector, text]);
    await page.waitForTimeout(600);
  };
  // Ctrl+Enter in the query editor runs the operation (as a user would).
  const run = async () => {
    await page.click('.graphiql-query-editor .CodeMirror');
    await page.keyboard.press('Control+Enter');
  };
  const resultText = async () => page.evaluate(() =>
    document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue());
  const waitForResult = async (predicate, what) => {
    const deadline = Date.now() + 20000;
    for (;;) {
      const text = await resultText();
      if (predicate(text)) return text;
      if (Date.now() > deadline) throw new Error(`${what}; result pane: ${text}`);
      await page.waitForTimeout(100);
    }
  };

  const email = `graphiql-${Date.now()}@example.com`;
  await setEditor('.graphiql-query-editor .CodeMirror',
    `mutation { register(email: "${email}", password: "correct horse battery") { token } }`);
  await run();
  const registered = JSON.parse(await waitForResult((t) => t.includes('"token"'), 'register answers'));
  const token = registered.data.register.token;
  check(typeof token === 'string', 'register runs from GraphiQL over HTTP');

  await page.click('button:has-text("Headers")');
  await setEditor('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror', JSON.stringify({ Authorization: `Bearer ${token}` }));
  await setEditor('.graphiql-query-editor .CodeMirror',
    'subscription { notificationStatusChanged { previousStatus status notification { title } } }');
  await run();
  await page.waitForTimeout(1000);

  const sent = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: 'mutation { sendNotification(input: {title: "From the browser test", content: "hi"}) { id } }' }),
  }).then((r) => r.json());
  check(Boolean(sent.data?.sendNotification?.id), 'sendNotification over HTTP');
  await waitForResult((t) => t.includes('"SENT"'), 'the subscription shows SENT');
  check(true, 'the subscription in GraphiQL shows the status reach SENT');

  await page.screenshot({ path: screenshot });
  check(foreign.length === 0, `no request left ${origin.host} (${foreign.join(', ') || 'none'})`);
} finally {
  await browser.close();
}
summary('graphiql');
