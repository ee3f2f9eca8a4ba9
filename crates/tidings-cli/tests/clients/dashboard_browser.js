// The web dashboard in a real browser: Debian's Chromium driven by
// Playwright (playwright-core, no browser download), each page checked by
// axe-core for accessibility (WCAG 2.2 A and AA rules). Driven by
// crates/tidings-cli/tests/serve/browser.rs against a seeded server.
//
//   node dashboard_browser.js <base url> <read-only server's base url> [screenshot dir]
//
// Prints one JSON line: what each check saw. Fails (exit 1, the reason on
// stderr) only when the browser cannot be driven at all; what the checks
// found is for the Rust test to judge.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const [base, readOnly, shots] = process.argv.slice(2);
const AXE = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const CHROMIUM = process.env.TIDINGS_CHROMIUM || '/usr/bin/chromium';

// The pages each get a screenshot and an accessibility scan.
const PAGES = [
  ['overview', '/ui'],
  ['topics', '/ui/topics'],
  ['topic', '/ui/topics/orders'],
  ['events', '/ui/topics/orders/events?from=earliest&limit=20'],
  ['event', '/ui/topics/orders/events/0/0'],
  ['groups', '/ui/groups'],
  ['group', '/ui/groups/billing'],
  ['queues', '/ui/queues'],
  ['queue', '/ui/queues/shipping'],
  ['dead-letter', '/ui/queues/shipping/dead-letters/0'],
  ['help', '/ui/help'],
  ['store', '/ui/store'],
  ['stream', '/ui/streams/order-7'],
  ['catalog', '/ui/catalog'],
  ['journey', '/ui/journey?id=order-1'],
  ['audit', '/ui/audit'],
];

async function axe(page) {
  // Evaluated through the DevTools protocol, which the page's
  // Content-Security-Policy (scripts from the server only) does not stop;
  // a script tag would be refused, as the policy means it to be.
  await page.evaluate(AXE);
  return page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'] },
    });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')),
    }));
  });
}

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox'],
  });
  const out = { pages: {}, errors: [] };
  try {
    for (const scheme of ['light', 'dark']) {
      const context = await browser.newContext({ colorScheme: scheme, viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      page.on('pageerror', (e) => out.errors.push(`${scheme} ${page.url()}: ${e.message}`));
      page.on('console', (m) => { if (m.type() === 'error') out.errors.push(`${scheme} ${page.url()}: console: ${m.text()}`); });
      page.on('requestfailed', (r) => out.errors.push(`${scheme} request failed: ${r.url()}`));
      for (const [name, url] of PAGES) {
        const answer = await page.goto(base + url, { waitUntil: 'load' });
        const seen = {
          status: answer.status(),
          title: await page.title(),
          h1: (await page.textContent('h1')) || '',
          background: await page.evaluate(() => getComputedStyle(document.body).backgroundColor),
        };
        if (scheme === 'light') seen.violations = await axe(page);
        else seen.violations_dark = await axe(page);
        out.pages[`${scheme}:${name}`] = seen;
        if (shots) {
          await page.screenshot({ path: path.join(shots, `${name}-${scheme}.png`), fullPage: false });
        }
      }
      await context.close();
    }

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();

    // A filter set in the form is the address; the address gives the form back.
    await page.goto(base + '/ui/topics/orders/events?from=earliest');
    await page.fill('#f-type', 'order.cancelled');
    await page.fill('#f-q', 'customer-3');
    await Promise.all([page.waitForNavigation(), page.click('form.filters button[type=submit]')]);
    const filtered = new URL(page.url());
    out.filter = {
      type: filtered.searchParams.get('type'),
      q: filtered.searchParams.get('q'),
      rows: await page.locator('#events tbody tr').count(),
      types: await page.locator('#events tbody tr td:nth-child(3)').allTextContents(),
    };
    await page.reload();
    out.filter.kept_after_reload = await page.inputValue('#f-type');
    await page.goBack();
    out.filter.back_to = new URL(page.url()).search;

    // The live tail: an event published now appears without a reload.
    await page.goto(base + '/ui/topics/orders/events');
    await page.click('[data-tail]');
    await page.waitForFunction(() => document.querySelector('[data-tail]').getAttribute('aria-pressed') === 'true');
    await page.waitForTimeout(500);
    const published = await page.evaluate(async (url) => {
      const r = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json' },
        body: JSON.stringify({ specversion: '1.0', id: 'tail-1', source: '/browser', type: 'order.placed', data: { live: true } }),
      });
      return r.status;
    }, base + '/v1/topics/orders/events');
    let tailed = false;
    try {
      await page.waitForSelector('#events tbody tr:first-child td.id:text("tail-1")', { timeout: 15000 });
      tailed = true;
    } catch (e) {
      tailed = false;
    }
    out.tail = { published, tailed, state: await page.textContent('[data-tail-state]') };
    // Pausing closes the stream.
    await page.keyboard.press('p');
    out.tail.paused = await page.getAttribute('[data-tail]', 'aria-pressed');

    // A redrive of the dead letters with one error: two more dead letters
    // with another error, then those redriven from the queue's page.
    const api = async (path, body) => page.evaluate(async ([url, body]) => {
      const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: r.status, json: r.status === 204 ? null : await r.json() };
    }, [base + path, body]);
    const got = await api('/v1/queues/shipping/receive?max=2', {});
    for (const d of got.json.deliveries) {
      await api(`/v1/queues/shipping/leases/${d.lease}/reject`, { reason: 'carrier down' });
    }
    const deadCount = async () => {
      await page.goto(base + '/ui/queues');
      return (await page.textContent('#queues tbody tr:first-child td:nth-child(6)')).trim();
    };
    out.redrive = { before: await deadCount() };
    await page.goto(base + '/ui/queues/shipping');
    out.redrive.errors_before = await page.locator('#dead-letters table:first-of-type tbody th').allTextContents();
    await Promise.all([page.waitForNavigation(), page.click('#dead-letters tr:has-text("carrier down") a:has-text("Redrive these")')]);
    out.redrive.preview = await page.textContent('ul.consequences');
    await Promise.all([page.waitForNavigation(), page.click('form.confirm button[type=submit]')]);
    out.redrive.outcome = await page.textContent('[role=status]');
    out.redrive.after = await deadCount();
    await page.goto(base + '/ui/queues/shipping');
    out.redrive.errors_after = await page.locator('#dead-letters table:first-of-type tbody th').allTextContents();

    // Keyboard: ? opens the help, Escape closes it, g goes to the go-to field.
    await page.goto(base + '/ui');
    await page.keyboard.press('?');
    out.keys = { help_open: await page.evaluate(() => document.getElementById('help-dialog').open) };
    await page.keyboard.press('Escape');
    out.keys.help_closed = await page.evaluate(() => !document.getElementById('help-dialog').open);
    await page.keyboard.press('g');
    out.keys.goto_focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    await page.keyboard.type('billing');
    await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
    out.keys.went_to = new URL(page.url()).pathname;
    await page.keyboard.press('t');
    await page.waitForURL('**/ui/topics');
    out.keys.t_goes_to = new URL(page.url()).pathname;

    // The theme chosen sticks from the first paint of the next page, over
    // the system's preference.
    await Promise.all([page.waitForNavigation(), page.selectOption('#pref-theme', 'dark')]);
    await page.goto(base + '/ui/groups');
    out.theme = {
      attribute: await page.getAttribute('html', 'data-theme'),
      background: await page.evaluate(() => getComputedStyle(document.body).backgroundColor),
    };
    await context.close();

    // A read-only server offers no control that changes anything, on any page.
    const ro = await browser.newContext();
    const roPage = await ro.newPage();
    out.read_only = {};
    for (const [name, url] of PAGES) {
      await roPage.goto(readOnly + url);
      out.read_only[name] = await roPage.evaluate(() => ({
        forms: [...document.querySelectorAll('form[method=post]')].filter((f) => !f.classList.contains('prefs')).length,
        changes: document.querySelectorAll('details.change:not(.drift), a[href$="/delete"], a[href$="/purge"], a[href*="/redrive"], a[href*="/reset"]').length,
        badge: document.querySelector('.badge') ? document.querySelector('.badge').textContent : '',
      }));
    }
    await ro.close();

    // With JavaScript off the pages still show everything.
    const bare = await browser.newContext({ javaScriptEnabled: false });
    const still = await bare.newPage();
    await still.goto(base + '/ui/topics/orders/events?from=earliest&type=order.cancelled');
    out.no_script = {
      rows: await still.locator('#events tbody tr').count(),
      tail_button_hidden: await still.locator('[data-tail]').isHidden(),
    };
    await bare.close();
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
