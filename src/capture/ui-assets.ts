/**
 * The web UI: one page, one script, one stylesheet, served by tsmtpd itself (no CDN, no
 * network). The script builds every element with textContent, never innerHTML, so markup in a
 * subject or an address is text; a message's HTML is shown only in a sandboxed iframe (no
 * allow-scripts, no allow-same-origin) whose document carries its own sandboxing CSP.
 */

export const UI_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "frame-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const INDEX_HTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tsmtpd</title>
<link rel="stylesheet" href="/ui/app.css">
<script type="module" src="/ui/app.js"></script>
</head>
<body>
<header>
  <a href="#/" id="home">tsmtpd</a> <span id="label"></span>
  <form id="search-form" role="search"><input id="search" type="search" placeholder="Search (Mailpit syntax: from:a subject:&quot;b c&quot; is:unread ...)" aria-label="Search"></form>
  <span id="counts"></span>
  <button id="mark-read" type="button">Mark all read</button>
  <button id="delete-all" type="button">Delete all</button>
  <label><input id="remote" type="checkbox"> Load remote content</label>
  <span id="live" title="live updates">offline</span>
</header>
<main>
  <section id="list-view"><table id="list"><thead><tr><th>From</th><th>To</th><th>Subject</th><th>Received</th><th></th></tr></thead><tbody></tbody></table>
    <p id="empty" hidden>No messages.</p></section>
  <section id="message-view" hidden>
    <div id="message-head"></div>
    <nav id="tabs"><button data-tab="html" type="button">HTML</button><button data-tab="text" type="button">Text</button><button data-tab="headers" type="button">Headers</button><button data-tab="raw" type="button">Raw</button><button data-tab="attachments" type="button">Attachments</button>
      <button id="delete-one" type="button">Delete</button></nav>
    <div id="tab-html" class="tab"><iframe id="html-frame" title="message HTML" sandbox="allow-popups allow-popups-to-escape-sandbox" referrerpolicy="no-referrer"></iframe></div>
    <pre id="tab-text" class="tab"></pre>
    <table id="tab-headers" class="tab"><tbody></tbody></table>
    <pre id="tab-raw" class="tab"></pre>
    <ul id="tab-attachments" class="tab"></ul>
  </section>
</main>
</body>
</html>
`;

export const APP_CSS = `
body { font: 14px system-ui, sans-serif; margin: 0; color: #222; }
header { display: flex; gap: .6em; align-items: center; padding: .5em 1em; background: #23395d; color: #fff; flex-wrap: wrap; }
header a { color: #fff; font-weight: bold; text-decoration: none; }
#search-form { flex: 1; } #search { width: 100%; padding: .3em; }
#live.on { color: #8f8; }
main { padding: .5em 1em; }
table { border-collapse: collapse; width: 100%; }
#list td, #list th { text-align: left; padding: .3em .5em; border-bottom: 1px solid #ddd; max-width: 28em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#list tr.unread td { font-weight: bold; }
#list tbody tr { cursor: pointer; } #list tbody tr:hover { background: #eef3fb; }
.snippet { color: #777; font-weight: normal; }
#message-head dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: .5em 0; }
#message-head dt { color: #666; }
#tabs button.active { font-weight: bold; }
.tab { display: none; } .tab.active { display: block; }
#html-frame { width: 100%; height: 70vh; border: 1px solid #ccc; background: #fff; }
pre { white-space: pre-wrap; word-break: break-word; background: #f7f7f7; padding: .5em; }
#tab-headers td { border-bottom: 1px solid #eee; padding: .2em .5em; vertical-align: top; word-break: break-word; }
`;

export const APP_JS = String.raw`
const $ = (id) => document.getElementById(id);
const state = { query: '', messages: [], current: null, tab: 'html', reload: null };

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
const addr = (a) => (a ? (a.Name ? a.Name + ' <' + a.Address + '>' : a.Address) : '');
const addrs = (list) => (list || []).map(addr).join(', ');

async function api(path, init) {
  const res = await fetch(path, init);
  if (!res.ok) {
    let message = res.status + ' ' + res.statusText;
    try { message = (await res.json()).Error || message; } catch {}
    throw new Error(message);
  }
  return res.headers.get('content-type')?.startsWith('application/json') ? res.json() : res.text();
}
const send = (method, path, body) => api(path, { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body || {}) });

async function loadList() {
  const path = state.query ? '/api/v1/search?limit=200&query=' + encodeURIComponent(state.query) : '/api/v1/messages?limit=200';
  const data = await api(path);
  state.messages = data.messages;
  $('counts').textContent = data.total + ' messages, ' + data.unread + ' unread';
  renderList();
}

function renderList() {
  const body = $('list').tBodies[0];
  body.replaceChildren();
  for (const m of state.messages) {
    const row = el('tr', null, { 'data-id': m.ID });
    if (!m.Read) row.className = 'unread';
    row.append(el('td', addr(m.From)), el('td', addrs(m.To)));
    const subject = el('td', m.Subject || '(no subject)');
    subject.append(' ', el('span', m.Snippet, { class: 'snippet' }));
    row.append(subject, el('td', new Date(m.Created).toLocaleString()));
    const del = el('button', 'Delete', { type: 'button', class: 'delete' });
    del.addEventListener('click', (event) => { event.stopPropagation(); remove([m.ID]); });
    const cell = el('td'); cell.append(del); row.append(cell);
    row.addEventListener('click', () => { location.hash = '#/message/' + encodeURIComponent(m.ID); });
    body.append(row);
  }
  $('empty').hidden = state.messages.length > 0;
}

async function remove(ids) {
  await send('DELETE', '/api/v1/messages', { IDs: ids });
  if (state.current && ids.includes(state.current.ID)) location.hash = '#/';
  await loadList();
}

function showTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll('#tabs button[data-tab]')) b.classList.toggle('active', b.dataset.tab === tab);
  for (const t of document.querySelectorAll('.tab')) t.classList.toggle('active', t.id === 'tab-' + tab);
  const m = state.current;
  if (!m) return;
  if (tab === 'html') {
    $('html-frame').src = '/view/' + encodeURIComponent(m.ID) + '.html?embed=1' + ($('remote').checked ? '&remote=1' : '');
  } else if (tab === 'raw') {
    api('/api/v1/message/' + encodeURIComponent(m.ID) + '/raw').then((text) => { $('tab-raw').textContent = text; });
  } else if (tab === 'headers') {
    api('/api/v1/message/' + encodeURIComponent(m.ID) + '/headers').then((headers) => {
      const body = $('tab-headers').tBodies[0];
      body.replaceChildren();
      for (const [name, values] of Object.entries(headers)) for (const v of values) {
        const row = el('tr'); row.append(el('td', name), el('td', v)); body.append(row);
      }
    });
  }
}

async function openMessage(id) {
  const m = await api('/api/v1/message/' + encodeURIComponent(id));
  state.current = m;
  $('list-view').hidden = true;
  $('message-view').hidden = false;
  const dl = el('dl');
  for (const [k, v] of [['From', addr(m.From)], ['To', addrs(m.To)], ['Cc', addrs(m.Cc)], ['Subject', m.Subject], ['Date', m.Date], ['Tags', (m.Tags || []).join(', ')]]) {
    if (v) dl.append(el('dt', k), el('dd', v));
  }
  $('message-head').replaceChildren(dl);
  $('tab-text').textContent = m.Text;
  const list = $('tab-attachments');
  list.replaceChildren();
  for (const a of [...m.Attachments, ...m.Inline]) {
    const link = el('a', (a.FileName || 'part ' + a.PartID) + ' (' + a.ContentType + ', ' + a.Size + ' bytes)', {
      href: '/api/v1/message/' + encodeURIComponent(m.ID) + '/part/' + encodeURIComponent(a.PartID),
      download: a.FileName || 'part-' + a.PartID,
    });
    const item = el('li'); item.append(link); list.append(item);
  }
  showTab(m.HTML ? 'html' : 'text');
}

function route() {
  const match = /^#\/message\/(.+)$/.exec(location.hash);
  if (match) return openMessage(decodeURIComponent(match[1])).catch((e) => { alert(e.message); location.hash = '#/'; });
  state.current = null;
  $('html-frame').removeAttribute('src');
  $('message-view').hidden = true;
  $('list-view').hidden = false;
  return loadList();
}

function connect() {
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/api/events');
  ws.onopen = () => { $('live').textContent = 'live'; $('live').className = 'on'; };
  ws.onclose = () => { $('live').textContent = 'offline'; $('live').className = ''; setTimeout(connect, 2000); };
  ws.onmessage = (event) => {
    const { Type } = JSON.parse(event.data);
    if (Type === 'stats' || state.current) return;
    // A burst of mail is one reload, not one per message.
    if (state.reload) return;
    state.reload = setTimeout(() => { state.reload = null; loadList(); }, 200);
  };
}

$('search-form').addEventListener('submit', (event) => { event.preventDefault(); state.query = $('search').value.trim(); location.hash = '#/'; loadList(); });
$('search').addEventListener('search', () => { state.query = $('search').value.trim(); loadList(); });
$('delete-all').addEventListener('click', async () => { if (confirm('Delete all messages?')) { await send('DELETE', '/api/v1/messages', {}); location.hash = '#/'; await loadList(); } });
$('mark-read').addEventListener('click', async () => { await send('PUT', '/api/v1/messages', { Read: true }); await loadList(); });
$('delete-one').addEventListener('click', () => state.current && remove([state.current.ID]));
$('remote').addEventListener('change', () => { if (state.current && state.tab === 'html') showTab('html'); });
for (const b of document.querySelectorAll('#tabs button[data-tab]')) b.addEventListener('click', () => showTab(b.dataset.tab));
window.addEventListener('hashchange', route);
api('/api/v1/webui').then((ui) => { $('label').textContent = ui.Label; if (ui.Label) document.title = ui.Label + ' - tsmtpd'; });
route();
connect();
`;
