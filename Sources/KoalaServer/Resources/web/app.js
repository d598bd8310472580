// KoalaBooth web UI: a single page over the /v1 API, with hash routes
// (#/, #/new, #/subjects/ID, #/jobs/ID). The API key lives in this tab's
// sessionStorage and goes with every request; API images need it too, so they are
// fetched as blobs and shown through object URLs. Text from the API only ever goes in
// through textContent (`el`), never as HTML.
'use strict';

const KEY_STORAGE = 'koalabooth.key';
const view = document.getElementById('view');
const FINISHED = new Set(['succeeded', 'failed', 'canceled']);

// What the current view holds open: aborted and revoked when the view changes.
let viewScope = newScope();

function newScope() {
  return { controller: new AbortController(), urls: [] };
}

function closeScope() {
  viewScope.controller.abort();
  for (const url of viewScope.urls) URL.revokeObjectURL(url);
  viewScope = newScope();
}

// ---- DOM ----

/** An element with properties or attributes from `props` and text or element children. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name in node && typeof value !== 'string') node[name] = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  view.replaceChildren(...nodes);
}

function errorBox(message) {
  return el('p', { class: 'error', role: 'alert', text: message });
}

// ---- API ----

class APIError extends Error {
  constructor(status, code, message, photos) {
    super(message);
    this.status = status;
    this.code = code;
    this.photos = photos || [];
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

/** `method path` with the key; JSON in (`json`) or a FormData (`form`); the parsed
 *  JSON out (null for 204). Errors become `APIError`; a 401 also logs out. */
async function api(method, path, { json, form, signal } = {}) {
  const headers = { Authorization: `Bearer ${apiKey()}` };
  let body;
  if (json !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
  if (form !== undefined) body = form;
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal: signal || viewScope.controller.signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new APIError(0, 'network', `cannot reach the server (${e.message}); is koalabooth serve still running?`);
  }
  return readResponse(response);
}

async function readResponse(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (response.ok) return data;
  const error = (data && data.error) || {};
  const failure = new APIError(response.status, error.code || `http_${response.status}`,
    error.message || `the server answered ${response.status} ${response.statusText}`, error.photos);
  if (response.status === 401) logout(failure.message);
  throw failure;
}

/** An API image as an object URL (revoked with the view) and its bytes. */
async function apiImage(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${apiKey()}` }, signal: viewScope.controller.signal });
  if (!response.ok) await readResponse(response);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  viewScope.urls.push(url);
  return { url, bytes: await blob.arrayBuffer() };
}

/** An <img> that fills in once the API image has loaded. */
function apiImg(path, alt, onBytes) {
  const img = el('img', { alt, loading: 'lazy' });
  apiImage(path).then(({ url, bytes }) => {
    img.src = url;
    if (onBytes) onBytes(bytes);
  }).catch((e) => {
    if (e.name !== 'AbortError') img.replaceWith(el('div', { class: 'placeholder', text: `image unavailable: ${e.message}` }));
  });
  return img;
}

/** Server-Sent Events from `path` (fetch, since EventSource cannot send the key):
 *  calls `onEvent(name, data)` per event, data parsed as JSON. Resolves when the
 *  stream ends. */
async function followEvents(path, onEvent, signal) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${apiKey()}`, Accept: 'text/event-stream' }, signal });
  if (!response.ok) { await readResponse(response); return; }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parser = new EventStreamParser(onEvent);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.push(decoder.decode(value, { stream: true }));
  }
  parser.push(decoder.decode());
  parser.end();
}

/** The text/event-stream format (HTML's "event stream interpretation"): lines of
 *  `field: value`, an event ends at a blank line; `data` lines join with newlines;
 *  lines starting with ':' are comments (keep-alives). */
class EventStreamParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.event = '';
    this.data = [];
  }

  push(text) {
    this.buffer += text;
    // A lone '\r' at the end may be the first half of "\r\n": wait for more.
    const lines = this.buffer.split(/\r\n|\n|\r(?!$)/);
    this.buffer = lines.pop();
    for (const line of lines) this.line(line);
  }

  end() {
    if (this.buffer) this.line(this.buffer.replace(/\r$/, ''));
    this.buffer = '';
  }

  line(line) {
    if (line === '') { this.dispatch(); return; }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
  }

  dispatch() {
    if (this.data.length === 0) { this.reset(); return; }
    const name = this.event || 'message';
    const text = this.data.join('\n');
    this.reset();
    let data = text;
    try { data = JSON.parse(text); } catch { /* not JSON: pass the text */ }
    this.onEvent(name, data);
  }
}

/** A PNG's tEXt and (uncompressed) iTXt chunks, where KoalaBooth writes every
 *  parameter of an image. */
function pngText(bytes) {
  const data = new DataView(bytes);
  const out = {};
  const latin1 = new TextDecoder('latin1'), utf8 = new TextDecoder('utf-8');
  const signature = [137, 80, 78, 71, 13, 10, 26, 10];
  if (bytes.byteLength < 8 || signature.some((b, i) => data.getUint8(i) !== b)) return out;
  let at = 8;
  while (at + 12 <= bytes.byteLength) {
    const length = data.getUint32(at);
    const type = latin1.decode(new Uint8Array(bytes, at + 4, 4));
    const body = new Uint8Array(bytes, at + 8, Math.min(length, bytes.byteLength - at - 8));
    if (type === 'tEXt' || type === 'iTXt') {
      const nul = body.indexOf(0);
      if (nul > 0) {
        const key = latin1.decode(body.subarray(0, nul));
        if (type === 'tEXt') {
          out[key] = latin1.decode(body.subarray(nul + 1));
        } else if (body[nul + 1] === 0) {
          // iTXt: compression flag, method, language tag NUL, translated keyword NUL, text.
          let p = nul + 3;
          p = body.indexOf(0, p) + 1;
          p = body.indexOf(0, p) + 1;
          if (p > 0) out[key] = utf8.decode(body.subarray(p));
        }
      }
    }
    if (type === 'IEND') break;
    at += 12 + length;
  }
  return out;
}

// ---- Formatting ----

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function number(value, digits = 4) {
  return value === null || value === undefined ? '—' : Number(value).toPrecision(digits);
}

function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function badge(status) {
  return status ? el('span', { class: `badge ${status}`, text: status }) : null;
}

// ---- Login ----

function logout(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  document.getElementById('nav').hidden = true;
  closeScope();
  loginView(message);
}

function loginView(message) {
  const input = el('input', { id: 'key', type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'kb_…', required: true });
  const status = el('div');
  if (message) status.append(errorBox(message));
  const button = el('button', { type: 'submit', id: 'login', text: 'Log in' });
  const form = el('form', { class: 'card login', onsubmit: async (event) => {
    event.preventDefault();
    status.replaceChildren();
    button.disabled = true;
    sessionStorage.setItem(KEY_STORAGE, input.value.trim());
    try {
      await api('GET', '/v1/models');
      route();
    } catch (e) {
      if (e.status !== 401) { sessionStorage.removeItem(KEY_STORAGE); status.append(errorBox(e.message)); }
    } finally {
      button.disabled = false;
    }
  } },
  el('h1', { text: 'Log in' }),
  el('p', { class: 'muted', text: 'Paste an API key of this server. Make one with: koalabooth keys create NAME' }),
  el('label', { for: 'key', text: 'API key' }), input, status,
  el('div', { class: 'actions' }, button));
  show(form);
  input.focus();
}

// ---- Subjects ----

async function subjectsView() {
  const list = el('ul', { class: 'subjects', id: 'subjects' });
  show(el('div', { class: 'row spread' }, el('h1', { text: 'Subjects' }), el('a', { class: 'button', href: '#/new', text: 'New subject' })),
    el('p', { class: 'muted', text: 'Each subject is a set of 3–20 photos of one dog, person or thing, trained into a LoRA.' }), list);
  const { subjects } = await api('GET', '/v1/subjects');
  if (subjects.length === 0) {
    list.replaceWith(el('div', { class: 'card' }, el('p', { text: 'No subjects yet. ' }, el('a', { href: '#/new', text: 'Create one from a few photos.' }))));
    return;
  }
  for (const s of subjects) {
    list.append(el('li', {}, el('a', { href: `#/subjects/${s.id}` }, el('div', { class: 'card' },
      el('div', { class: 'row spread' }, el('span', { class: 'name', text: s.name }), badge(s.last_run_status)),
      el('div', { class: 'small', text: `${s.token} ${s.class}` }),
      el('div', { class: 'small muted', text: `${s.photo_count} photos · ${s.run_count} trainings · ${s.generation_count} generations` })))));
  }
}

// ---- New subject ----

function newSubjectView() {
  const files = []; // { file, url, item, problem }
  const thumbs = el('ul', { class: 'thumbs', id: 'thumbs' });
  const status = el('div', { id: 'form-status' });
  const picker = el('input', { type: 'file', id: 'photos', multiple: true, accept: 'image/jpeg,image/png' });
  const drop = el('label', { class: 'drop', for: 'photos' },
    el('strong', { text: 'Drop photos here' }), el('br'), el('span', { class: 'muted small', text: 'or tap to choose files (JPEG or PNG, at least 256 px on the shorter side)' }), picker);

  function addFiles(list) {
    for (const file of list) {
      const entry = { file, url: URL.createObjectURL(file) };
      viewScope.urls.push(entry.url);
      const img = el('img', { alt: file.name, src: entry.url, onerror: () => img.replaceWith(el('div', { class: 'placeholder', text: 'no preview' })) });
      entry.problem = el('div', { class: 'problem', hidden: true });
      entry.item = el('li', { class: 'thumb' }, img, el('div', { class: 'caption', text: file.name }), entry.problem,
        el('button', { type: 'button', class: 'remove', title: `Remove ${file.name}`, 'aria-label': `Remove ${file.name}`, text: '×', onclick: () => {
          files.splice(files.indexOf(entry), 1);
          entry.item.remove();
        } }));
      files.push(entry);
      thumbs.append(entry.item);
    }
  }

  picker.addEventListener('change', () => { addFiles(picker.files); picker.value = ''; });
  for (const name of ['dragenter', 'dragover']) drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add('over'); });
  for (const name of ['dragleave', 'drop']) drop.addEventListener(name, () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); addFiles(e.dataTransfer.files); });

  const name = el('input', { id: 'name', required: true, autocomplete: 'off', placeholder: 'rex' });
  const classNoun = el('input', { id: 'class', required: true, placeholder: 'dog' });
  const token = el('input', { id: 'token', value: 'sks' });
  const create = el('button', { type: 'submit', id: 'create', text: 'Create subject' });

  const form = el('form', { class: 'card', onsubmit: async (event) => {
    event.preventDefault();
    status.replaceChildren();
    for (const f of files) { f.item.classList.remove('bad'); f.problem.hidden = true; }
    const body = new FormData();
    body.append('name', name.value.trim());
    body.append('class', classNoun.value.trim());
    body.append('token', token.value.trim());
    for (const f of files) body.append('photos', f.file, f.file.name);
    create.disabled = true;
    try {
      const created = await api('POST', '/v1/subjects', { form: body });
      sessionStorage.setItem('koalabooth.notices', JSON.stringify(created.notices.map((n) => n.message)));
      location.hash = `#/subjects/${created.subject.id}`;
    } catch (e) {
      if (e.name === 'AbortError') return;
      // Each unusable file's problem goes beside its thumbnail; the summary on top.
      for (const p of e.photos) {
        const entry = files[p.index];
        if (!entry) continue;
        entry.item.classList.add('bad');
        entry.problem.textContent = p.message;
        entry.problem.hidden = false;
      }
      status.append(errorBox(e.photos.length ? `${e.photos.length === 1 ? '1 photo cannot' : `${e.photos.length} photos cannot`} be used (marked below); nothing was stored. Remove or replace it and try again.` : e.message));
    } finally {
      create.disabled = false;
    }
  } },
  el('h1', { text: 'New subject' }),
  el('div', { class: 'fields' },
    el('div', {}, el('label', { for: 'name', text: 'Name' }), name),
    el('div', {}, el('label', { for: 'class', text: 'Class' }), classNoun),
    el('div', {}, el('label', { for: 'token', text: 'Token' }), token)),
  el('p', { class: 'muted small', text: 'The class says what the subject is (dog, woman, coffee mug); the token is a rare word that will stand for this one in prompts.' }),
  drop, thumbs, status,
  el('div', { class: 'actions' }, create));
  show(form);
}

// ---- Subject page ----

async function subjectView(id) {
  const subject = await api('GET', `/v1/subjects/${id}`);
  const notices = JSON.parse(sessionStorage.getItem('koalabooth.notices') || '[]');
  sessionStorage.removeItem('koalabooth.notices');

  const title = el('h1', { id: 'subject-name', text: subject.name });
  const header = el('div', { class: 'card' }, title,
    el('p', { class: 'muted', text: `${subject.token} ${subject.class} · ${subject.photo_count} photos · created ${when(subject.created_at)}` }),
    notices.map((n) => el('p', { class: 'notice', text: n })),
    subject.notes ? el('p', { text: subject.notes }) : null);

  const photos = el('ul', { class: 'thumbs', id: 'subject-photos' });
  for (const p of subject.photos || []) {
    photos.append(el('li', { class: 'thumb' }, apiImg(`/v1/subjects/${id}/photos/${p.id}/image`, p.original_name),
      el('div', { class: 'caption', text: `${p.original_name} · ${p.width}×${p.height}` })));
  }

  show(header, el('section', { class: 'card' }, el('h2', { text: 'Photos' }), photos),
    trainingSection(subject), generationSection(subject), manageSection(subject, title));
}

function manageSection(subject, title) {
  const input = el('input', { id: 'rename', value: subject.name, autocomplete: 'off' });
  const status = el('div');
  const rename = el('form', { onsubmit: async (event) => {
    event.preventDefault();
    status.replaceChildren();
    try {
      const renamed = await api('PATCH', `/v1/subjects/${subject.id}`, { json: { name: input.value.trim() } });
      subject.name = renamed.name;
      title.textContent = renamed.name;
      status.append(el('p', { class: 'notice', text: `Renamed to ${renamed.name}.` }));
    } catch (e) { if (e.name !== 'AbortError') status.append(errorBox(e.message)); }
  } }, el('label', { for: 'rename', text: 'Name' }), el('div', { class: 'row' }, input, el('button', { type: 'submit', id: 'rename-button', class: 'secondary', text: 'Rename' })));

  const confirm = el('div', { class: 'confirm', hidden: true });
  const remove = el('button', { type: 'button', class: 'danger', id: 'delete', text: 'Delete subject…', onclick: () => {
    confirm.hidden = false;
    remove.hidden = true;
  } });
  confirm.append(el('p', { text: `Delete ${subject.name}, its photos, trainings and images? This cannot be undone.` }),
    el('div', { class: 'row' },
      el('button', { type: 'button', class: 'danger', id: 'delete-confirm', text: 'Delete', onclick: async () => {
        try {
          await api('DELETE', `/v1/subjects/${subject.id}`);
          location.hash = '#/';
        } catch (e) { if (e.name !== 'AbortError') status.append(errorBox(e.message)); }
      } }),
      el('button', { type: 'button', class: 'secondary', text: 'Keep', onclick: () => { confirm.hidden = true; remove.hidden = false; } })));
  return el('section', { class: 'card' }, el('h2', { text: 'Manage' }), rename, el('div', { class: 'actions' }, remove, confirm), status);
}

/** The recipe picker and the subject's trainings. */
function trainingSection(subject) {
  const section = el('section', { class: 'card', id: 'training' }, el('h2', { text: 'Training' }));
  const recipe = el('select', { id: 'recipe' });
  const model = el('select', { id: 'model' });
  const maxSteps = el('input', { id: 'max-steps', type: 'number', min: '1', placeholder: 'the recipe’s' });
  const status = el('div', { id: 'training-status' });
  const jobs = el('ul', { class: 'jobs' });
  const start = el('button', { type: 'submit', id: 'start-training', text: 'Start training' });
  section.append(el('form', { onsubmit: async (event) => {
    event.preventDefault();
    status.replaceChildren();
    const body = { recipe: recipe.value, model: model.value };
    if (maxSteps.value) body.max_steps = Number(maxSteps.value);
    start.disabled = true;
    try {
      const job = await api('POST', `/v1/subjects/${subject.id}/trainings`, { json: body });
      location.hash = `#/jobs/${job.id}`;
    } catch (e) {
      if (e.name === 'AbortError') return;
      status.append(errorBox(e.status === 404 && e.code === 'not_found' ? 'This server cannot start trainings yet (no trainings endpoint).' : e.message));
    } finally { start.disabled = false; }
  } },
  el('div', { class: 'fields' },
    el('div', {}, el('label', { for: 'recipe', text: 'Recipe' }), recipe),
    el('div', {}, el('label', { for: 'model', text: 'Model' }), model),
    el('div', {}, el('label', { for: 'max-steps', text: 'Steps' }), maxSteps)),
  status, el('div', { class: 'actions' }, start)), jobs);

  const recipesLoaded = api('GET', '/v1/recipes').then(({ recipes }) => {
    recipe.replaceChildren(...recipes.map((r) => el('option', { value: r.name, text: r.name })));
    if (recipes.length === 0) status.append(errorBox('The server offers no recipes: start it with --recipes DIR holding NAME.toml files.'));
  });
  const modelsLoaded = api('GET', '/v1/models').then(({ models }) => {
    model.replaceChildren(...models.map((m) => el('option', { value: m.name, text: m.name })));
    if (models.length === 0) status.append(errorBox('The server has no models: start it with --model NAME=DIR.'));
  });
  // A recipe named after the model (tiny for tiny) is the likely choice.
  const pickRecipe = () => { if ([...recipe.options].some((o) => o.value === model.value)) recipe.value = model.value; };
  model.addEventListener('change', pickRecipe);
  Promise.all([recipesLoaded, modelsLoaded]).then(pickRecipe)
    .catch((e) => { if (e.name !== 'AbortError') status.append(errorBox(e.message)); });
  subjectJobs(subject, 'training').then((list) => {
    for (const job of list) {
      jobs.append(el('li', { class: 'row spread' }, el('a', { href: `#/jobs/${job.id}`, text: `Training #${job.id} · ${job.model}` }),
        el('span', { class: 'small' }, badge(job.status), ` step ${job.step}/${job.total}`)));
    }
  }).catch((e) => { if (e.name !== 'AbortError') status.append(errorBox(e.message)); });
  return section;
}

/** The subject's jobs of `kind`, newest first; none while the server has no jobs endpoint. */
async function subjectJobs(subject, kind) {
  try {
    const { jobs } = await api('GET', '/v1/jobs');
    return jobs.filter((j) => j.kind === kind && j.subject_id === subject.id).sort((a, b) => b.id - a.id);
  } catch (e) {
    if (e.name === 'AbortError' || e.status === 404) return [];
    throw e;
  }
}

/** The generation form and the gallery of the subject's images with their parameters. */
function generationSection(subject) {
  const prompt = el('textarea', { id: 'prompt', text: `a photo of ${subject.token} ${subject.class}` });
  const negative = el('input', { id: 'negative-prompt', placeholder: 'blurry, low quality' });
  const numberField = (id, label, attrs) => {
    const input = el('input', { id, type: 'number', ...attrs });
    return [input, el('div', {}, el('label', { for: id, text: label }), input)];
  };
  const [steps, stepsField] = numberField('steps', 'Steps', { min: '1', value: '20' });
  const [guidance, guidanceField] = numberField('guidance', 'Guidance', { min: '0', step: '0.1', value: '7.5' });
  const [seed, seedField] = numberField('seed', 'Seed', { min: '0', placeholder: 'random' });
  const [width, widthField] = numberField('width', 'Width', { min: '64', step: '8', placeholder: 'model’s' });
  const [height, heightField] = numberField('height', 'Height', { min: '64', step: '8', placeholder: 'model’s' });
  const [count, countField] = numberField('count', 'Images', { min: '1', max: '8', value: '1' });
  const status = el('div', { id: 'generation-status' });
  const progress = el('div', { id: 'generation-progress' });
  const gallery = el('ul', { class: 'gallery', id: 'gallery' });
  const generate = el('button', { type: 'submit', id: 'generate', text: 'Generate' });

  async function fillGallery() {
    const jobs = (await subjectJobs(subject, 'generation')).filter((j) => j.status === 'succeeded');
    gallery.replaceChildren();
    for (const job of jobs) for (const image of job.images || []) gallery.append(galleryItem(job, image));
    if (!gallery.children.length) gallery.append(el('li', { class: 'muted small', text: 'No images yet.' }));
  }

  const form = el('form', { onsubmit: async (event) => {
    event.preventDefault();
    status.replaceChildren();
    const body = { subject: subject.id, prompt: prompt.value };
    if (negative.value) body.negative_prompt = negative.value;
    for (const [name, input] of [['steps', steps], ['guidance', guidance], ['seed', seed], ['width', width], ['height', height], ['count', count]]) {
      if (input.value !== '') body[name] = Number(input.value);
    }
    generate.disabled = true;
    try {
      const job = await api('POST', '/v1/generations', { json: body });
      progress.replaceChildren(el('p', { class: 'small' }, 'Generation ', el('a', { href: `#/jobs/${job.id}`, text: `#${job.id}` }), ' ', badge(job.status)));
      await watchJob(job, { onEvent: (name, data) => {
        if (name === 'progress') progress.replaceChildren(el('p', { class: 'small', text: `Generation #${job.id}: step ${data.step}/${data.total}, ${duration(data.eta_seconds)} left` }));
      } }).then((finished) => {
        progress.replaceChildren(el('p', { class: 'small' }, `Generation #${finished.id} `, badge(finished.status), finished.error ? ` ${finished.error.message}` : ''));
      });
      await fillGallery();
    } catch (e) {
      if (e.name === 'AbortError') return;
      status.append(errorBox(e.status === 404 && e.code === 'not_found' ? 'This server cannot generate yet (no generations endpoint).' : e.message));
    } finally { generate.disabled = false; }
  } },
  el('label', { for: 'prompt', text: 'Prompt' }), prompt,
  el('label', { for: 'negative-prompt', text: 'Negative prompt' }), negative,
  el('div', { class: 'fields' }, stepsField, guidanceField, seedField, widthField, heightField, countField),
  status, el('div', { class: 'actions' }, generate), progress);

  fillGallery().catch((e) => { if (e.name !== 'AbortError') status.append(errorBox(e.message)); });
  return el('section', { class: 'card', id: 'generation' }, el('h2', { text: 'Generate' }), form, el('h2', { class: 'actions', text: 'Gallery' }), gallery);
}

const SHOWN_PARAMETERS = [['prompt', 'Prompt'], ['negative_prompt', 'Negative'], ['seed', 'Seed'], ['steps', 'Steps'],
  ['guidance', 'Guidance'], ['scheduler', 'Scheduler'], ['lora_scale', 'LoRA scale']];

function galleryItem(job, image) {
  const params = el('dl', { class: 'params' });
  const caption = el('figcaption', {}, el('div', { class: 'muted', text: `generation #${job.id}, image ${image.index + 1} · ${when(job.finished_at)}` }), params);
  const img = apiImg(image.url, `image ${image.index} of generation ${job.id}`, (bytes) => {
    const text = pngText(bytes);
    for (const [key, label] of SHOWN_PARAMETERS) {
      if (text[key]) params.append(el('dt', { text: label }), el('dd', { text: text[key] }));
    }
    if (text.width && text.height) params.append(el('dt', { text: 'Size' }), el('dd', { text: `${text.width}×${text.height}` }));
  });
  return el('li', {}, el('figure', {}, img, caption));
}

// ---- Jobs ----

/** Follows `job` over its event stream until it finishes (reconnecting if the stream
 *  drops), calling `onEvent` per event; resolves with the finished job. */
async function watchJob(job, { onEvent }) {
  const signal = viewScope.controller.signal;
  while (!FINISHED.has(job.status)) {
    let finished = null;
    try {
      await followEvents(`/v1/jobs/${job.id}/events`, (name, data) => {
        if (name === 'finished') finished = data;
        onEvent(name, data);
      }, signal);
    } catch (e) {
      if (e.name === 'AbortError' || e.status === 401 || e.status === 404) throw e;
    }
    job = finished || await api('GET', `/v1/jobs/${job.id}`);
    if (!finished && !FINISHED.has(job.status)) await new Promise((r) => setTimeout(r, 1000));
  }
  return job;
}

async function jobView(id) {
  let job = await api('GET', `/v1/jobs/${id}`);
  const training = job.kind === 'training';
  const status = el('span', { id: 'job-status' });
  const bar = el('progress', { max: 1, value: 0 });
  const stat = (label, id) => { const b = el('b', { id }); return [b, el('div', { class: 'stat' }, el('span', { class: 'small muted', text: label }), b)]; };
  const [step, stepStat] = stat('Step', 'job-step');
  const [loss, lossStat] = stat('Loss', 'job-loss');
  const [speed, speedStat] = stat('Seconds per step', 'job-speed');
  const [eta, etaStat] = stat('Time left', 'job-eta');
  const canvas = el('canvas', { class: 'chart', id: 'loss-chart', 'aria-label': 'training loss by step' });
  const chart = new LossChart(canvas);
  const checkpoints = el('p', { class: 'small muted', id: 'job-checkpoints' });
  const images = el('ul', { class: 'gallery', id: 'validation-images' });
  const errorSlot = el('div');
  const cancel = el('button', { type: 'button', class: 'secondary', id: 'cancel', text: 'Cancel', onclick: async () => {
    try { await api('POST', `/v1/jobs/${job.id}/cancel`); } catch (e) { if (e.name !== 'AbortError') errorSlot.replaceChildren(errorBox(e.message)); }
  } });
  const seenImages = new Set();
  const checkpointSteps = [];

  function addImage(v) {
    const key = v.url;
    if (seenImages.has(key)) return;
    seenImages.add(key);
    images.append(el('li', {}, el('figure', {}, apiImg(v.url, `validation image at step ${v.step}`),
      el('figcaption', {}, el('div', { class: 'muted', text: `step ${v.step}` }), el('div', { text: v.prompt || '' })))));
  }

  function addCheckpoint(at) {
    if (at !== null && !checkpointSteps.includes(at)) checkpointSteps.push(at);
    checkpoints.textContent = checkpointSteps.length ? `Checkpoints at steps ${checkpointSteps.join(', ')}` : 'No checkpoint yet.';
  }

  function progress(p) {
    step.textContent = `${p.step} / ${p.total}`;
    bar.max = Math.max(1, p.total || 1);
    bar.value = p.step || 0;
    loss.textContent = number(p.loss);
    speed.textContent = p.seconds_per_step === null || p.seconds_per_step === undefined ? '—' : Number(p.seconds_per_step).toFixed(2);
    eta.textContent = duration(p.eta_seconds);
    if (p.loss !== null && p.loss !== undefined) chart.add(p.step, p.loss);
  }

  function render(j) {
    status.replaceChildren(badge(j.status));
    progress(j);
    if (FINISHED.has(j.status)) { eta.textContent = '—'; cancel.hidden = true; }
    for (const c of j.checkpoints || []) addCheckpoint(c.step);
    addCheckpoint(null);
    for (const v of j.validation_images || []) addImage(v);
    for (const image of j.images || []) addImage({ step: j.total, url: image.url, prompt: `image ${image.index}` });
    errorSlot.replaceChildren(...(j.error ? [errorBox(`${j.error.code}: ${j.error.message}`)] : []));
  }

  show(el('div', { class: 'card' },
    el('div', { class: 'row spread' }, el('h1', { text: `${training ? 'Training' : 'Generation'} #${job.id}` }), status),
    el('p', { class: 'muted small' }, `model ${job.model || '—'} · queued ${when(job.created_at)} · `,
      job.subject_id ? el('a', { href: `#/subjects/${job.subject_id}`, text: 'back to the subject' }) : null),
    bar, el('div', { class: 'stats' }, stepStat, lossStat, speedStat, etaStat), errorSlot, el('div', { class: 'row' }, cancel)),
  training ? el('section', { class: 'card' }, el('h2', { text: 'Loss' }), canvas, checkpoints) : null,
  el('section', { class: 'card' }, el('h2', { text: training ? 'Validation images' : 'Images' }), images));
  render(job);
  chart.draw();
  job = await watchJob(job, { onEvent: (name, data) => {
    if (name === 'progress') { status.replaceChildren(badge('running')); progress(data); }
    else if (name === 'checkpoint') addCheckpoint(data.step);
    else if (name === 'validation_image') addImage(data);
  } });
  render(job);
}

/** Loss by step on a canvas: the points so far, the axes' ranges written at the ends. */
class LossChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.points = [];
    this.resize = () => this.draw();
    window.addEventListener('resize', this.resize, { signal: viewScope.controller.signal });
  }

  add(step, loss) {
    const last = this.points[this.points.length - 1];
    if (last && last.step === step) last.loss = loss;
    else if (!last || step > last.step) this.points.push({ step, loss });
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 300, h = canvas.clientHeight || 220;
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
    const g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    g.font = '12px system-ui, sans-serif';
    g.fillStyle = '#5f6b73';
    const pad = { left: 52, right: 12, top: 12, bottom: 24 };
    const pw = w - pad.left - pad.right, ph = h - pad.top - pad.bottom;
    g.strokeStyle = '#d8dee2';
    g.strokeRect(pad.left, pad.top, pw, ph);
    if (this.points.length === 0) {
      g.fillText('The loss appears here as the training runs.', pad.left + 8, pad.top + ph / 2);
      return;
    }
    const steps = this.points.map((p) => p.step), losses = this.points.map((p) => p.loss);
    const x0 = Math.min(...steps), x1 = Math.max(...steps, x0 + 1);
    let y0 = Math.min(...losses), y1 = Math.max(...losses);
    if (y1 - y0 < 1e-9) { y0 -= 0.5 * Math.abs(y0 || 1); y1 += 0.5 * Math.abs(y1 || 1); }
    const x = (s) => pad.left + ((s - x0) / (x1 - x0)) * pw;
    const y = (l) => pad.top + (1 - (l - y0) / (y1 - y0)) * ph;
    g.textAlign = 'right';
    g.fillText(number(y1, 3), pad.left - 6, pad.top + 10);
    g.fillText(number(y0, 3), pad.left - 6, pad.top + ph);
    g.textAlign = 'left';
    g.fillText(`step ${x0}`, pad.left, h - 6);
    g.textAlign = 'right';
    g.fillText(`step ${x1}`, pad.left + pw, h - 6);
    g.strokeStyle = '#2f6f5e';
    g.lineWidth = 2;
    g.beginPath();
    this.points.forEach((p, i) => (i ? g.lineTo(x(p.step), y(p.loss)) : g.moveTo(x(p.step), y(p.loss))));
    g.stroke();
    if (this.points.length === 1) {
      g.fillStyle = '#2f6f5e';
      g.beginPath();
      g.arc(x(this.points[0].step), y(this.points[0].loss), 3, 0, 2 * Math.PI);
      g.fill();
    }
  }
}

// ---- Routing ----

const ROUTES = [
  [/^#?\/?$/, () => subjectsView()],
  [/^#\/new$/, () => newSubjectView()],
  [/^#\/subjects\/(\d+)$/, (id) => subjectView(Number(id))],
  [/^#\/jobs\/(\d+)$/, (id) => jobView(Number(id))],
];

async function route() {
  closeScope();
  if (!apiKey()) { document.getElementById('nav').hidden = true; loginView(); return; }
  document.getElementById('nav').hidden = false;
  const hash = location.hash;
  for (const [pattern, render] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    try {
      await render(...match.slice(1));
    } catch (e) {
      if (e.name === 'AbortError' || e.status === 401) return;
      show(el('div', { class: 'card' }, errorBox(e.message), el('p', {}, el('a', { href: '#/', text: 'Back to the subjects' }))));
    }
    return;
  }
  show(el('div', { class: 'card' }, el('p', { text: 'No such page. ' }, el('a', { href: '#/', text: 'Back to the subjects' }))));
}

document.getElementById('logout').addEventListener('click', () => logout());
window.addEventListener('hashchange', route);
route();
