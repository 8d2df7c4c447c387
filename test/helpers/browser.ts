import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { missing, type Missing } from './needs.js';
import type { Teardown } from './teardown.js';

export const CHROMIUM = '/usr/bin/chromium';

/** Why the browser tests cannot run here, or undefined. */
export const noChromium: Missing | undefined = missing('chromium', () => (existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is not installed (Debian package chromium)`));

/**
 * Debian's Chromium, headless, with the flags this closed network needs
 * (docs/design.md); playwright gives each launch a fresh profile. Closed at teardown.
 */
export async function launchBrowser(t: Teardown): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => browser.close());
  return browser;
}
