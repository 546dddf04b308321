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
// TF, READ_KEY (keyed), PUSH (JSON list of {sql, candle_time}), CALLS (JSON
// list of {candle_time, direction, outcome, r}: ledger rows with known outcomes).
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
        /* the shapes /health/status gives with a feed running (openapi.yaml) */
        demo: feedOf({ feed: 'demo-replay', components: { feed: { state: 'connected', name: 'demo-replay', source: 'data/BTCUSDT-1m.csv replayed',
          last_candle: null, last_candle_age_s: null, candles: 0, trades: 0, corrections: 0, write_errors: 0 } } }),
        live: feedOf({ feed: 'binance', components: { feed: { state: 'lagging', name: 'binance', source: 'wss://stream.binance.com:9443',
          last_candle: '2026-12-05T00:00:00Z', last_candle_age_s: 90, candles: 9, trades: 900, corrections: 0, write_errors: 0 } } }),
        down: feedOf({ feed: 'binance', components: { feed: { state: 'down', name: 'binance', source: 'wss://stream.binance.com:9443',
          last_candle: null, last_candle_age_s: null, candles: 0, trades: 0, corrections: 0, write_errors: 0 } } }),
        off: feedOf({ feed: null, components: { feed: { state: 'off', name: null, source: null,
          last_candle: null, last_candle_age_s: null, candles: 0, trades: 0, corrections: 0, write_errors: 0 } } }),
        feed: st.feed, state: st.components.feed.state };
    });
    check(h.shown === h.want, `header says "${h.shown}", /health/status gives "${h.want}"`);
    /* this service runs no feed of its own (PREDICTD_FEED unset) */
    check(h.feed === null && h.state === 'off' && h.shown === 'no feed: candles from the database', 'no feed: ' + JSON.stringify(h));
    check(h.ready && h.health === 'ready', 'health pill: ' + h.health);
    check(h.demo.text === 'feed connected · demo replay' && h.demo.dot === 'ok', 'demo feed: ' + JSON.stringify(h.demo));
    check(h.live.text === 'feed lagging · live exchange · last 1m candle 90 s ago' && h.live.dot === 'warn', 'exchange feed: ' + JSON.stringify(h.live));
    check(h.down.dot === 'bad' && h.off.text === 'no feed: candles from the database', 'down/off: ' + JSON.stringify([h.down, h.off]));
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
      calls: [...document.querySelectorAll('#calls polygon')].map((e) => ({ candle: e.dataset.candle, direction: e.dataset.direction, outcome: e.dataset.outcome, fill: e.getAttribute('fill') })),
      dots: [...document.querySelectorAll('#calls circle')].map((e) => ({ candle: e.dataset.candle, direction: e.dataset.direction, fill: e.getAttribute('fill'), stroke: e.getAttribute('stroke') })),
      rows: [...document.querySelectorAll('#ledger tbody tr')].map((tr) => ({ candle: tr.dataset.candle, cells: [...tr.cells].map((c) => c.textContent), cls: tr.cells[3].className })),
      inChart: predictd.history.filter((r) => predictd.candles.slice(-predictd.chart.candles).some((c) => c.t === Date.parse(r.candle_time)))
        .map((r) => ({ candle: r.candle_time, direction: r.direction })),
      notrades: document.getElementById('notrades') && document.getElementById('notrades').textContent,
      history: predictd.history.length }));
    const calls = JSON.parse(env.CALLS || '[]');
    check(calls.length >= 3 && m.history > calls.length, 'ledger: ' + m.history + ' rows for ' + calls.length + ' calls');
    /* every ledger row on the chart's candles is marked, calls as triangles, NO_TRADE as dots */
    check(m.markers.length === m.inChart.length && m.calls.length + m.dots.length === m.markers.length,
      `markers ${m.markers.length}, rows on the chart ${m.inChart.length}, drawn ${m.calls.length}+${m.dots.length}`);
    const fillOf = (o) => (o.startsWith('TP') ? 'var(--profit)' : o === 'SL' ? 'var(--loss)' : o === 'OPEN' ? 'none' : 'var(--none)');
    for (const c of calls) {
      const s = m.calls.find((x) => x.candle === c.candle_time);
      check(s, `no marker for the ${c.direction} call of ${c.candle_time}: ` + JSON.stringify(m.calls));
      check(s.direction === c.direction && s.outcome === c.outcome && s.fill === fillOf(c.outcome),
        `the ${c.direction} ${c.outcome} call of ${c.candle_time} drawn as ${JSON.stringify(s)}`);
      const row = m.rows.find((r) => r.candle === c.candle_time);
      const r = (c.r > 0 ? '+' : '') + c.r.toFixed(2);
      check(row && row.cells[3] === c.outcome && row.cells[4] === r, `ledger row of ${c.candle_time}: ${JSON.stringify(row)}, want ${c.outcome} ${r}`);
      check(row.cls === (c.outcome.startsWith('TP') ? 'profit' : c.outcome === 'SL' ? 'loss' : c.r > 0 ? 'profit' : 'flat'), 'outcome cell coloured ' + row.cls);
    }
    check(new Set(calls.map((c) => fillOf(c.outcome))).size === 3, 'the calls do not cover profit, loss and expired');
    for (const s of m.calls) check(s.fill === fillOf(s.outcome), `a ${s.outcome} call filled ${s.fill}`);
    check(m.dots.length > 0 && m.dots.every((d) => d.direction === 'NO_TRADE' && d.fill === 'none' && d.stroke === 'var(--none)'),
      'NO_TRADE answers: ' + JSON.stringify(m.dots));
    check(m.rows.every((r) => !/NO TRADE/.test(r.cells[1])), 'the calls table lists NO_TRADE rows');
    check(m.notrades && /answers were no trade/.test(m.notrades), 'no count of the no-trade answers: ' + m.notrades);
    return { detail: `${m.calls.length} calls (${[...new Set(m.calls.map((s) => s.outcome))].join(' ')}), ${m.dots.length} no-trade dots, ${m.rows.length} call rows; ${m.notrades}` };
  });

  await attempt('record_shows_backtest_live_and_baselines', async () => {
    const r = await page.evaluate(async (s, tf) => {
      const rows = () => [...document.querySelectorAll('#recordbody table.stats tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent));
      const get = async (u) => (await fetch(u)).json();
      const [pred, perf, model] = await Promise.all([get(`/api/predictions/${s}?timeframe=${tf}`),
        get(`/api/models/${s}/${tf}/performance`), get(`/api/models/${s}/${tf}`)]);
      const today = rows();
      const headline = document.getElementById('accuracy');
      const warning = document.querySelector('#recordbody [data-warning="baseline"]');
      /* a model that beats its baselines gets no warning: the same page code
       * over the same answer with the gate's other verdict */
      const saved = predictd.prediction;
      predictd.prediction = Object.assign({}, saved, { model: Object.assign({}, saved.model, { beats_baseline: true }) });
      renderRecord();
      const beats = { warning: !!document.querySelector('#recordbody [data-warning="baseline"]'),
        verdict: document.querySelector('#recordbody [data-verdict="beats"]') && document.querySelector('#recordbody [data-verdict="beats"]').textContent };
      predictd.prediction = saved;
      renderRecord();
      return { today, headline: headline && { text: headline.textContent, source: headline.dataset.source },
        warning: warning && warning.textContent, beats, p: pred.prediction, perf, backtests: model.backtests };
    }, SYMBOL, TF);
    const pct = (x) => (x === null || x === undefined ? '–' : (x * 100).toFixed(1) + '%');
    const cnt = (x) => (x === null || x === undefined ? '–' : String(x));
    const rr = (x) => (x === null || x === undefined ? '–' : (x > 0 ? '+' : '') + x.toFixed(2) + 'R');
    const ll = (x) => (x === null || x === undefined ? '–' : x.toFixed(4));
    const find = (name) => r.today.find((x) => x[0].trim().startsWith(name));
    const m = r.p.model;
    /* columns: name, hit rate, class acc., calls, resolved, R, log loss */
    const want = (name, cells) => {
      const row = find(name);
      check(row, `no "${name}" row: ` + JSON.stringify(r.today));
      check(JSON.stringify(row.slice(1)) === JSON.stringify(cells), `${name}: ${JSON.stringify(row.slice(1))}, the API gives ${JSON.stringify(cells)}`);
      return row;
    };
    check(r.headline && r.headline.source === r.p.accuracy_source && r.headline.text.startsWith('hit rate of calls ' + pct(r.p.model_accuracy)),
      'headline: ' + JSON.stringify(r.headline) + ' vs ' + r.p.model_accuracy + ' ' + r.p.accuracy_source);
    check(m.class_accuracy !== null && m.baselines.majority.log_loss !== null, 'the model carries no test figures: ' + JSON.stringify(m));
    want('test window', [pct(m.hit_rate_calls), pct(m.class_accuracy), cnt(m.calls), '–', '–', ll(m.log_loss)]);
    want('backtest, test window', [pct(m.backtest_hit_rate), '–', cnt(m.backtest_trades), '–', rr(m.backtest_expectancy_r), '–']);
    want('baseline: majority class', [pct(m.baselines.majority.hit_rate_calls), pct(m.baseline_accuracy), '–', '–', '–', ll(m.baselines.majority.log_loss)]);
    want('baseline: persistence', [pct(m.baselines.persistence.hit_rate_calls), '–', '–', '–', '–', ll(m.baselines.persistence.log_loss)]);
    const ver = r.perf.versions.find((v) => v.version === m.version);
    check(ver && ver.all.trades >= 3, 'the performance route has no trades of v' + m.version + ': ' + JSON.stringify(r.perf));
    want('live, all', [pct(ver.hit_rate_calls), pct(ver.class_accuracy), cnt(ver.all.trades), cnt(ver.all.resolved), rr(ver.all.avg_r), '–']);
    want('live, last', [pct(ver.window.hit_rate), pct(ver.window.accuracy), cnt(ver.window.trades), cnt(ver.window.resolved), rr(ver.window.avg_r), '–']);
    const bt = (r.backtests || []).find((b) => b.version === m.version);
    check(bt, 'no stored backtest of v' + m.version + ': ' + JSON.stringify(r.backtests));
    const f = bt.figures;
    want('backtest run', [pct(f.model.hit_rate_tp1), '–', cnt(f.model.calls), '–', rr(f.model.expectancy_r), '–']);
    want('run baseline: majority', [pct(f.majority.hit_rate_tp1), '–', cnt(f.majority.calls), '–', rr(f.majority.expectancy_r), '–']);
    want('run baseline: persistence', [pct(f.persistence.hit_rate_tp1), '–', cnt(f.persistence.calls), '–', rr(f.persistence.expectancy_r), '–']);
    /* the gate's verdict as the model says it */
    check(m.beats_baseline === false, 'a --force model that beats its baselines? ' + m.beats_baseline);
    check(r.warning && /does not beat its baselines/.test(r.warning) && r.warning.includes(m.baselines.majority.log_loss.toFixed(3)), 'baseline warning: ' + r.warning);
    check(!r.beats.warning && r.beats.verdict && /beats its baselines/.test(r.beats.verdict), 'a model that beats: ' + JSON.stringify(r.beats));
    return { detail: `${r.headline.text}; live v${ver.version}: ${ver.all.trades} trades, hit ${pct(ver.hit_rate_calls)}; replay ${f.model.calls} calls, majority ${f.majority.calls}` };
  });

  await attempt('no_trade_reason_in_words_with_the_models_choice', async () => {
    const v = await page.evaluate(async (s, tf) => {
      const p = (await (await fetch(`/api/predictions/${s}?timeframe=${tf}`)).json()).prediction;
      const shown = { why: document.getElementById('whynot') && document.getElementById('whynot').textContent,
        reason: document.getElementById('whynot') && document.getElementById('whynot').dataset.noTrade,
        choice: document.getElementById('choice').textContent };
      /* the other reasons and a NO_TRADE chosen by the model itself, through the same code */
      const words = {};
      for (const reason of ['model', 'below_min_confidence', 'stale_data', 'levels_under_tick', 'below_baseline', 'cost'])
        words[reason] = noTradeWhy(Object.assign({}, p, { direction: 'NO_TRADE', no_trade_reason: reason, model_choice: reason === 'model' ? 'NO_TRADE' : 'SHORT', confidence: 0.47 }));
      const call = choiceText(Object.assign({}, p, { direction: 'LONG', model_choice: 'LONG', no_trade_reason: null, confidence: 0.61 }));
      return { p: { direction: p.direction, reason: p.no_trade_reason, choice: p.model_choice, confidence: p.confidence }, shown, words, call };
    }, SYMBOL, TF);
    /* a --force model: below_baseline, or stale_data while the last candle is old */
    const said = { below_baseline: /does not beat its baselines/, stale_data: /the data is stale/ };
    check(v.p.direction === 'NO_TRADE' && said[v.p.reason], 'the answer: ' + JSON.stringify(v.p));
    check(v.shown.reason === v.p.reason && said[v.p.reason].test(v.shown.why), 'shown: ' + JSON.stringify(v.shown));
    const conf = (v.p.confidence * 100).toFixed(1) + '%';
    if (v.p.choice !== 'NO_TRADE') {
      check(v.shown.why.includes(`the model chose ${v.p.choice} at ${conf}`), 'no model choice in ' + v.shown.why);
      check(v.shown.choice === `model's choice ${v.p.choice} ${(v.p.confidence * 100).toFixed(1)}%`, 'choice: ' + v.shown.choice);
    } else {
      check(!/model chose/.test(v.shown.why), v.shown.why);
    }
    for (const [reason, text] of Object.entries(v.words)) {
      check(!/_/.test(text) && text.startsWith('No trade: '), `${reason}: ${text}`);
      check(reason === 'model' ? !/chose/.test(text) : text.includes('the model chose SHORT at 47.0%'), `${reason}: ${text}`);
    }
    check(/minimum confidence/.test(v.words.below_min_confidence) && /stale/.test(v.words.stale_data) && /tick/.test(v.words.levels_under_tick) &&
      /cost/.test(v.words.cost) && /most probable class is no trade/.test(v.words.model), JSON.stringify(v.words));
    check(v.call === '61.0% confidence', 'a call: ' + v.call);
    return { detail: v.shown.why };
  });

  await attempt('consensus_is_the_services', async () => {
    const v = await page.evaluate(async (s) => {
      const c = (await (await fetch(`/api/predictions/${s}/summary`)).json()).consensus;
      const e = document.getElementById('consensus');
      return { c, direction: e.dataset.direction, strength: parseFloat(e.dataset.strength), text: e.textContent,
        sets: Object.fromEntries([...e.querySelectorAll('[data-set]')].map((x) => [x.dataset.set, x.textContent])) };
    }, SYMBOL);
    check(v.direction === v.c.direction && Math.abs(v.strength - v.c.strength) < 1e-12, `page ${v.direction} ${v.strength}, service ${JSON.stringify(v.c)}`);
    check(v.text.startsWith('consensus ' + v.c.direction.replace('_', ' ')), v.text);
    for (const [k, name] of [['agree', 'agree'], ['disagree', 'disagree'], ['neutral', 'neutral'], ['excluded', 'no vote']]) {
      const want = v.c[k].length ? ' · ' + name + ' ' + v.c[k].join(' ') : undefined;
      check(v.sets[name] === want, `${name}: page "${v.sets[name]}", service ${JSON.stringify(v.c[k])}`);
    }
    check(v.c.excluded.length > 0, 'the --force models vote? ' + JSON.stringify(v.c));
    return { detail: v.text };
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
    // (the summary is fetched again after the push: wait for it, bounded)
    await page.waitForFunction((tf, sym, want) => predictd.summary.predictions[tf] && predictd.summary.predictions[tf].candle_time === want &&
      predictd.watch.get(sym) && predictd.watch.get(sym).candle_time === want, { timeout: 10000 }, TF, SYMBOL, last).catch(() => {});
    const side = await page.evaluate((tf, sym) => ({ summary: predictd.summary.predictions[tf] && predictd.summary.predictions[tf].candle_time,
      watch: predictd.watch.get(sym) && predictd.watch.get(sym).candle_time }), TF, SYMBOL);
    check(side.summary === last && side.watch === last, 'summary/watchlist behind: ' + JSON.stringify(side));
    // the chart follows with the new candle
    await page.waitForFunction((ct) => predictd.chart && predictd.chart.lastCandle === ct, { timeout: DEADLINE, polling: 50 }, last);
    return { detail: `insert -> page: ${times.join(' ms, ')} ms; state ${shown.state}`, figures: { push_ms: times } };
  });

  await attempt('no_trade_reason_after_the_push', async () => {
    const v = await page.evaluate(() => ({ p: predictd.prediction, why: document.getElementById('whynot') && document.getElementById('whynot').textContent }));
    check(!v.p.stale && v.p.no_trade_reason === 'below_baseline', 'the fresh answer: ' + JSON.stringify(v.p));
    check(/does not beat its baselines/.test(v.why), 'shown: ' + v.why);
    return { detail: v.why };
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
