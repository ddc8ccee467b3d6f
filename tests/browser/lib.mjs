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
