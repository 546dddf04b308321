// dashboard.mjs: drives web/index.html in headless Chromium (puppeteer-core)
// against a running predictd, for tests/integration/test_browser.py, which
// starts the service on seeded PostgreSQL/Redis and passes what to do in
// the environment. Prints one JSON line per check:
//   {"check": NAME, "ok": true|false, "detail": "...", "figures": {...}}
// and exits 0 (the Python side turns the lines into test results).
//
//   node dashboard.mjs open    page load, console errors, chart levels,
//                              a pushed prediction, stale badge, the URL,
//                              keyboard, screenshots
//   node dashboard.mjs keyed   PREDICTD_READ_KEY set: the key prompt, the
//                              key kept, SSE opened with a token
//
// Environment: PREDICTD_URL, CHROMIUM, DB_URL, OUT_DIR, SYMBOL, STALE_SYMBOL,
// TF, READ_KEY (keyed), PUSH (JSON list of {sql, candle_time}).
// Times are measured and printed, never asserted against a budget: the
// deadlines below only bound how long a check may wait.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const env = process.env;
const BASE = env.PREDICTD_URL;
const SYMBOL = env.SYMBOL, TF = env.TF, STALE = env.STALE_SYMBOL;
const PUSH = JSON.parse(env.PUSH || '[]');
const DEADLINE = 15000;
const mode = process.argv[2];

function report(check, ok, detail = '', figures = {}) {
  console.log(JSON.stringify({ check, ok: !!ok, detail: String(detail), figures }));
}

async function attempt(name, fn) {
  try {
    const r = await fn();
    report(name, true, r && r.detail, r && r.figures);
  } catch (e) {
    report(name, false, e && e.stack ? e.stack : e);
  }
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

function psql(sql) {
  execFileSync('psql', [env.DB_URL.split('?')[0], '-qtAX', '-v', 'ON_ERROR_STOP=1', '-c', sql],
    { stdio: ['ignore', 'pipe', 'pipe'] });
}

/* Inserts a candle and waits until the page shows the prediction made from
 * it, pushed over the stream. Returns the milliseconds it took. */
async function push(page, p) {
  const t0 = Date.now();
  psql(p.sql);
  try {
    await page.waitForFunction((ct) => {
      const v = window.predictd;
      return v.prediction && v.prediction.candle_time === ct && v.lastPush &&
        v.lastPush.candle_time === ct && v.lastPush.source === 'stream';
    }, { timeout: DEADLINE, polling: 10 }, p.candle_time);
  } catch (e) {
    const v = await page.evaluate(() => JSON.stringify({ shown: predictd.prediction && predictd.prediction.candle_time,
      lastPush: predictd.lastPush, events: predictd.streamEvents, stream: predictd.stream }));
    throw new Error(`no prediction for the candle of ${p.candle_time} within ${DEADLINE} ms: ${v}`);
  }
  return Date.now() - t0;
}

async function watch(page) {
  const log = { console: [], pageErrors: [], badResponses: [], requests: [] };
  page.on('console', (m) => { if (m.type() === 'error') log.console.push(m.text()); });
  page.on('pageerror', (e) => log.pageErrors.push(e.message));
  page.on('response', (r) => { if (r.status() >= 400) log.badResponses.push(r.status() + ' ' + r.url()); });
  page.on('request', (r) => log.requests.push(r.url()));
  return log;
}

async function noOverflow(page) {
  return page.evaluate(() => ({ scrollWidth: document.scrollingElement.scrollWidth, innerWidth }));
}

async function openMode(browser) {
  const page = await browser.newPage();
  const log = await watch(page);
  await page.setViewport({ width: 1280, height: 800 });
  let loadMs = 0;
  await attempt('page_loads_without_console_errors', async () => {
    const t0 = Date.now();
    await page.goto(`${BASE}/#symbol=${SYMBOL}&tf=${TF}`, { waitUntil: 'load' });
    await page.waitForFunction(() => window.predictd.loads > 0 && window.predictd.stream === 'live' &&
      window.predictd.chart && window.predictd.prediction, { timeout: DEADLINE });
    loadMs = Date.now() - t0;
    const v = await page.evaluate(() => ({ s: predictd.symbol, tf: predictd.tf, sel: document.getElementById('symbol').value,
      title: document.getElementById('title').textContent }));
    check(v.s === SYMBOL && v.tf === TF && v.sel === SYMBOL, 'the view from the URL: ' + JSON.stringify(v));
    check(!log.console.length && !log.pageErrors.length && !log.badResponses.length,
      'errors: ' + JSON.stringify(log));
    check(!log.requests.some((u) => u.endsWith('/favicon.ico')), 'favicon.ico was requested');
    const junk = await page.evaluate(() => document.querySelector('main').innerText.match(/\b(null|undefined|NaN|\[object Object\])\b/g));
    check(!junk, 'the page shows ' + junk);
    return { detail: `loaded and live in ${loadMs} ms`, figures: { load_ms: loadMs } };
  });

  await attempt('header_shows_feed_state_and_source', async () => {
    const h = await page.evaluate(async () => {
      const st = await (await fetch('/health/status')).json();
      return { shown: document.querySelector('#feed').textContent.trim(), want: feedOf(st).text,
        health: document.querySelector('#healthpill').textContent.trim(), ready: st.ready,
        demo: feedOf({ components: { feed: { feed: 'demo-replay', state: 'connected', source: 'recorded BTCUSDT trades replayed' } } }).text,
        live: feedOf({ components: { feed: { feed: 'binance', state: 'lagging', source: 'wss://stream.binance.com:9443' } } }) };
    });
    check(h.shown === h.want, `header says "${h.shown}", /health/status gives "${h.want}"`);
    check(h.ready && h.health === 'ready', 'health pill: ' + h.health);
    check(h.demo === 'feed connected · demo replay', 'demo feed: ' + h.demo);
    check(h.live.text === 'feed lagging · live exchange' && h.live.dot === 'warn', 'exchange feed: ' + JSON.stringify(h.live));
    return { detail: h.shown };
  });

  await attempt('chart_levels_at_the_prediction_prices', async () => {
    const api = await page.evaluate(async (s, tf) => (await (await fetch(`/api/predictions/${s}?timeframe=${tf}`)).json()).prediction, SYMBOL, TF);
    const shown = await page.evaluate(() => ({
      levels: predictd.chart.levels.map((l) => ({ name: l.name, price: l.price, y: l.y, yOf: predictd.chart.yOf(l.price) })),
      lines: [...document.querySelectorAll('#levels line')].map((e) => ({ name: e.dataset.level, price: parseFloat(e.dataset.price), y: parseFloat(e.getAttribute('y1')), stroke: e.getAttribute('stroke') })),
      rows: [...document.querySelectorAll('#signal tr[data-level]')].map((e) => ({ name: e.dataset.level, cls: e.cells[1].className, text: e.cells[1].textContent })),
      lo: predictd.chart.lo, hi: predictd.chart.hi,
    }));
    const want = { entry: api.entry, stop: api.stop_loss };
    for (const t of api.take_profits) want['tp' + t.level] = t.price;
    check(shown.lines.length === 5, 'five level lines: ' + JSON.stringify(shown.lines));
    for (const [name, price] of Object.entries(want)) {
      const line = shown.lines.find((l) => l.name === name);
      check(line, 'no line for ' + name);
      check(line.price === price, `${name}: line at ${line.price}, prediction says ${price}`);
      const lv = shown.levels.find((l) => l.name === name);
      check(Math.abs(lv.y - line.y) < 1e-6 && Math.abs(lv.yOf - line.y) < 1e-6, `${name}: line not at its price's y`);
      check(price >= shown.lo && price <= shown.hi, `${name} outside the chart's range`);
      const meaning = name === 'stop' ? 'var(--loss)' : name === 'entry' ? 'var(--entry)' : 'var(--profit)';
      check(line.stroke === meaning, `${name} drawn in ${line.stroke}, not ${meaning}, for a ${api.levels_for}`);
      const row = shown.rows.find((r) => r.name === name);
      check(row && row.cls === (name === 'stop' ? 'loss' : name === 'entry' ? '' : 'profit'), `${name} row coloured ${row && row.cls}`);
    }
    // lines sit in price order whatever the side (a higher price is higher up)
    const byPrice = [...shown.lines].sort((a, b) => b.price - a.price).map((l) => l.y);
    check(byPrice.every((y, i) => i === 0 || y > byPrice[i - 1]), 'lines out of price order');
    return { detail: `${api.levels_for}: entry ${api.entry}, stop ${api.stop_loss}, TPs ${api.take_profits.map((t) => t.price).join(', ')}` };
  });

  await attempt('past_calls_marked_by_outcome', async () => {
    const m = await page.evaluate(() => ({ markers: predictd.chart.markers,
      svg: [...document.querySelectorAll('#calls polygon')].map((e) => ({ outcome: e.dataset.outcome, fill: e.getAttribute('fill') })),
      rows: document.querySelectorAll('#ledger tbody tr').length, history: predictd.history.length }));
    check(m.history > 0 && m.rows > 0, 'no ledger rows shown');
    const calls = await page.evaluate(() => predictd.history.map((r) => r.candle_time + ' ' + r.direction + ' ' + r.outcome));
    check(m.markers.length > 0 && m.svg.length === m.markers.length, 'no call markers: ' + JSON.stringify(m) + ' ' + calls.join(', '));
    for (const s of m.svg) {
      const want = s.outcome.startsWith('TP') ? 'var(--profit)' : s.outcome === 'SL' ? 'var(--loss)' : s.outcome === 'OPEN' ? 'none' : null;
      if (want) check(s.fill === want, `a ${s.outcome} call filled ${s.fill}`);
    }
    const outcomes = [...new Set(m.svg.map((s) => s.outcome))].join(' ');
    return { detail: `${m.markers.length} markers (${outcomes}), ${m.rows} ledger rows` };
  });

  await attempt('record_shows_backtest_live_and_baselines', async () => {
    const r = await page.evaluate(() => {
      const rows = () => [...document.querySelectorAll('#recordbody table.stats tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent));
      const today = rows();
      /* the figures the model metadata is gaining (test-window hit rate,
       * replayed backtest, baselines, the gate's verdict) are rendered when
       * present: the same page code over a prediction that carries them */
      const saved = predictd.prediction;
      predictd.prediction = Object.assign({}, saved, { model: Object.assign({}, saved.model, {
        class_accuracy: 0.41, hit_rate_calls: 0.55, calls: 120, log_loss: 1.02,
        backtest_hit_rate: 0.52, backtest_trades: 300, backtest_expectancy_r: 0.08,
        baselines: { majority: { log_loss: 1.09, hit_rate_calls: 0.5 }, persistence: { log_loss: 1.2, hit_rate_calls: 0.47 } },
        beats_baseline: false }) });
      renderRecord();
      const later = rows();
      const warning = document.querySelector('#recordbody [data-warning="baseline"]');
      predictd.prediction = saved;
      renderRecord();
      return { today, later, warning: warning && warning.textContent, perf: predictd.performance.versions[0].all };
    });
    const find = (rows, name) => rows.find((x) => x[0].startsWith(name));
    const live = find(r.today, 'live, all');
    check(live && live[2] === (r.perf.hit_rate * 100).toFixed(1) + '%' && live[3] === String(r.perf.resolved), 'live row: ' + JSON.stringify(live) + ' vs ' + JSON.stringify(r.perf));
    check(find(r.today, 'test set') && find(r.today, 'baseline: majority class'), 'today: ' + JSON.stringify(r.today));
    const maj = r.later.filter((x) => x[0] === 'baseline: majority class');
    const today = find(r.today, 'baseline: majority class');
    check(maj.length === 1 && maj[0][1] === today[1] && maj[0][2] === '50.0%' && maj[0][6] === '1.0900', 'majority: ' + JSON.stringify(r.later));
    check(find(r.later, 'baseline: persistence'), 'persistence: ' + JSON.stringify(r.later));
    const bt = find(r.later, 'backtest (replay)');
    check(bt && bt[2] === '52.0%' && bt[4] === '300' && bt[5] === '0.08R', 'backtest: ' + JSON.stringify(bt));
    check(r.warning && /does not beat its baseline/.test(r.warning), 'no baseline warning');
    return { detail: `live ${live.slice(1).join(' / ')}` };
  });

  await attempt('prediction_pushed_by_a_new_candle_appears', async () => {
    check(PUSH.length >= 1, 'no candle to push');
    const times = [];
    for (const p of PUSH) times.push(await push(page, p));
    const last = PUSH[PUSH.length - 1].candle_time;
    // the direction shown is the pushed prediction's
    const shown = await page.evaluate(() => ({ dir: document.getElementById('direction').textContent, want: predictd.prediction.direction, state: document.getElementById('signal').dataset.state }));
    check(shown.dir.replace(/[^A-Z_ ]/g, '').trim().replace(' ', '_') === shown.want, JSON.stringify(shown));
    // the timeframe summary and the watchlist follow from the same stream
    const side = await page.evaluate((tf, sym) => ({ summary: predictd.summary.predictions[tf] && predictd.summary.predictions[tf].candle_time,
      watch: predictd.watch.get(sym) && predictd.watch.get(sym).candle_time }), TF, SYMBOL);
    check(side.summary === last && side.watch === last, 'summary/watchlist behind: ' + JSON.stringify(side));
    // the chart follows with the new candle
    await page.waitForFunction((ct) => predictd.chart && predictd.chart.lastCandle === ct, { timeout: DEADLINE, polling: 50 }, last);
    return { detail: `insert -> page: ${times.join(' ms, ')} ms; state ${shown.state}`, figures: { push_ms: times } };
  });

  for (const [w, h] of [[1280, 800], [390, 844]]) {
    await attempt(`screenshot_${w}x${h}_without_horizontal_overflow`, async () => {
      await page.setViewport({ width: w, height: h });
      await new Promise((r) => setTimeout(r, 400)); /* the chart redraws on resize */
      const o = await noOverflow(page);
      const file = path.join(env.OUT_DIR, `dashboard-${w}x${h}.png`);
      await page.screenshot({ path: file });
      const full = path.join(env.OUT_DIR, `dashboard-${w}x${h}-full.png`);
      await page.screenshot({ path: full, fullPage: true });
      check(o.scrollWidth <= o.innerWidth, `scrollWidth ${o.scrollWidth} > innerWidth ${o.innerWidth}`);
      return { detail: file, figures: o };
    });
  }
  await page.setViewport({ width: 1280, height: 800 });

  await attempt('stale_series_shows_its_badge', async () => {
    await page.evaluate((s, tf) => { location.hash = `#symbol=${s}&tf=${tf}`; }, STALE, TF);
    await page.waitForFunction((s) => predictd.prediction && predictd.prediction.symbol === s && predictd.loads > 1, { timeout: DEADLINE }, STALE);
    const s = await page.evaluate((sym) => {
      const badge = document.querySelector('#signal [data-badge="stale"]');
      const warn = document.querySelector('#warnings [data-warning="stale"]');
      const row = document.querySelector(`#watchbody [data-symbol="${sym}"] [data-badge="stale"]`);
      const fresh = document.querySelector('#watchbody [data-symbol]:not([data-symbol="' + sym + '"]) .badge');
      const dir = getComputedStyle(document.getElementById('direction'));
      return { stale: predictd.prediction.stale, badge: badge && badge.textContent, visible: badge && badge.getBoundingClientRect().width > 0,
        muted: document.getElementById('signal').classList.contains('muted'), warn: warn && warn.textContent,
        row: !!row, opacity: parseFloat(dir.opacity), line: dir.textDecorationLine, freshOther: fresh && fresh.textContent };
    }, STALE);
    check(s.stale === true, 'the API does not call it stale: ' + JSON.stringify(s));
    check(s.badge && /stale/i.test(s.badge) && s.visible, 'no visible stale badge: ' + JSON.stringify(s));
    check(s.muted && s.opacity < 1 && s.line.includes('line-through'), 'direction not muted: ' + JSON.stringify(s));
    check(s.warn && /last candle closed/.test(s.warn), 'no plain-text reason: ' + JSON.stringify(s));
    check(s.row, 'the watchlist does not badge it');
    const junk = await page.evaluate(() => document.querySelector('main').innerText.match(/\b(null|undefined|NaN|\[object Object\])\b/g));
    check(!junk, 'the page shows ' + junk);
    await page.screenshot({ path: path.join(env.OUT_DIR, 'dashboard-stale-1280x800.png') });
    return { detail: `badge "${s.badge}", reason "${s.warn}"` };
  });

  await attempt('view_is_in_the_url_and_controls_are_keyboard_reachable', async () => {
    const p2 = await browser.newPage();
    const log2 = await watch(p2);
    await p2.setViewport({ width: 1280, height: 800 });
    await p2.goto(`${BASE}/#symbol=${STALE}&tf=${TF}`, { waitUntil: 'load' });
    await p2.waitForFunction((s) => predictd.loads > 0 && predictd.symbol === s, { timeout: DEADLINE }, STALE);
    const reached = [];
    for (let i = 0; i < 14; i++) {
      await p2.keyboard.press('Tab');
      reached.push(await p2.evaluate(() => { const a = document.activeElement; return a.id || (a.dataset.tf ? 'tf:' + a.dataset.tf : a.tagName); }));
    }
    for (const want of ['symbol', 'tf:1h', 'tf:4h', 'keybtn']) check(reached.includes(want), `${want} not reached by Tab: ${reached}`);
    // choose a timeframe from the keyboard: the URL follows
    await p2.focus('#tfs button[data-tf="4h"]');
    await p2.keyboard.press('Enter');
    await p2.waitForFunction(() => location.hash === '#symbol=' + predictd.symbol + '&tf=4h' && predictd.tf === '4h', { timeout: DEADLINE });
    // and the symbol from the select
    await p2.select('#symbol', SYMBOL);
    await p2.waitForFunction((s) => location.hash === `#symbol=${s}&tf=4h`, { timeout: DEADLINE }, SYMBOL);
    /* OLDUSDT has no 4h series: its 404s are the page reporting that, not errors */
    const errs = log2.pageErrors.concat(log2.badResponses.filter((r) => !r.startsWith('404 ')));
    await p2.close();
    check(!errs.length, 'errors: ' + errs.join('; '));
    return { detail: 'tab order: ' + reached.join(' ') };
  });

  await attempt('no_console_errors_in_the_whole_run', async () => {
    check(!log.console.length && !log.pageErrors.length && !log.badResponses.length, JSON.stringify(log));
    return { detail: `${log.requests.length} requests` };
  });
  await page.close();
}

async function keyedMode(browser) {
  const page = await browser.newPage();
  const log = await watch(page);
  await page.setViewport({ width: 1280, height: 800 });
  const key = env.READ_KEY;
  await attempt('read_key_prompt_then_data_and_stream_with_a_token', async () => {
    await page.goto(`${BASE}/#symbol=${SYMBOL}&tf=${TF}`, { waitUntil: 'load' });
    await page.waitForFunction(() => predictd.needKey && !document.getElementById('keypanel').hidden, { timeout: DEADLINE });
    const asked = await page.evaluate(() => ({ msg: document.getElementById('keymsg').textContent, body: document.getElementById('signalbody').textContent, stream: predictd.stream }));
    check(/read key/.test(asked.msg), 'no key prompt: ' + JSON.stringify(asked));
    check(/locked/.test(asked.body), 'shows data without a key: ' + JSON.stringify(asked));
    await page.screenshot({ path: path.join(env.OUT_DIR, 'dashboard-key-prompt-1280x800.png') });
    const before = log.badResponses.length;
    check(before > 0 && log.badResponses.every((r) => r.startsWith('401 ')), 'expected only 401s: ' + log.badResponses);
    await page.type('#keyinput', key);
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => predictd.loads > 0 && predictd.prediction && predictd.stream === 'live', { timeout: DEADLINE });
    const pushMs = await push(page, PUSH[0]);
    check(log.badResponses.length === before, 'errors after the key: ' + log.badResponses.slice(before));
    const stored = await page.evaluate(() => localStorage.getItem('predictd.readKey'));
    check(stored === key, 'the key is not kept');
    const leaked = log.requests.filter((u) => u.includes(key) || u.includes(encodeURIComponent(key)));
    check(!leaked.length, 'the key went into a URL: ' + leaked);
    const streams = log.requests.filter((u) => u.includes('/api/predictions/events'));
    check(streams.length && streams.every((u) => /[?&]token=\d+\.[0-9a-f]{64}(&|$)/.test(u)), 'stream URLs: ' + streams);
    // a reload remembers the key
    await page.reload({ waitUntil: 'load' });
    await page.waitForFunction(() => predictd.loads > 0 && predictd.stream === 'live', { timeout: DEADLINE });
    check(await page.evaluate(() => !predictd.needKey && document.getElementById('keypanel').hidden), 'asked again after a reload');
    // forgetting the key locks the page again and stops the stream
    await page.click('#keybtn');
    await page.click('#keyforget');
    await page.waitForFunction(() => predictd.needKey && predictd.stream === 'needs a key' && !localStorage.getItem('predictd.readKey') &&
      !document.getElementById('keypanel').hidden && /locked/.test(document.getElementById('signalbody').textContent), { timeout: DEADLINE });
    check(log.pageErrors.length === 0, 'page errors: ' + log.pageErrors);
    return { detail: `pushed prediction on the token stream in ${pushMs} ms`, figures: { push_ms: pushMs } };
  });
  await page.close();
}

const browser = await puppeteer.launch({
  executablePath: env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
});
try {
  if (mode === 'open') await openMode(browser);
  else if (mode === 'keyed') await keyedMode(browser);
  else report('usage', false, 'node dashboard.mjs open|keyed');
} finally {
  await browser.close();
}
