/** The live status page: server-rendered shell, polling the JSON API (no front-end build). */
export function renderStatusPage(): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>doze</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; }
  h1 { font-size: 1.3rem; margin: 0 0 1rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #eee; }
  th { font-weight: 600; color: #555; }
  .state { font-weight: 600; padding: .1rem .45rem; border-radius: .6rem; }
  .running { background: #e3f6e8; color: #17692f; } .sleeping { background: #e7ecfb; color: #2842a5; }
  .pausing, .waking { background: #fff4d6; color: #8a5a00; } .failed { background: #fde4e4; color: #a11; }
  #updated { color: #888; font-size: .85rem; }
</style></head>
<body>
<h1>doze <span id="updated"></span></h1>
<table><thead><tr><th>instance</th><th>state</th><th>address</th><th>runtime</th><th>idle for</th><th>last wake</th><th>sleeps</th><th>wakes</th><th>checks answered</th><th>note</th></tr></thead>
<tbody id="rows"><tr><td colspan="10">loading…</td></tr></tbody></table>
<script>
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
async function refresh() {
  try {
    const list = await (await fetch('api/instances')).json();
    document.getElementById('rows').innerHTML = list.map((i) => '<tr data-id="' + esc(i.id) + '">' +
      '<td>' + esc(i.id) + '</td><td><span class="state ' + esc(i.state) + '">' + esc(i.state) + '</span></td>' +
      '<td>' + esc(i.address) + '</td><td>' + esc(i.runtime) + '</td><td>' + (i.idleForMs / 1000).toFixed(1) + ' s</td>' +
      '<td>' + (i.lastWakeMs === null ? '–' : i.lastWakeMs.toFixed(2) + ' ms') + '</td><td>' + i.sleeps + '</td><td>' + i.wakes + '</td>' +
      '<td>' + i.checksAnswered + '</td><td>' + esc(i.failure || i.heldBy || '') + '</td></tr>').join('') ||
      '<tr><td colspan="10">no instances</td></tr>';
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById('updated').textContent = 'agent unreachable';
  }
}
refresh(); setInterval(refresh, 500);
</script>
</body></html>`;
}
