// Turns the bench's result records into the tables: the one printed table (medians and ratios)
// and the detailed one in summary.md (median and min–max of every server and metric).

export const SCENARIO_ORDER = ['c1', 'c10', 'c100', 'p10', 'large', 'idle', 'scaling'];
export const SERVER_ORDER = ['tsmtpd', 'tsmtpd-buffered', 'tsmtpd-w2', 'smtp-server', 'aiosmtpd', 'smtp-sink'];

export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** The headline number of a run: msg/s, MB/s (10^6 bytes of payload per s) or KiB per idle connection. */
export function metricOf(r) {
  if (r.scenario === 'idle') return r.kib_per_conn;
  if (r.scenario === 'large') return r.mb_per_s;
  return r.msgs_per_s;
}
export function unitOf(scenario) {
  return scenario === 'idle' ? 'KiB/conn' : scenario === 'large' ? 'MB/s' : 'msg/s';
}

function fmt(v, scenario) {
  if (!Number.isFinite(v)) return '–';
  if (scenario === 'idle' || scenario === 'large') return v.toFixed(1);
  return Math.round(v).toLocaleString('en-US');
}
const fmtRatio = (v) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '–');
const fmtInt = (v) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : '–');
const fmt1 = (v) => (Number.isFinite(v) ? v.toFixed(1) : '–');

export function scenarioLabel(scenario, r) {
  if (!r) return scenario;
  const kib = (b) => (b >= 1048576 ? `${(b / 1048576).toFixed(0)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(0)} KiB` : `${b} B`);
  switch (scenario) {
    case 'idle': return `idle: ${r.conns} conns after EHLO`;
    case 'p10': return `p10: ${r.count} × ${kib(r.size)}, 10 conns, PIPELINING`;
    case 'scaling': return `scaling: ${r.count} × ${kib(r.size)}, ${r.conns} conns, unpinned`;
    default: return `${scenario}: ${r.count} × ${kib(r.size)}, ${r.conns} conn${r.conns === 1 ? '' : 's'}`;
  }
}

/** Groups the ok runs by scenario and server. */
function group(rows) {
  const by = new Map();
  for (const r of rows) {
    const key = `${r.scenario}\u0000${r.server}`;
    if (!by.has(key)) by.set(key, { all: [], ok: [] });
    by.get(key).all.push(r);
    if (r.ok) by.get(key).ok.push(r);
  }
  return (scenario, server) => by.get(`${scenario}\u0000${server}`) ?? { all: [], ok: [] };
}

function present(rows) {
  const scenarios = SCENARIO_ORDER.filter((s) => rows.some((r) => r.scenario === s));
  const servers = SERVER_ORDER.filter((s) => rows.some((r) => r.server === s));
  return { scenarios, servers };
}

/** The headline table: medians per server, tsmtpd/peer ratios, tsmtpd's CPU and peak RSS. */
export function mainTable(rows) {
  const get = group(rows);
  const { scenarios, servers } = present(rows);
  const peers = servers.filter((s) => !s.startsWith('tsmtpd'));
  const hasW2 = servers.includes('tsmtpd-w2');
  const head = ['scenario', 'unit', ...servers, ...peers.map((p) => `tsmtpd/${p}`)];
  const hasBuffered = servers.includes('tsmtpd-buffered');
  if (hasBuffered) head.push('buffered/tsmtpd');
  if (hasW2) head.push('w2/w1');
  head.push('tsmtpd CPU µs/msg', 'tsmtpd peak RSS MiB');
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((h, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  for (const sc of scenarios) {
    const med = (server) => median(get(sc, server).ok.map(metricOf));
    const cell = (server) => {
      const g = get(sc, server);
      if (g.all.length === 0) return '–';
      if (g.ok.length === 0) return `failed (0/${g.all.length})`;
      const v = fmt(med(server), sc);
      return g.ok.length < g.all.length ? `${v} (${g.ok.length}/${g.all.length} ok)` : v;
    };
    const any = rows.find((r) => r.scenario === sc && r.count) ?? rows.find((r) => r.scenario === sc);
    const row = [scenarioLabel(sc, any), unitOf(sc), ...servers.map(cell)];
    for (const p of peers) row.push(fmtRatio(med('tsmtpd') / med(p)));
    if (hasBuffered) row.push(fmtRatio(med('tsmtpd-buffered') / med('tsmtpd')));
    if (hasW2) row.push(fmtRatio(med('tsmtpd-w2') / med('tsmtpd')));
    const t = get(sc, 'tsmtpd').ok;
    row.push(sc === 'idle' ? '–' : fmtInt(median(t.map((r) => r.cpu_us_per_msg))));
    row.push(fmt1(median(t.map((r) => r.hwm_kb / 1024))));
    lines.push(`| ${row.join(' | ')} |`);
  }
  return lines.join('\n');
}

/** Every server and metric, median (min–max), for summary.md. */
export function detailTable(rows) {
  const get = group(rows);
  const { scenarios, servers } = present(rows);
  const range = (vals, f) => (vals.length === 0 ? '–'
    : vals.length === 1 ? f(vals[0]) : `${f(median(vals))} (${f(Math.min(...vals))}–${f(Math.max(...vals))})`);
  const lines = [
    '| scenario | server | ok runs | load from | result (min–max) | server CPU µs/msg | peak RSS MiB | client CPU µs/msg | background CPU % |',
    '|---|---|---|---|---:|---:|---:|---:|---:|',
  ];
  for (const sc of scenarios) {
    for (const sv of servers) {
      const g = get(sc, sv);
      if (g.all.length === 0) continue;
      const loadgens = [...new Set(g.all.map((r) => r.loadgen))].join(', ');
      lines.push(`| ${sc} | ${sv} | ${g.ok.length}/${g.all.length} | ${loadgens} | ` +
        `${range(g.ok.map(metricOf), (v) => fmt(v, sc))} ${unitOf(sc)} | ` +
        `${sc === 'idle' ? '–' : range(g.ok.map((r) => r.cpu_us_per_msg), fmtInt)} | ` +
        `${range(g.ok.map((r) => r.hwm_kb / 1024), fmt1)} | ` +
        `${sc === 'idle' ? '–' : range(g.ok.map((r) => (r.client_cpu_s / r.count) * 1e6), fmtInt)} | ` +
        `${sc === 'idle' ? '–' : range(g.ok.map((r) => r.background_cpu_pct), fmtInt)} |`);
    }
  }
  const bad = rows.filter((r) => !r.ok);
  if (bad.length) {
    lines.push('', 'Failed runs:');
    for (const r of bad) lines.push(`- ${r.server} ${r.scenario} rep ${r.rep}: ${r.note || 'failed'}`);
  }
  return lines.join('\n');
}
