// gen_talib.mjs: prints tests/golden/talib_golden.h, the golden values that
// tests/unit/test_indicators.c checks predictd's indicator kernels against.
//
// The numbers come from TA-Lib itself: the talib-web npm package is TA-Lib's
// C source compiled to WebAssembly. This script calls the TA_* C functions
// directly (startIdx 0, endIdx n-1, reading outBegIdx/outNBElement), not
// through talib-web's JavaScript wrapper, whose endIdx is off by one.
// Defaults are TA-Lib's: no unstable period, classic (non-MetaStock)
// compatibility. Features predictd defines beyond TA-Lib are composed from
// TA-Lib functions: ret = ROCR-1, logret = LN(ROCR), volatility =
// STDDEV(LN(ROCR(close,1))), zscore = (close-SMA)/STDDEV, volume_ratio =
// volume/SMA(volume).
//
// Rerun (outside the repository, then from the repository root):
//   mkdir -p /tmp/talib && (cd /tmp/talib && npm init -y && npm install talib-web@0.1.3)
//   node tests/golden/gen_talib.mjs /tmp/talib > tests/golden/talib_golden.h
//
// The input series are built here deterministically (no randomness from the
// environment), so a rerun with the same package prints the same header.
import { createRequire } from 'node:module';
import path from 'node:path';

const dir = process.argv[2] || '/tmp/talib';
const require = createRequire(path.resolve(dir) + '/');
// Node's fetch() cannot read a local file; without it the Emscripten loader
// reads talib.wasm from disk.
delete globalThis.fetch;
const talib = require('talib-web');
const M = await talib.init();

// ---------------------------------------------------------------------------
// Calling TA-Lib. inputs: arrays of equal length n; opts: [value, 'i'|'d'].
function ta(name, inputs, opts, nout) {
    const n = inputs[0].length;
    const ptrs = [];
    const alloc = (bytes) => {
        const p = M._malloc(bytes);
        ptrs.push(p);
        return p;
    };
    const args = [0, n - 1];
    for (const arr of inputs) {
        const p = alloc(8 * n);
        M.HEAPF64.set(Float64Array.from(arr), p / 8);
        args.push(p);
    }
    for (const [v] of opts) args.push(v);
    const beg = alloc(4), nb = alloc(4);
    args.push(beg, nb);
    const outs = [];
    for (let k = 0; k < nout; k++) {
        const p = alloc(8 * n);
        outs.push(p);
        args.push(p);
    }
    const types = new Array(args.length).fill('number');
    const rc = M.ccall('TA_' + name, 'number', types, args);
    if (rc !== 0) throw new Error(`TA_${name} returned ${rc}`);
    const b = M.HEAP32[beg / 4], cnt = M.HEAP32[nb / 4];
    const res = outs.map((p) => {
        const a = new Array(n).fill(NaN);
        for (let i = 0; i < cnt; i++) a[b + i] = M.HEAPF64[p / 8 + i];
        return a;
    });
    for (const p of ptrs) M._free(p);
    res.beg = cnt > 0 ? b : n; // TA-Lib's outBegIdx: its lookback
    return res;
}

// Applies a one-input TA-Lib function to the defined tail of an aligned
// array (leading NaNs), keeping the alignment.
function taTail(name, arr, opts) {
    let s = 0;
    while (s < arr.length && Number.isNaN(arr[s])) s++;
    const out = new Array(arr.length).fill(NaN);
    if (s >= arr.length) return out;
    const r = ta(name, [arr.slice(s)], opts, 1)[0];
    for (let i = 0; i < r.length; i++) out[s + i] = r[i];
    return out;
}

// ---------------------------------------------------------------------------
// Input series. A small integer generator so the walk is the same everywhere.
function lcg(seed) {
    let s = seed >>> 0;
    return () => {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        return s / 4294967296;
    };
}
const r2 = (x) => Math.round(x * 100) / 100;

// 120 candles of a trending and ranging walk around 100, with a gap up, a
// sharp drop, a zero-range candle and a repeated close.
function mainSeries() {
    const rnd = lcg(20240229);
    const s = { open: [], high: [], low: [], close: [], volume: [] };
    let prev = 100;
    for (let i = 0; i < 120; i++) {
        const drift = i < 40 ? 0.25 : i < 80 ? -0.2 : 0.05;
        let open = r2(prev + (rnd() - 0.5) * 0.6);
        let close = r2(open + drift + (rnd() - 0.5) * 3);
        if (i === 55) close = r2(open + 6);  // gap-like jump
        if (i === 90) close = r2(open * 0.93); // sharp drop
        if (i === 70) close = prev;            // unchanged close
        let high = r2(Math.max(open, close) + rnd() * 1.5);
        let low = r2(Math.min(open, close) - rnd() * 1.5);
        let volume = Math.round(800 + rnd() * 4000) + (i % 7 === 0 ? 3000 : 0);
        if (i === 30) { open = high = low = close = prev; volume = 120; } // zero range
        s.open.push(open); s.high.push(high); s.low.push(low);
        s.close.push(close); s.volume.push(volume);
        prev = close;
    }
    return s;
}

// 40 identical candles: every 0/0 case (TA-Lib's answers recorded here;
// predictd differs on some, see features/indicators.c).
function flatSeries() {
    const s = { open: [], high: [], low: [], close: [], volume: [] };
    for (let i = 0; i < 40; i++) {
        s.open.push(50); s.high.push(50); s.low.push(50); s.close.push(50); s.volume.push(1000);
    }
    return s;
}

// 40 candles rising every step: RSI 100, WILLR 0, STOCH 100.
function risingSeries() {
    const s = { open: [], high: [], low: [], close: [], volume: [] };
    for (let i = 0; i < 40; i++) {
        const c = 20 + i * 0.5;
        s.open.push(c - 0.25); s.high.push(c + 0.1); s.low.push(c - 0.3); s.close.push(c);
        s.volume.push(500 + 10 * i);
    }
    return s;
}

const series = [['main', mainSeries()], ['flat', flatSeries()], ['rising', risingSeries()]];

// ---------------------------------------------------------------------------
// Cases: [fn, seriesIndex, intParams, realParam, outputs, first defined index]
const cases = [];
function add(fn, si, ip, dp, outs, beg = outs.beg) {
    if (beg === undefined) throw new Error(`${fn}: no begin index`);
    cases.push({ fn, si, ip, dp, outs, beg });
}
const I = (v) => [v, 'i'], D = (v) => [v, 'd'];

for (let si = 0; si < series.length; si++) {
    const s = series[si][1];
    const c = s.close, h = s.high, l = s.low, v = s.volume;
    const full = si === 0;
    for (const p of full ? [5, 20] : [5]) add('sma', si, [p], 0, ta('SMA', [c], [I(p)], 1));
    for (const p of full ? [12, 26] : [5]) add('ema', si, [p], 0, ta('EMA', [c], [I(p)], 1));
    for (const p of full ? [10] : [5]) add('wma', si, [p], 0, ta('WMA', [c], [I(p)], 1));
    for (const p of full ? [14, 2] : [14]) add('rsi', si, [p], 0, ta('RSI', [c], [I(p)], 1));
    for (const [f, sl, sg] of full ? [[12, 26, 9], [3, 6, 2]] : [[5, 10, 4]])
        add('macd', si, [f, sl, sg], 0, ta('MACD', [c], [I(f), I(sl), I(sg)], 3));
    add('trange', si, [], 0, ta('TRANGE', [h, l, c], [], 1));
    for (const p of full ? [14, 1] : [14]) add('atr', si, [p], 0, ta('ATR', [h, l, c], [I(p)], 1));
    for (const p of full ? [14] : [14]) add('natr', si, [p], 0, ta('NATR', [h, l, c], [I(p)], 1));
    for (const [p, k] of full ? [[20, 2], [5, 1.5]] : [[20, 2]])
        add('bbands', si, [p], k, ta('BBANDS', [c], [I(p), D(k), D(k), I(0)], 3));
    for (const [p, k] of full ? [[20, 1], [10, 2]] : [[20, 1]])
        add('stddev', si, [p], k, ta('STDDEV', [c], [I(p), D(k)], 1));
    for (const p of full ? [1, 10] : [10]) add('roc', si, [p], 0, ta('ROC', [c], [I(p)], 1));
    for (const p of full ? [14, 5] : [14]) add('adx', si, [p], 0, ta('ADX', [h, l, c], [I(p)], 1));
    for (const p of full ? [14, 1] : [14]) {
        add('plus_di', si, [p], 0, ta('PLUS_DI', [h, l, c], [I(p)], 1));
        add('minus_di', si, [p], 0, ta('MINUS_DI', [h, l, c], [I(p)], 1));
    }
    for (const [fk, sk, sd] of full ? [[14, 3, 3], [5, 1, 1]] : [[5, 3, 3]])
        add('stoch', si, [fk, sk, sd], 0,
            ta('STOCH', [h, l, c], [I(fk), I(sk), I(0), I(sd), I(0)], 2));
    for (const [p, fk, fd] of full ? [[14, 5, 3], [5, 3, 1]] : [[14, 5, 3]])
        add('stochrsi', si, [p, fk, fd], 0, ta('STOCHRSI', [c], [I(p), I(fk), I(fd), I(0)], 2));
    for (const p of full ? [20] : [14]) add('cci', si, [p], 0, ta('CCI', [h, l, c], [I(p)], 1));
    for (const p of full ? [14] : [14]) add('willr', si, [p], 0, ta('WILLR', [h, l, c], [I(p)], 1));
    for (const p of full ? [14, 5] : [14]) add('mfi', si, [p], 0, ta('MFI', [h, l, c, v], [I(p)], 1));
    add('obv', si, [], 0, ta('OBV', [c, v], [], 1));

    // Compositions of TA-Lib functions for predictd's own kernels.
    for (const p of full ? [1, 5] : [1]) {
        const rocr = ta('ROCR', [c], [I(p)], 1)[0];
        add('ret', si, [p], 0, [rocr.map((x) => x - 1)], p);
        add('logret', si, [p], 0, [taTail('LN', rocr, [])], p);
    }
    const lr1 = taTail('LN', ta('ROCR', [c], [I(1)], 1)[0], []);
    for (const p of full ? [20, 5] : [20]) add('volatility', si, [p], 0, [taTail('STDDEV', lr1, [I(p), D(1)])], p);
    for (const p of full ? [20, 60] : [20]) {
        const sma = ta('SMA', [c], [I(p)], 1)[0];
        const sd = ta('STDDEV', [c], [I(p), D(1)], 1)[0];
        add('zscore', si, [p], 0, [c.map((x, i) => (x - sma[i]) / sd[i])], p - 1);
    }
    for (const p of full ? [20] : [20]) {
        const sma = ta('SMA', [v], [I(p)], 1)[0];
        add('volume_ratio', si, [p], 0, [v.map((x, i) => x / sma[i])], p - 1);
    }
}

// ---------------------------------------------------------------------------
// Printing. Inputs are printed exactly (JavaScript's shortest round-trip
// form); outputs with 13 significant digits (relative error <= 5e-14, far
// below the tests' 1e-9), which keeps the header small.
const num = (x, digits) => {
    if (Number.isNaN(x)) return 'NAN';
    if (!Number.isFinite(x)) return x > 0 ? 'INFINITY' : '-INFINITY';
    let t = x.toString();
    if (digits && t.replace(/^-|e.*$|\./g, '').replace(/^0+/, '').length > digits) {
        t = x.toPrecision(digits);
        t = t.includes('e') ? t.replace(/\.?0+e/, 'e') : t.replace(/\.?0+$/, '');
    }
    return /[.eE]|INF|NAN/.test(t) ? t : t + '.0';
};
function arr(name, a, digits) {
    const lines = [];
    for (let i = 0; i < a.length; i += 6)
        lines.push('    ' + a.slice(i, i + 6).map((x) => num(x, digits)).join(', '));
    return `static const double ${name}[${a.length}] = {\n${lines.join(',\n')}\n};\n`;
}
let o = '';
o += '/* Generated by tests/golden/gen_talib.mjs from TA-Lib (talib-web 0.1.3: TA-Lib C\n';
o += ' * compiled to WebAssembly, default settings). Do not edit; rerun the script.\n';
o += ' * Each output array holds the values from index beg on (TA-Lib\'s outBegIdx,\n';
o += ' * the lookback); before it every output is undefined (NaN in predictd). */\n';
o += '#ifndef PREDICTD_TALIB_GOLDEN_H\n#define PREDICTD_TALIB_GOLDEN_H\n\n#include <math.h>\n#include <stddef.h>\n\n';
for (const [name, s] of series) {
    for (const col of ['open', 'high', 'low', 'close', 'volume']) o += arr(`golden_${name}_${col}`, s[col]);
    o += '\n';
}
o += 'typedef struct golden_series {\n    const char *name;\n    size_t n;\n';
o += '    const double *open, *high, *low, *close, *volume;\n} golden_series;\n\n';
o += 'static const golden_series golden_series_list[] = {\n';
for (const [name, s] of series) {
    const p = `golden_${name}_`;
    o += `    {"${name}", ${s.close.length}, ${p}open, ${p}high, ${p}low, ${p}close, ${p}volume},\n`;
}
o += '};\n\n';
cases.forEach((cs, k) => {
    cs.outs.forEach((a, j) => (o += arr(`golden_out_${k}_${j}`, a.slice(cs.beg), 13)));
});
o += '\n/* fn: the predictd kernel (features_<fn>); ip: its integer parameters in\n';
o += ' * declaration order; dp: its real parameter (nbdev); out: its outputs in\n';
o += ' * declaration order, from index beg. */\n';
o += 'typedef struct golden_case {\n    const char *fn;\n    int series;\n    int ip[3];\n    double dp;\n';
o += '    size_t beg;\n    int nout;\n    const double *out[3];\n} golden_case;\n\n';
o += 'static const golden_case golden_cases[] = {\n';
cases.forEach((cs, k) => {
    const ip = [0, 1, 2].map((i) => cs.ip[i] ?? 0).join(', ');
    const outs = [0, 1, 2].map((j) => (j < cs.outs.length ? `golden_out_${k}_${j}` : 'NULL')).join(', ');
    o += `    {"${cs.fn}", ${cs.si}, {${ip}}, ${num(cs.dp)}, ${cs.beg}, ${cs.outs.length}, {${outs}}},\n`;
});
o += '};\n\n#endif\n';
process.stdout.write(o);
