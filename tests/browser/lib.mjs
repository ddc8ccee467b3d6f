// Shared by the browser checks: Debian's chromium through playwright-core,
// with the flags this machine needs, and a tiny pass/fail counter.
import { chromium } from 'playwright-core';

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// Another client of the server: `api(token, query, variables)` POSTs to
// `${base}/graphql` and returns `data`, throwing on any error.
export function apiClient(base) {
  return async function api(token, query, variables = {}) {
    const response = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    const body = await response.json();
    if (body.errors) throw new Error(`${query.slice(0, 60)}: ${JSON.stringify(body.errors)}`);
    return body.data;
  };
}

// `check(ok, what)` throws on a failure; `summary(name)` prints the closing line.
export function checker() {
  let passed = 0;
  return {
    check(ok, what) {
      if (!ok) throw new Error(`failed: ${what}`);
      passed += 1;
      console.log(`ok   ${what}`);
    },
    summary(name) {
      console.log(`${name}: ${passed} passed, 0 failed`);
    },
  };
}
