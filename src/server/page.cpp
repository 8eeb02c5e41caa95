// The web page at "/": one self-contained document (no external fonts, scripts or images), talking to
// the same WebUI API a script would, with progress from /sdrt/v1/events.
#include "server/server.h"

namespace sdrt::server {

const char* web_page() {
  return R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sdrt</title>
<style>
  :root { --bg: #111418; --panel: #1b2027; --line: #2c333d; --text: #e6e9ee; --dim: #9aa4b2; --accent: #4f8cff; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--text); }
  header { padding: 10px 16px; border-bottom: 1px solid var(--line); display: flex; gap: 12px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header span { color: var(--dim); }
  main { display: grid; grid-template-columns: minmax(280px, 380px) 1fr; gap: 16px; padding: 16px; }
  form, #out { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
  label { display: block; color: var(--dim); margin: 8px 0 3px; }
  textarea, input, select { width: 100%; background: var(--bg); color: var(--text); border: 1px solid var(--line); border-radius: 5px; padding: 6px; font: inherit; }
  textarea { min-height: 70px; resize: vertical; }
  .row { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
  button { margin-top: 12px; width: 100%; padding: 9px; border: 0; border-radius: 5px; background: var(--accent); color: white; font-weight: 600; cursor: pointer; }
  button.secondary { background: var(--line); }
  button:disabled { opacity: .5; cursor: default; }
  #bar { height: 8px; background: var(--bg); border-radius: 4px; overflow: hidden; margin: 6px 0; }
  #fill { height: 100%; width: 0; background: var(--accent); transition: width .2s; }
  #status { color: var(--dim); min-height: 1.4em; }
  #gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; margin-top: 10px; }
  figure { margin: 0; background: var(--bg); border: 1px solid var(--line); border-radius: 6px; overflow: hidden; }
  figure img { width: 100%; display: block; }
  figcaption { padding: 6px; color: var(--dim); font-size: 12px; white-space: pre-wrap; word-break: break-word; }
  @media (max-width: 760px) { main { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header><h1>sdrt</h1><span id="model">loading…</span></header>
<main>
<form id="f">
  <label for="prompt">Prompt</label>
  <textarea id="prompt">a photo of an astronaut riding a horse on mars</textarea>
  <label for="negative">Negative prompt</label>
  <textarea id="negative"></textarea>
  <div class="row">
    <div><label for="sampler">Sampler</label><select id="sampler"></select></div>
    <div><label for="steps">Steps</label><input id="steps" type="number" min="1" max="150" value="20"></div>
  </div>
  <div class="row">
    <div><label for="cfg">CFG scale</label><input id="cfg" type="number" step="0.5" min="1" max="30" value="7"></div>
    <div><label for="seed">Seed (-1 random)</label><input id="seed" type="number" value="-1"></div>
  </div>
  <div class="row">
    <div><label for="width">Width</label><input id="width" type="number" step="8" min="64" max="2048" value="512"></div>
    <div><label for="height">Height</label><input id="height" type="number" step="8" min="64" max="2048" value="512"></div>
  </div>
  <label for="batch">Batch size</label><input id="batch" type="number" min="1" max="8" value="1">
  <button id="go" type="submit">Generate</button>
  <button id="stop" class="secondary" type="button" disabled>Interrupt</button>
</form>
<section id="out">
  <div id="bar"><div id="fill"></div></div>
  <div id="status">idle</div>
  <img id="preview" alt="preview" style="width:128px;image-rendering:pixelated;display:none;margin-top:8px">
  <pre id="log" hidden></pre>
  <div id="gallery"></div>
</section>
</main>
<script>
const $ = id => document.getElementById(id);
async function getJSON(url) { const r = await fetch(url); if (!r.ok) throw new Error(url + ": " + r.status); return r.json(); }
async function init() {
  try {
    const samplers = await getJSON('/sdapi/v1/samplers');
    $('sampler').innerHTML = '';
    for (const s of samplers) { const o = document.createElement('option'); o.textContent = s.name; $('sampler').appendChild(o); }
    $('sampler').value = 'Euler a';
    const models = await getJSON('/sdapi/v1/sd-models');
    $('model').textContent = models.length ? models[0].title : '';
  } catch (e) { $('status').textContent = 'error: ' + e.message; }
}
let running = false, events = null;
// progress from server-sent events, subscribed only while a request runs
function onProgress(ev) {
  if (!running) return;
  const p = JSON.parse(ev.data);
  const st = p.state || {};
  if (st.sampling_steps > 0) {
    $('fill').style.width = (100 * p.progress).toFixed(1) + '%';
    $('log').textContent += `step ${st.sampling_step} / ${st.sampling_steps}\n`;
    $('status').textContent = `step ${st.sampling_step} / ${st.sampling_steps}` + (p.eta_relative > 0 ? `, about ${p.eta_relative.toFixed(1)} s left` : '') +
      (st.queue_length > 0 ? ` (${st.queue_length} queued)` : '');
  } else if (st.queue_length > 0) {
    $('status').textContent = `queued (${st.queue_length} waiting)`;
  }
  if (p.current_image) { $('preview').src = 'data:image/png;base64,' + p.current_image; $('preview').style.display = 'block'; }
}
$('stop').onclick = () => fetch('/sdapi/v1/interrupt', {method: 'POST'});
$('f').onsubmit = async ev => {
  ev.preventDefault();
  const body = {
    prompt: $('prompt').value, negative_prompt: $('negative').value, sampler_name: $('sampler').value,
    steps: +$('steps').value, cfg_scale: +$('cfg').value, seed: +$('seed').value,
    width: +$('width').value, height: +$('height').value, batch_size: +$('batch').value
  };
  running = true; $('go').disabled = true; $('stop').disabled = false;
  events = new EventSource('/sdrt/v1/events');
  events.onmessage = onProgress;
  $('fill').style.width = '0'; $('status').textContent = 'starting…';
  // subscribe before submitting, so that a short job's steps are not missed (without the stream, after 2 s, go on)
  await new Promise(ok => { events.onopen = ok; events.onerror = ok; setTimeout(ok, 2000); });
  const t0 = performance.now();
  try {
    const r = await fetch('/sdapi/v1/txt2img', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
    const j = await r.json();
    if (!r.ok || j.error) throw new Error(j.detail || JSON.stringify(j.error || j));
    const info = JSON.parse(j.info);
    const figs = j.images.map((b64, i) => {
      const fig = document.createElement('figure');
      const img = document.createElement('img');
      img.src = 'data:image/png;base64,' + b64;
      img.alt = info.all_prompts[i];
      const cap = document.createElement('figcaption');
      cap.textContent = info.infotexts[i];
      fig.appendChild(img); fig.appendChild(cap);
      return fig;
    });
    $('gallery').prepend(...figs);  // newest request first, its images in seed order
    $('fill').style.width = '100%';
    $('preview').style.display = 'none';
    $('status').textContent = j.images.length ? `done: ${j.images.length} image(s) in ${((performance.now() - t0) / 1000).toFixed(1)} s` : 'interrupted';
  } catch (e) {
    $('status').textContent = 'error: ' + e.message;
  } finally {
    running = false; $('go').disabled = false; $('stop').disabled = true;
    if (events) { events.close(); events = null; }
  }
};
// ?prompt=...&steps=...&autorun=1 fills the form from the address (and submits it): shareable links, tests
async function start() {
  await init();
  const q = new URLSearchParams(location.search);
  const fields = {prompt: 'prompt', negative_prompt: 'negative', sampler_name: 'sampler', steps: 'steps', cfg_scale: 'cfg', seed: 'seed',
                  width: 'width', height: 'height', batch_size: 'batch'};
  for (const [k, id] of Object.entries(fields)) if (q.has(k)) $(id).value = q.get(k);
  if (q.get('autorun') === '1') $('f').requestSubmit();
}
start();
</script>
</body>
</html>
)HTML";
}

}  // namespace sdrt::server
