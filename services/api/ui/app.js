/* Shaman web UI: plain JavaScript, no framework, no build step, nothing from outside.
 *
 * Everything here talks to the public JSON API under /v1 with the token the user signs in
 * with (Authorization: Bearer); the server only serves these files. The timeline is read
 * from GET /v1/events with fetch() and parsed as Server-Sent Events here, because
 * EventSource cannot send an Authorization header; it resumes with Last-Event-ID.
 *
 * DOM is built with createElement/textContent only (never innerHTML): every string shown
 * comes from the API or from events and must never be parsed as markup.
 */
'use strict';

(() => {
  // -- small DOM helpers --------------------------------------------------------------

  /** h('tag', {attr: value, onclick: fn}, ...children): build an element. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, val] of Object.entries(attrs || {})) {
      if (val === undefined || val === null || val === false) continue;
      if (key.startsWith('on') && typeof val === 'function') {
        el.addEventListener(key.slice(2), val);
      } else if (key === 'class') {
        el.className = val;
      } else if (key === 'value') {
        el.value = val;
      } else if (key === 'checked') {
        el.checked = Boolean(val);
      } else {
        el.setAttribute(key, val === true ? '' : String(val));
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  const main = () => document.getElementById('main');

  function announce(text) {
    const region = document.getElementById('announcer');
    region.textContent = '';
    // A fresh text node a tick later is announced even when the text repeats.
    setTimeout(() => { region.textContent = text; }, 50);
  }

  function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

  function newKey() {
    if (crypto.randomUUID) return 'ui-' + crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return 'ui-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function clockTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? '' : d.toLocaleTimeString([], {hour12: false});
  }

  function dateTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? '' : d.toLocaleString([], {hour12: false});
  }

  function ago(iso) {
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (!isFinite(s)) return '';
    if (s < 60) return 'just now';
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function shortImage(image, digest) {
    if (!image) return '';
    const at = image.indexOf('@sha256:');
    if (at >= 0) return image.slice(0, at) + '@' + image.slice(at + 8, at + 20);
    if (digest && digest.startsWith('sha256:')) return `${image} (${digest.slice(7, 19)})`;
    return image;
  }

  const TERMINAL = new Set(['healthy', 'failed', 'rolled_back', 'superseded', 'cancelled']);
  const STATUS_WORDS = {
    pending: 'pending', building: 'building', deploying: 'deploying', healthy: 'healthy',
    failed: 'failed', rolled_back: 'rolled back', superseded: 'superseded',
    cancelled: 'cancelled', running: 'running', new: 'new', destroyed: 'destroyed',
  };

  // A deploy's status only moves forward; terminal ones may still be refined
  // (failed → rolled_back once the automatic rollback finishes).
  function rank(status) {
    if (!status) return -1;
    return TERMINAL.has(status) ? 3 : {pending: 0, building: 1, deploying: 2}[status] ?? 0;
  }

  function badge(status, extra) {
    return h('span', {class: `badge ${status || ''}`}, extra || STATUS_WORDS[status] || status || '—');
  }

  // -- the token ------------------------------------------------------------------------

  const TOKEN_KEY = 'shaman.token';
  const auth = {
    get() {
      return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || '';
    },
    set(token, remember) {
      this.clear();
      (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
    },
    clear() {
      sessionStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(TOKEN_KEY);
    },
  };

  // -- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      const error = (body && body.error) || {};
      super(error.message || (status ? `The API answered ${status}` : 'Cannot reach the Shaman API'));
      this.status = status;
      this.code = error.code || (status ? 'http_' + status : 'network');
      this.details = Array.isArray(error.details) ? error.details : [];
      this.retryAfter = retryAfter;
    }
  }

  /** Call the JSON API; throws ApiError. A 401 signs the user out unless `signingIn`. */
  async function api(method, path, body, opts = {}) {
    const headers = {Accept: 'application/json', Authorization: `Bearer ${opts.token || auth.get()}`};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (opts.idempotencyKey) headers['Idempotency-Key'] = opts.idempotencyKey;
    let response;
    try {
      response = await fetch(path, {
        method, headers, cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError(0, {error: {code: 'network',
        message: 'Cannot reach the Shaman API. Check that it is running and retry.'}});
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (err) { data = null; }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data, response.headers.get('Retry-After'));
      if (response.status === 401 && !opts.signingIn) signOut(error.message);
      throw error;
    }
    return data;
  }

  function describeError(err) {
    if (!(err instanceof ApiError)) return String(err && err.message || err);
    let text = err.message;
    if (err.status === 403) text = `Not allowed: ${err.message}`;
    if (err.status === 429 || err.status === 503) {
      text += err.retryAfter ? ` (retry in ${err.retryAfter} s)` : '';
    }
    return text;
  }

  // -- Server-Sent Events over fetch ------------------------------------------------------

  /** An SSE parser (the HTML standard's rules): feed text chunks, get {id, data} messages. */
  class SseParser {
    constructor(onMessage) {
      this.onMessage = onMessage;
      this.buffer = '';
      this.data = [];
      this.lastEventId = null;
      this.retry = null;
    }

    push(chunk) {
      this.buffer += chunk;
      let pos = 0;
      for (;;) {
        const lf = this.buffer.indexOf('\n', pos);
        const cr = this.buffer.indexOf('\r', pos);
        let end;
        let next;
        if (cr !== -1 && (lf === -1 || cr < lf)) {
          if (cr === this.buffer.length - 1) break; // a CR LF may be split across chunks
          end = cr;
          next = this.buffer[cr + 1] === '\n' ? cr + 2 : cr + 1;
        } else if (lf !== -1) {
          end = lf;
          next = lf + 1;
        } else {
          break;
        }
        this.line(this.buffer.slice(pos, end));
        pos = next;
      }
      this.buffer = this.buffer.slice(pos);
    }

    line(line) {
      if (line === '') {
        if (this.data.length) this.onMessage({id: this.lastEventId, data: this.data.join('\n')});
        this.data = [];
        return;
      }
      if (line[0] === ':') return; // a comment (keep-alive)
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') this.data.push(value);
      else if (field === 'id' && !value.includes('\0')) this.lastEventId = value;
      else if (field === 'retry' && /^\d+$/.test(value)) this.retry = Number(value);
    }
  }

  /** Follows GET /v1/events with the token; reconnects with Last-Event-ID. */
  class EventStream {
    constructor(url, onEvent, onState, lastEventId) {
      this.url = url;
      this.onEvent = onEvent;
      this.onState = onState;
      this.lastEventId = lastEventId || null;
      this.stopped = false;
      this.controller = null;
      this.watchdog = null;
      this.retryMs = 2000;
    }

    start() { this.loop(); return this; }

    stop() {
      this.stopped = true;
      clearTimeout(this.watchdog);
      if (this.controller) this.controller.abort();
    }

    // The server sends a keep-alive comment every 15 s: silence for 45 s is a dead link.
    arm() {
      clearTimeout(this.watchdog);
      this.watchdog = setTimeout(() => this.controller && this.controller.abort(), 45000);
    }

    async loop() {
      let failures = 0;
      while (!this.stopped) {
        this.controller = new AbortController();
        try {
          const headers = {Accept: 'text/event-stream', Authorization: `Bearer ${auth.get()}`};
          if (this.lastEventId !== null) headers['Last-Event-ID'] = this.lastEventId;
          const response = await fetch(this.url, {headers, cache: 'no-store',
                                                  signal: this.controller.signal});
          if (response.status === 401) { signOut('Your token is no longer valid.'); return; }
          if (response.status >= 400 && response.status < 500 && response.status !== 429) {
            this.onState('failed'); // retrying cannot help (the app is gone, the token may not see it)
            return;
          }
          if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
          failures = 0;
          this.onState('live');
          await this.read(response.body);
        } catch (err) {
          if (this.stopped) return;
        }
        clearTimeout(this.watchdog);
        if (this.stopped) return;
        failures += 1;
        this.onState('reconnecting');
        const backoff = Math.min(30000, this.retryMs * 2 ** Math.min(failures - 1, 4));
        await sleep(backoff * (0.75 + Math.random() / 2));
      }
    }

    async read(body) {
      const parser = new SseParser((message) => {
        if (message.id !== null) this.lastEventId = message.id;
        let event;
        try { event = JSON.parse(message.data); } catch (err) { return; }
        if (event && typeof event.type === 'string') this.onEvent(event, message.id);
      });
      const reader = body.pipeThrough(new TextDecoderStream()).getReader();
      this.arm();
      for (;;) {
        const {value, done} = await reader.read();
        if (done) return;
        this.arm();
        parser.push(value);
        if (parser.retry !== null) this.retryMs = Math.max(500, parser.retry);
      }
    }
  }

  // -- forms ------------------------------------------------------------------------------

  function fieldId(name) { return 'f-' + name.replace(/[^A-Za-z0-9]+/g, '-'); }

  /** A labelled input with its hint and its error slot (data-loc = the API's field path). */
  function field(name, label, opts = {}) {
    const id = opts.id || fieldId(name);
    const described = [];
    const hint = opts.hint ? h('span', {class: 'hint', id: id + '-hint'}, opts.hint) : null;
    if (hint) described.push(hint.id);
    const error = h('p', {class: 'field-error', id: id + '-error'});
    described.push(error.id);
    const input = h('input', {
      id, name, type: opts.type || 'text', value: opts.value ?? '', inputmode: opts.inputmode,
      placeholder: opts.placeholder, autocomplete: opts.autocomplete || 'off',
      required: opts.required, spellcheck: 'false', 'aria-describedby': described.join(' '),
    });
    return h('div', {class: 'field', 'data-loc': name}, h('label', {for: id}, label), input,
             hint, error);
  }

  function clearErrors(form) {
    for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    const summary = form.querySelector('.form-error');
    if (summary) clear(summary);
  }

  /** Put each API field error next to its field; the rest (and a summary) at the top. */
  function showErrors(form, err, intro) {
    clearErrors(form);
    const summary = form.querySelector('.form-error');
    const unplaced = [];
    let first = null;
    const details = err instanceof ApiError ? err.details : [];
    for (const item of details) {
      const target = locate(form, String(item.loc || ''));
      if (!target) { unplaced.push(item); continue; }
      const folded = target.closest('details');
      if (folded) folded.open = true; // an error in a folded section must be seen
      const slot = target.querySelector(':scope > .field-error');
      slot.textContent = slot.textContent ? `${slot.textContent}; ${item.msg}` : item.msg;
      const input = target.querySelector(':scope > input, :scope > select');
      if (input) {
        input.setAttribute('aria-invalid', 'true');
        if (!first) first = input;
      } else if (!first) {
        first = target.querySelector('input, select');
      }
    }
    const list = unplaced.map((item) => h('li', {}, item.loc && item.loc !== 'body'
      ? `${item.loc}: ${item.msg}` : item.msg));
    append(summary, [
      h('strong', {}, intro ? `${intro}: ` : '', describeError(err)),
      details.length > unplaced.length ? h('p', {}, 'The fields marked below need a change.') : null,
      list.length ? h('ul', {}, list) : null,
    ]);
    summary.setAttribute('role', 'alert');
    if (!first) summary.setAttribute('tabindex', '-1');
    (first || summary).focus();
  }

  function locate(form, loc) {
    const parts = loc.split('.');
    for (let n = parts.length; n > 0; n -= 1) {
      const found = form.querySelector(`[data-loc="${CSS.escape(parts.slice(0, n).join('.'))}"]`);
      if (found) return found;
    }
    return null;
  }

  /** What the user typed, as a JSON number when it is one (the API names anything else). */
  function numeric(value) {
    const text = value.trim();
    if (text === '') return undefined;
    return /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text;
  }

  function value(form, name) {
    const el = form.elements.namedItem(name);
    return el ? el.value.trim() : '';
  }

  async function submitting(button, work) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try { return await work(); } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  }

  function confirmDialog(title, text, okLabel, okClass) {
    const dialog = document.getElementById('confirm');
    document.getElementById('confirm-title').textContent = title;
    document.getElementById('confirm-text').textContent = text;
    const ok = document.getElementById('confirm-ok');
    ok.textContent = okLabel;
    ok.className = okClass || 'primary';
    return new Promise((resolve) => {
      dialog.returnValue = 'cancel';
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), {once: true});
      dialog.showModal();
      document.getElementById('confirm-cancel').focus();
    });
  }

  // -- page frame and routing ---------------------------------------------------------

  let pageCleanup = [];

  function leavePage() {
    for (const fn of pageCleanup) fn();
    pageCleanup = [];
  }

  function showPage(title, ...content) {
    document.title = title ? `${title} · Shaman` : 'Shaman';
    const root = clear(main());
    append(root, content);
    const heading = root.querySelector('h1');
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      heading.focus({preventScroll: true});
    }
  }

  function setNav(current) {
    const nav = document.getElementById('nav');
    nav.hidden = !auth.get();
    for (const [id, name] of [['nav-apps', 'apps'], ['nav-new', 'new']]) {
      const link = document.getElementById(id);
      if (name === current) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
  }

  function route() {
    leavePage();
    if (!auth.get()) { setNav(null); renderSignIn(); return; }
    const hash = location.hash || '#/';
    const appMatch = hash.match(/^#\/apps\/([a-z0-9-]+)$/);
    if (appMatch) { setNav(null); renderApp(appMatch[1]); return; }
    if (hash === '#/new') { setNav('new'); renderCreate(); return; }
    setNav('apps');
    renderList();
  }

  function signOut(message) {
    auth.clear();
    leavePage();
    streams.clear();
    setNav(null);
    renderSignIn(message);
  }

  // -- sign in --------------------------------------------------------------------------

  function renderSignIn(message) {
    const tokenField = field('token', 'API token', {
      type: 'password', required: true, autocomplete: 'current-password',
      hint: 'A Shaman API token. For the dev stack, `shaman dev env` prints it as SHAMAN_TOKEN.',
    });
    const remember = h('div', {class: 'field check'},
      h('label', {}, h('input', {type: 'checkbox', name: 'remember', id: 'f-remember'}),
        'Remember me on this device'),
      h('span', {class: 'hint'}, 'Otherwise the token is forgotten when this tab closes.'));
    const button = h('button', {type: 'submit', class: 'primary', id: 'sign-in'}, 'Sign in');
    const form = h('form', {class: 'panel', novalidate: true, 'aria-labelledby': 'signin-h'},
      h('div', {class: 'form-error'}),
      message ? h('p', {class: 'notice', role: 'status'}, message) : null,
      tokenField, remember, button);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const token = value(form, 'token');
      if (!token) {
        showErrors(form, new ApiError(422, {error: {message: 'Enter a token',
          details: [{loc: 'token', msg: 'Paste your API token here'}]}}), 'Cannot sign in');
        return;
      }
      await submitting(button, async () => {
        try {
          await api('GET', '/v1/apps', undefined, {token, signingIn: true});
        } catch (err) {
          const msg = err.status === 401 ? 'This token is not valid (unknown, expired or revoked)'
            : describeError(err);
          showErrors(form, new ApiError(err.status, {error: {message: msg,
            details: [{loc: 'token', msg}]}}), 'Cannot sign in');
          return;
        }
        auth.set(token, form.elements.namedItem('remember').checked);
        announce('Signed in');
        route(); // the page the address asks for (the hash did not change)
      });
    });
    showPage('Sign in', h('h1', {id: 'signin-h'}, 'Sign in to Shaman'), form);
    form.querySelector('input').focus();
  }

  // -- the app list ---------------------------------------------------------------------

  async function renderList() {
    const status = h('p', {class: 'muted', role: 'status'}, 'Loading apps…');
    const tableSlot = h('div', {});
    showPage('Apps',
      h('div', {class: 'page-head'}, h('h1', {}, 'Apps'),
        h('a', {class: 'button primary', href: '#/new'}, 'New app')),
      h('section', {class: 'panel', 'aria-label': 'All apps'}, status, tableSlot));
    let alive = true;
    pageCleanup.push(() => { alive = false; });
    const refresh = async () => {
      let apps;
      try {
        apps = (await api('GET', '/v1/apps')).apps;
      } catch (err) {
        if (alive) status.textContent = `Could not load the apps: ${describeError(err)}`;
        return;
      }
      const latest = await mapLimited(apps, 6, async (app) => {
        try {
          const found = await api('GET', `/v1/apps/${app.name}/deploys?limit=1`);
          return found.deploys[0] || null;
        } catch (err) { return null; }
      });
      if (!alive) return;
      status.textContent = apps.length ? `${apps.length} app${apps.length === 1 ? '' : 's'}` : '';
      rerender(tableSlot, apps.length ? appTable(apps, latest)
        : h('p', {class: 'empty'}, 'No apps yet. ', h('a', {href: '#/new'}, 'Create your first app')));
    };
    await refresh();
    const timer = setInterval(() => { if (!document.hidden) refresh(); }, 10000);
    pageCleanup.push(() => clearInterval(timer));
  }

  function appTable(apps, latest) {
    const rows = apps.map((app, i) => {
      const last = latest[i];
      return h('tr', {'data-app': app.name},
        h('td', {}, h('a', {href: `#/apps/${app.name}`, 'data-focus-key': `app-${app.name}`}, app.name)),
        h('td', {}, app.team),
        h('td', {}, badge(app.state)),
        h('td', {}, app.current_release ? `v${app.current_release}` : h('span', {class: 'empty'}, 'none')),
        h('td', {}, last
          ? [badge(last.status), ' ', last.description || last.kind, ' ',
             h('span', {class: 'muted'}, `· ${ago(last.created_at)}`)]
          : h('span', {class: 'empty'}, 'never deployed')),
        h('td', {class: 'mono'}, app.git ? `${app.git.url}@${app.git.ref}` : app.image || ''),
        h('td', {}, String(app.instances)));
    });
    return h('table', {},
      h('caption', {class: 'visually-hidden'}, 'Apps with their current release and last deploy'),
      h('thead', {}, h('tr', {}, ['Name', 'Team', 'State', 'Release', 'Last deploy', 'Source',
        'Instances'].map((t) => h('th', {scope: 'col'}, t)))),
      h('tbody', {}, rows));
  }

  async function mapLimited(items, limit, fn) {
    const out = new Array(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]);
      }
    };
    await Promise.all(Array.from({length: Math.min(limit, items.length)}, worker));
    return out;
  }

  // -- create an app ------------------------------------------------------------------

  function renderCreate() {
    const sourceImage = h('input', {type: 'radio', name: 'source', value: 'image', checked: true,
                                    id: 'f-source-image'});
    const sourceGit = h('input', {type: 'radio', name: 'source', value: 'git', id: 'f-source-git'});
    const imageFields = h('div', {}, field('image', 'Image repository', {
      hint: 'Where the images live, e.g. 127.0.0.1:5000/hello. A tag here becomes the default deploy.',
    }));
    const gitFields = h('div', {class: 'row', hidden: true},
      field('git.url', 'Git URL', {hint: 'https://… or a file:// path on the builders'}),
      field('git.ref', 'Git ref', {value: 'main', hint: 'branch, tag or commit'}));
    const toggle = () => {
      imageFields.hidden = !sourceImage.checked;
      gitFields.hidden = !sourceGit.checked;
    };
    sourceImage.addEventListener('change', toggle);
    sourceGit.addEventListener('change', toggle);

    const button = h('button', {type: 'submit', class: 'primary', id: 'create-app'}, 'Create app');
    const form = h('form', {novalidate: true, 'aria-labelledby': 'create-h'},
      h('div', {class: 'form-error'}),
      h('div', {class: 'panel'},
        h('div', {class: 'row'},
          field('name', 'Name', {required: true,
            hint: 'Lowercase letters, digits and dashes; starts with a letter. Used in URLs and DNS.'}),
          field('team', 'Team', {hint: 'Leave empty for your token\u2019s team.'})),
        h('fieldset', {'data-loc': 'source'}, h('legend', {}, 'Source'),
          h('p', {class: 'field-error'}),
          h('div', {class: 'choice'},
            h('label', {}, sourceImage, 'Prebuilt image'),
            h('label', {}, sourceGit, 'Build from git')),
          imageFields, gitFields),
        h('fieldset', {}, h('legend', {}, 'Process'),
          h('div', {class: 'row'},
            field('port', 'Port', {value: '8080', inputmode: 'numeric', hint: 'the port the app listens on'}),
            field('instances', 'Instances', {value: '1', inputmode: 'numeric'}),
            field('cpu_mhz', 'CPU (MHz)', {value: '100', inputmode: 'numeric'}),
            field('memory_mb', 'Memory (MB)', {value: '128', inputmode: 'numeric'})),
          h('div', {class: 'row'},
            field('health.path', 'Health check path', {value: '/health',
              hint: 'must answer 200 when the app is ready'}),
            field('command', 'Command', {hint: 'optional; the image\u2019s default otherwise'})),
          h('div', {class: 'field check', 'data-loc': 'auto_rollback'},
            h('label', {}, h('input', {type: 'checkbox', name: 'auto_rollback', id: 'f-auto_rollback',
                                       checked: true}),
              'Roll back automatically when a new release fails'),
            h('p', {class: 'field-error'}))),
        h('details', {class: 'advanced'},
          h('summary', {}, 'Health check timing and rollout policy'),
          h('fieldset', {'data-loc': 'health'}, h('legend', {}, 'Health check'),
            h('p', {class: 'field-error'}),
            h('div', {class: 'row'},
              field('health.interval_s', 'Interval (s)', {value: '10', inputmode: 'decimal'}),
              field('health.timeout_s', 'Timeout (s)', {value: '2', inputmode: 'decimal'}))),
          h('fieldset', {'data-loc': 'rollout'}, h('legend', {}, 'Rollout'),
            h('p', {class: 'field-error'}),
            h('div', {class: 'row'},
              field('rollout.canaries', 'Canaries', {value: '0', inputmode: 'numeric'}),
              field('rollout.max_parallel', 'Max parallel', {value: '1', inputmode: 'numeric'}),
              field('rollout.min_healthy_time_s', 'Min healthy time (s)', {value: '10', inputmode: 'decimal'})),
            h('div', {class: 'row'},
              field('rollout.healthy_deadline_s', 'Healthy deadline (s)', {value: '300', inputmode: 'decimal'}),
              field('rollout.progress_deadline_s', 'Progress deadline (s)', {value: '600', inputmode: 'decimal'}))))),
      button, ' ', h('a', {href: '#/', class: 'button secondary'}, 'Cancel'));

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const body = createBody(form, sourceGit.checked);
      await submitting(button, async () => {
        try {
          const app = await api('POST', '/v1/apps', body);
          announce(`App ${app.name} created`);
          location.hash = `#/apps/${app.name}`;
        } catch (err) {
          showErrors(form, err, 'The app was not created');
        }
      });
    });
    showPage('New app', h('h1', {id: 'create-h'}, 'Create an app'), form);
    form.elements.namedItem('name').focus();
  }

  function createBody(form, fromGit) {
    const body = {name: value(form, 'name')};
    const team = value(form, 'team');
    if (team) body.team = team;
    if (fromGit) {
      body.git = {url: value(form, 'git.url'), ref: value(form, 'git.ref') || 'main'};
    } else if (value(form, 'image')) {
      body.image = value(form, 'image');
    }
    for (const name of ['port', 'instances', 'cpu_mhz', 'memory_mb']) {
      const n = numeric(value(form, name));
      if (n !== undefined) body[name] = n;
    }
    const command = value(form, 'command');
    if (command) body.command = command;
    body.auto_rollback = form.elements.namedItem('auto_rollback').checked;
    const health = {};
    if (value(form, 'health.path')) health.path = value(form, 'health.path');
    for (const name of ['interval_s', 'timeout_s']) {
      const n = numeric(value(form, `health.${name}`));
      if (n !== undefined) health[name] = n;
    }
    body.health = health;
    const rollout = {};
    for (const name of ['canaries', 'max_parallel', 'min_healthy_time_s', 'healthy_deadline_s',
                        'progress_deadline_s']) {
      const n = numeric(value(form, `rollout.${name}`));
      if (n !== undefined) rollout[name] = n;
    }
    body.rollout = rollout;
    return body;
  }

  // -- the timeline -----------------------------------------------------------------------

  /** One card per deploy: status, milestones, build log, progress bars, failure, outcome. */
  class DeployCard {
    constructor(timeline, id) {
      this.timeline = timeline;
      this.id = id;
      this.status = null;
      this.lines = 0;
      this.title = h('h3', {}, id ? 'Deploy' : 'App events');
      this.badgeSlot = h('span', {});
      this.meta = h('p', {class: 'meta'}, id || 'scaling, drift and requests without a deploy');
      this.milestones = h('ol', {class: 'milestones'});
      this.groups = h('div', {class: 'groups', 'aria-live': 'off'});
      this.failures = h('div', {});
      this.outcome = h('p', {class: 'outcome', hidden: true});
      this.logPre = h('pre', {'aria-live': 'off', tabindex: '0', 'aria-label': 'Build log'});
      this.logSummary = h('summary', {}, 'Build log');
      this.log = h('details', {class: 'buildlog', hidden: true}, this.logSummary, this.logPre);
      this.el = h('article', {class: 'deploy-card', 'data-deploy-id': id || 'app',
                              'aria-label': id ? `Deploy ${id}` : 'App events'},
        h('header', {}, this.title, this.badgeSlot), this.meta, this.milestones, this.groups,
        this.log, this.failures, this.outcome);
      this.lastChange = Date.now();
    }

    setView(view) {
      this.kind = view.kind;
      this.el.setAttribute('data-kind', view.kind);
      this.title.textContent = view.description || `${view.kind} ${view.source}`;
      this.meta.textContent = [view.kind, view.source, view.requested_by && `by ${view.requested_by}`,
        dateTime(view.created_at), view.id].filter(Boolean).join(' · ');
      if (view.release) this.release = view.release;
      this.setStatus(view.status, view.reason);
    }

    setStatus(status, reason) {
      if (!status || status === this.status) return;
      if (rank(status) < rank(this.status)) return; // late, older news (a view fetched slowly)
      this.status = status;
      this.lastChange = Date.now();
      this.el.setAttribute('data-status', status);
      clear(this.badgeSlot).append(badge(status));
      if (TERMINAL.has(status)) this.showOutcome(status, reason);
    }

    showOutcome(status, reason, durationS) {
      const release = this.release ? `release v${this.release}` : 'the release';
      const took = durationS ? ` (took ${durationS.toFixed(1)} s)` : '';
      const text = {
        healthy: `Healthy: ${release} is running${took}.`,
        failed: `Failed${reason ? ': ' + reason : '.'}`,
        rolled_back: reason ? `Rolled back: ${reason}.` : 'Rolled back: the last good release runs again.',
        superseded: 'Superseded by a newer deploy before it rolled out.',
        cancelled: `Cancelled${reason ? ': ' + reason : '.'}`,
      }[status] || status;
      this.outcome.hidden = false;
      this.outcome.className = `outcome ${status}`;
      this.outcome.textContent = text;
    }

    milestone(time, text) {
      this.milestones.append(h('li', {}, h('time', {datetime: time}, clockTime(time)), text));
    }

    logLines(lines) {
      if (this.log.hidden && !TERMINAL.has(this.status)) this.log.open = true; // a build, live
      this.log.hidden = false;
      const MAX = 400;
      this.lines += lines.length;
      this.logPre.append(document.createTextNode(lines.join('\n') + '\n'));
      // Keep the page fast on long builds: only the last lines stay in the page.
      while (this.logPre.childNodes.length > 1 && this.visibleLines() > MAX) {
        this.logPre.removeChild(this.logPre.firstChild);
      }
      this.logSummary.textContent = `Build log (${this.lines} line${this.lines === 1 ? '' : 's'})`;
      this.logPre.scrollTop = this.logPre.scrollHeight;
    }

    visibleLines() {
      let n = 0;
      for (const node of this.logPre.childNodes) n += (node.data.match(/\n/g) || []).length;
      return n;
    }

    progress(groups) {
      clear(this.groups);
      for (const g of groups) {
        const label = `${g.name}: ${g.healthy} of ${g.desired} healthy`;
        const details = [`${g.placed} placed`, g.unhealthy ? `${g.unhealthy} unhealthy` : null,
          g.canaries ? `${g.canaries} canar${g.canaries === 1 ? 'y' : 'ies'}${g.promoted ? ' (promoted)' : ''}` : null]
          .filter(Boolean).join(' · ');
        this.groups.append(h('div', {class: 'group', 'data-group': g.name},
          h('span', {}, h('strong', {}, g.name)),
          h('progress', {max: String(Math.max(1, g.desired)), value: String(g.healthy), 'aria-label': label}),
          h('span', {}, `${g.healthy}/${g.desired} healthy · ${details}`)));
      }
    }

    failure(title, ...body) {
      this.failures.append(h('div', {class: 'failure', role: 'group', 'aria-label': title},
        h('h4', {}, title), body));
    }
  }

  function preBlock(label, lines) {
    if (!lines || !lines.length) return null;
    return [h('p', {}, label), h('pre', {tabindex: '0', 'aria-label': label}, lines.join('\n'))];
  }

  class Timeline {
    constructor(app, onChange) {
      this.app = app;
      this.onChange = onChange;
      this.cards = new Map();
      this.list = h('div', {class: 'timeline', role: 'log', 'aria-live': 'polite',
                            'aria-relevant': 'additions', 'aria-label': `Timeline of ${app}`});
      this.empty = h('p', {class: 'empty'}, 'No deploys yet. Press Deploy and follow it here, live.');
      this.list.append(this.empty);
    }

    card(id, fetchView = true) {
      let card = this.cards.get(id);
      if (card) return card;
      card = new DeployCard(this, id);
      this.cards.set(id, card);
      this.empty.remove();
      this.insert(card);
      if (id && fetchView) this.fetchView(card);
      return card;
    }

    // Newest first (deploy ids sort by creation time); app-wide events on top. The oldest
    // finished cards go beyond MAX_CARDS, so a long session stays fast.
    insert(card) {
      const MAX_CARDS = 30;
      if (this.cards.size > MAX_CARDS) {
        const oldest = [...this.cards.values()].filter((c) => c.id && c !== card && TERMINAL.has(c.status))
          .sort((a, b) => (a.id < b.id ? -1 : 1))[0];
        if (oldest) { oldest.el.remove(); this.cards.delete(oldest.id); }
      }
      if (!card.id) { this.list.prepend(card.el); return; }
      for (const other of this.list.children) {
        const otherId = other.getAttribute('data-deploy-id');
        if (otherId && otherId !== 'app' && otherId < card.id) {
          this.list.insertBefore(card.el, other);
          return;
        }
      }
      this.list.append(card.el);
    }

    async fetchView(card) {
      try {
        card.setView(await api('GET', `/v1/apps/${this.app}/deploys/${card.id}`));
      } catch (err) { /* the events still tell the story */ }
    }

    addViews(views) {
      for (const view of views) this.card(view.id, false).setView(view);
    }

    /** Cards still running: refreshed by polling in case events were missed. */
    active() {
      return [...this.cards.values()].filter((c) => c.id && c.status && !TERMINAL.has(c.status));
    }

    apply(ev) {
      const card = this.card(ev.deploy_id || '');
      card.lastChange = Date.now(); // news by event: no need to poll this one for a while
      const t = ev.time;
      switch (ev.type) {
        case 'deploy.accepted':
          card.setStatus('pending');
          card.milestone(t, `Accepted: ${ev.source}${ev.requested_by ? ' (by ' + ev.requested_by + ')' : ''}`);
          break;
        case 'deploy.rejected':
          card.failure(`Deploy request rejected (${ev.code})`, h('p', {}, ev.message),
            ev.request_id ? h('p', {class: 'meta'}, `request ${ev.request_id}`) : null);
          break;
        case 'build.started':
          card.setStatus('building');
          card.milestone(t, `Build started on ${ev.builder}${ev.attempt > 1 ? ` (attempt ${ev.attempt})` : ''}`);
          break;
        case 'build.log':
          card.logLines(ev.lines || []);
          break;
        case 'build.succeeded':
          card.milestone(t, `Built ${shortImage(ev.image, ev.digest)} in ${Number(ev.duration_s).toFixed(1)} s${ev.cached ? ' (cached)' : ''}`);
          break;
        case 'build.failed':
          card.failure(`Build failed: ${ev.reason}`,
            ev.step ? h('p', {}, `Step: ${ev.step}`) : null, preBlock('Last log lines', ev.log_tail));
          break;
        case 'release.created':
          card.release = ev.release;
          card.milestone(t, `Release v${ev.release} created: ${ev.description}`);
          this.onChange('release');
          break;
        case 'rollout.submitted':
          card.setStatus('deploying');
          card.milestone(t, `Rollout of v${ev.release} submitted to Nomad` +
            (ev.job_version !== null && ev.job_version !== undefined ? ` (job version ${ev.job_version})` : ''));
          break;
        case 'rollout.progress':
          card.setStatus('deploying');
          card.progress(ev.groups || []);
          break;
        case 'rollout.healthy':
          card.milestone(t, `Rollout healthy${ev.release ? ': v' + ev.release + ' is live' : ''}`);
          break;
        case 'rollout.failed':
          card.milestone(t, `Rollout failed: ${ev.reason}`);
          card.failure(`Why the rollout failed: ${ev.reason}`, (ev.allocations || []).map(allocationBlock));
          break;
        case 'rollback.started':
          card.milestone(t, `${ev.automatic ? 'Automatic rollback' : 'Rollback'} to v${ev.to_release} started` +
            (ev.reason ? `: ${ev.reason}` : ''));
          break;
        case 'rollback.succeeded':
          card.milestone(t, `Rollback finished: v${ev.new_release} runs v${ev.to_release}\u2019s image, config and secrets`);
          break;
        case 'rollback.failed':
          card.failure(`Rollback failed: ${ev.reason}`, h('p', {}, `The original failure: ${ev.original_reason}`));
          break;
        case 'deploy.superseded':
          card.milestone(t, `Superseded by ${ev.superseded_by}`);
          card.setStatus('superseded');
          break;
        case 'deploy.cancelled':
          card.milestone(t, `Cancelled: ${ev.reason}`);
          card.setStatus('cancelled', ev.reason);
          break;
        case 'deploy.finished':
          if (ev.release) card.release = ev.release;
          card.milestone(t, `Finished: ${STATUS_WORDS[ev.status] || ev.status}`);
          card.setStatus(ev.status, ev.reason);
          if (TERMINAL.has(ev.status)) card.showOutcome(ev.status, ev.reason, ev.duration_s);
          this.onChange('finished');
          break;
        case 'app.scaled':
          card.milestone(t, `Scaled from ${ev.previous} to ${ev.instances} instances by ${ev.requested_by}`);
          this.onChange('app');
          break;
        case 'drift.detected':
          card.milestone(t, `Drift corrected: ${ev.description}`);
          break;
        default:
          break; // unknown types are ignored, as docs/events.md asks of consumers
      }
    }
  }

  function allocationBlock(a) {
    const head = [`Task ${a.task}`, a.alloc_id ? ` (allocation ${a.alloc_id.slice(0, 8)})` : '',
      `: ${a.summary}`,
      a.exit_code !== null && a.exit_code !== undefined && !String(a.summary).includes(String(a.exit_code))
        ? ` (exit code ${a.exit_code})` : ''];
    return h('div', {class: 'alloc'}, h('p', {}, h('strong', {}, head.join(''))),
      a.task_events && a.task_events.length ? h('ul', {}, a.task_events.map((e) => h('li', {}, e))) : null,
      a.check_output ? preBlock('Health check output', [a.check_output]) : null,
      preBlock('Last log lines', a.log_tail));
  }

  const streams = new Map();

  // Per app, for this tab: the timeline and the last event id outlive the page, so coming
  // back to an app shows what was seen and resumes the stream where it stopped.
  function followApp(app, onChange, stateEl) {
    let entry = streams.get(app);
    if (!entry) {
      entry = {timeline: new Timeline(app, () => {}), stream: null, lastEventId: null};
      streams.set(app, entry);
    }
    entry.timeline.onChange = onChange;
    const showState = (state) => {
      stateEl.setAttribute('data-state', state);
      stateEl.textContent = {live: 'Live', reconnecting: 'Reconnecting…', connecting: 'Connecting…',
                             failed: 'Not live: reload the page to retry'}[state] || state;
    };
    showState('connecting');
    entry.stream = new EventStream(`/v1/events?app=${encodeURIComponent(app)}`,
      (event) => entry.timeline.apply(event), showState, entry.lastEventId).start();
    pageCleanup.push(() => {
      entry.stream.stop();
      entry.lastEventId = entry.stream.lastEventId;
      entry.stream = null;
      entry.timeline.onChange = () => {};
    });
    return entry;
  }

  // -- the app page -------------------------------------------------------------------

  async function renderApp(name) {
    let app;
    try {
      app = await api('GET', `/v1/apps/${name}`);
    } catch (err) {
      showPage('Not found', h('h1', {}, err.status === 404 ? `No app named ${name}` : `App ${name}`),
        h('p', {}, describeError(err)), h('p', {}, h('a', {href: '#/'}, 'Back to the apps')));
      return;
    }
    let alive = true;
    pageCleanup.push(() => { alive = false; });

    const headBadges = h('span', {});
    const streamState = h('span', {class: 'stream-state', role: 'status'});

    let refreshTimer = null;
    let lateTimer = null;
    const scheduleRefresh = (why) => {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(() => alive && refreshAll(), 300);
      if (why === 'finished') {
        // The app record's state (running, last healthy) is written right around the
        // deploy's outcome event: look again a little later so it is not shown stale.
        clearTimeout(lateTimer);
        lateTimer = setTimeout(() => alive && refreshAll(), 2500);
      }
    };
    const entry = followApp(name, scheduleRefresh, streamState);
    const timeline = entry.timeline;
    const accepted = (deploy, what) => {
      timeline.addViews([deploy]);
      announce(`${what}: deploy ${deploy.id} accepted`);
    };

    // Sections are built once; a refresh replaces only their data, never a form the user
    // may be typing in.
    const deploy = deployPanel(app, timeline);
    const details = detailsSection(name);
    const releases = releasesSection(name, accepted);
    const config = configSection(name, accepted);
    const secrets = secretsSection(name, accepted);
    showPage(name,
      h('div', {class: 'page-head'},
        h('div', {}, h('p', {class: 'muted'}, h('a', {href: '#/'}, 'Apps'), ' / '),
          h('h1', {}, name)), headBadges),
      h('div', {class: 'grid-2'}, deploy.el, details.el),
      h('section', {class: 'panel', 'aria-labelledby': 'timeline-h'},
        h('div', {class: 'page-head'}, h('h2', {id: 'timeline-h'}, 'Timeline'), streamState),
        timeline.list),
      releases.el,
      h('div', {class: 'grid-2'}, config.el, secrets.el));

    async function refreshAll() {
      const [appNow, releaseList, configNow, secretsNow, deploys] = await Promise.allSettled([
        api('GET', `/v1/apps/${name}`),
        api('GET', `/v1/apps/${name}/releases`),
        api('GET', `/v1/apps/${name}/config`),
        api('GET', `/v1/apps/${name}/secrets`),
        api('GET', `/v1/apps/${name}/deploys?limit=10`),
      ]);
      if (!alive) return;
      if (appNow.status === 'fulfilled') app = appNow.value;
      clear(headBadges).append(badge(app.state), ' ',
        app.current_release ? badge('', `current v${app.current_release}`) : '',
        ' ', badge('', `team ${app.team}`));
      details.update(app);
      if (deploys.status === 'fulfilled') {
        timeline.addViews(deploys.value.deploys);
        deploy.prefill(app, deploys.value.deploys);
      }
      releases.update(app, releaseList);
      config.update(configNow);
      secrets.update(secretsNow);
    }
    await refreshAll();

    // Events can be missed in a gap (the stream reconnecting): poll running deploys slowly.
    const poll = setInterval(async () => {
      if (document.hidden) return;
      for (const card of timeline.active()) {
        if (Date.now() - card.lastChange < 4000) continue;
        try {
          const view = await api('GET', `/v1/apps/${name}/deploys/${card.id}`);
          const was = card.status;
          card.setView(view);
          if (TERMINAL.has(view.status) && was !== view.status) scheduleRefresh('finished');
        } catch (err) { /* the next round tries again */ }
      }
    }, 5000);
    pageCleanup.push(() => {
      clearInterval(poll);
      clearTimeout(refreshTimer);
      clearTimeout(lateTimer);
    });
  }

  /** Replace a slot's content, keeping keyboard focus on the "same" control if it had it. */
  function rerender(slot, content) {
    const active = document.activeElement;
    const key = active && slot.contains(active) ? active.getAttribute('data-focus-key') : null;
    append(clear(slot), [content]);
    if (key) {
      const again = slot.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }

  function section(id, title, ...content) {
    return h('section', {class: 'panel', 'aria-labelledby': id}, h('h2', {id}, title), content);
  }

  function deployPanel(app, timeline) {
    const imageChoice = h('input', {type: 'radio', name: 'kind', value: 'image', id: 'f-kind-image',
                                    checked: !app.git});
    const gitChoice = h('input', {type: 'radio', name: 'kind', value: 'git', id: 'f-kind-git',
                                  checked: Boolean(app.git)});
    const imageField = field('image', 'Image to deploy', {id: 'f-deploy-image',
      hint: 'An image reference with a tag or digest, e.g. 127.0.0.1:5000/hello:1.4.2'});
    const gitFields = h('div', {class: 'row'},
      field('git.url', 'Git URL', {id: 'f-deploy-git-url', value: app.git ? app.git.url : ''}),
      field('git.ref', 'Git ref', {id: 'f-deploy-git-ref', value: app.git ? app.git.ref : 'main'}));
    const toggle = () => {
      imageField.hidden = !imageChoice.checked;
      gitFields.hidden = !gitChoice.checked;
    };
    imageChoice.addEventListener('change', toggle);
    gitChoice.addEventListener('change', toggle);
    toggle();
    const button = h('button', {type: 'submit', class: 'deploy-button', id: 'deploy'}, 'Deploy');
    const notice = h('p', {class: 'notice', role: 'status'});
    const form = h('form', {novalidate: true},
      h('div', {class: 'form-error'}),
      h('fieldset', {class: 'plain'}, h('legend', {class: 'visually-hidden'}, 'What to deploy'),
        h('div', {class: 'choice'},
          h('label', {}, imageChoice, 'An image'), h('label', {}, gitChoice, 'A git ref (built first)'))),
      imageField, gitFields, button, notice);
    // One key per intended deploy: a retry after a network error cannot start a second one.
    let pendingKey = null;
    form.addEventListener('input', () => { pendingKey = null; });
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const body = gitChoice.checked
        ? {git: {url: value(form, 'git.url'), ref: value(form, 'git.ref') || 'main'}}
        : {image: value(form, 'image')};
      if (!gitChoice.checked && !body.image) delete body.image; // the app's own default source
      pendingKey = pendingKey || newKey();
      notice.textContent = '';
      await submitting(button, async () => {
        try {
          const deploy = await api('POST', `/v1/apps/${app.name}/deploys`, body,
                                   {idempotencyKey: pendingKey});
          pendingKey = null;
          clearErrors(form);
          timeline.addViews([deploy]);
          notice.textContent = `Deploy ${deploy.id} accepted. Follow it in the timeline below.`;
        } catch (err) {
          if (err.status !== 0 && err.status < 500) pendingKey = null;
          showErrors(form, err, 'Not deployed');
        }
      });
    });
    let prefilled = false;
    return {
      el: h('section', {class: 'panel deploy-panel', 'aria-labelledby': 'deploy-h'},
        h('h2', {id: 'deploy-h'}, 'Deploy'), form),
      prefill(appNow, deploys) {
        if (prefilled) return;
        prefilled = true;
        const input = form.elements.namedItem('image');
        if (!input.value) input.value = defaultImage(appNow, deploys);
      },
    };
  }

  /** The image the button deploys unless changed: the last image deployed, else the app's. */
  function defaultImage(app, deploys) {
    const last = deploys.find((d) => d.kind === 'deploy' && d.source &&
      !d.source.startsWith('git ') && !d.source.startsWith('upload '));
    if (last) return last.source;
    if (!app.image) return '';
    const afterSlash = app.image.slice(app.image.lastIndexOf('/') + 1);
    return afterSlash.includes(':') || app.image.includes('@') ? app.image : `${app.image}:latest`;
  }

  function detailsSection(name) {
    const list = h('div', {});
    const scaleField = field('instances', 'Instances', {id: 'f-scale', inputmode: 'numeric'});
    const input = scaleField.querySelector('input');
    let edited = false;
    input.addEventListener('input', () => { edited = true; });
    const button = h('button', {type: 'submit', class: 'secondary'}, 'Scale');
    const form = h('form', {novalidate: true, 'aria-label': 'Scale'},
      h('div', {class: 'form-error'}), h('div', {class: 'inline-form'}, scaleField, button));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      await submitting(button, async () => {
        try {
          const done = await api('POST', `/v1/apps/${name}/scale`,
                                 {instances: numeric(value(form, 'instances'))});
          clearErrors(form);
          edited = false;
          announce(`Scaling from ${done.previous} to ${done.instances} instances`);
        } catch (err) { showErrors(form, err, 'Not scaled'); }
      });
    });
    return {
      el: section('details-h', 'App', list, h('hr', {}), form),
      update(app) {
        if (!edited && document.activeElement !== input) input.value = String(app.instances);
        const rows = [
          ['Team', app.team],
          ['Source', app.git ? `git ${app.git.url}@${app.git.ref}` : app.image || 'none'],
          ['Port', app.port],
          ['Instances', app.instances],
          ['CPU / memory', `${app.cpu_mhz} MHz / ${app.memory_mb} MB`],
          ['Command', app.command || 'the image\u2019s default'],
          ['Health check', `${app.health.path} every ${app.health.interval_s} s (timeout ${app.health.timeout_s} s)`],
          ['Rollout', `${app.rollout.canaries} canaries, ${app.rollout.max_parallel} at a time, healthy for ` +
            `${app.rollout.min_healthy_time_s} s within ${app.rollout.healthy_deadline_s} s`],
          ['Auto rollback', app.auto_rollback ? 'on' : 'off'],
          ['Current release', app.current_release ? `v${app.current_release}` : 'none'],
          ['Last healthy', app.last_healthy_release ? `v${app.last_healthy_release}` : 'none'],
          ['Created', `${dateTime(app.created_at)} by ${app.created_by}`],
        ];
        rerender(list, h('dl', {class: 'kv'}, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))])));
      },
    };
  }

  function releasesSection(name, accepted) {
    const error = h('div', {class: 'form-error'});
    const slot = h('div', {});
    let app = null;

    async function rollback(version, button) {
      const ok = await confirmDialog(`Roll back ${name} to v${version}?`,
        `A new release with v${version}\u2019s image, config and secrets is rolled out ` +
        'gradually, like any deploy. You can roll forward again the same way.',
        `Roll back to v${version}`);
      if (!ok) { button.focus(); return; }
      await submitting(button, async () => {
        try {
          const deploy = await api('POST', `/v1/apps/${name}/rollback`, {version},
                                   {idempotencyKey: newKey()});
          clear(error);
          accepted(deploy, `Rollback to v${version}`);
        } catch (err) {
          clear(error).append(`Rollback not started: ${describeError(err)}`);
        }
      });
    }

    function row(r) {
      const current = r.version === app.current_release;
      let action = h('span', {class: 'muted'}, 'running');
      if (!current) {
        action = h('button', {type: 'button', class: 'secondary small', 'data-rollback': String(r.version),
                              'data-focus-key': `rollback-${r.version}`}, `Roll back to v${r.version}`);
        action.addEventListener('click', () => rollback(r.version, action));
      }
      return h('tr', {class: current ? 'current' : '', 'data-release': String(r.version)},
        h('th', {scope: 'row'}, `v${r.version}`, current ? [' ', badge('healthy', 'current')] : null),
        h('td', {}, r.description, r.rollback_of ? h('span', {class: 'muted'}, ` (content of v${r.rollback_of})`) : null),
        h('td', {class: 'mono'}, shortImage(r.image, r.digest)),
        h('td', {}, dateTime(r.created_at), h('br', {}), h('span', {class: 'muted'}, `by ${r.created_by}`)),
        h('td', {}, action));
    }

    return {
      el: section('releases-h', 'Releases', error, slot),
      update(appNow, result) {
        app = appNow;
        if (result.status !== 'fulfilled') {
          rerender(slot, h('p', {class: 'form-error'}, describeError(result.reason)));
          return;
        }
        const releases = result.value.releases;
        rerender(slot, releases.length ? h('table', {},
          h('caption', {class: 'visually-hidden'}, `Releases of ${name}, newest first`),
          h('thead', {}, h('tr', {}, ['Release', 'Description', 'Image', 'Created', 'Action']
            .map((t) => h('th', {scope: 'col'}, t)))),
          h('tbody', {}, releases.map(row)))
          : h('p', {class: 'empty'}, 'No releases yet: the first deploy creates v1.'));
      },
    };
  }

  /** A name/value form for config vars or secrets; the API's errors at the fields. */
  function varForm(label, what, valueField, submit) {
    const button = h('button', {type: 'submit', class: 'secondary'}, what === 'secret' ? 'Set secret' : 'Set');
    const form = h('form', {novalidate: true, 'aria-label': label},
      h('div', {class: 'form-error'}),
      h('div', {class: 'inline-form'},
        field('key', 'Name', {id: `f-${what}-key`, placeholder: what === 'secret' ? 'DATABASE_URL' : 'LOG_LEVEL'}),
        valueField, button));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const key = value(form, 'key');
      const input = form.elements.namedItem('value');
      await submitting(button, async () => {
        try {
          await submit(key, input.value);
          clearErrors(form);
          form.reset();
        } catch (err) {
          // The API names the variable itself as the field: show that at the name input.
          if (err.details) err.details = err.details.map((d) => (d.loc === key ? {...d, loc: 'key'} : d));
          showErrors(form, err, 'Not set');
        } finally {
          if (what === 'secret') input.value = ''; // a secret value never lingers in the page
        }
      });
    });
    return form;
  }

  function unsetButton(label, key, run, error) {
    const button = h('button', {type: 'button', class: 'danger small', 'aria-label': label,
                                'data-focus-key': label}, 'Unset');
    button.addEventListener('click', () => submitting(button, async () => {
      try { await run(); clear(error); } catch (err) { clear(error).append(describeError(err)); }
    }));
    return button;
  }

  function configSection(name, accepted) {
    const error = h('div', {class: 'form-error'});
    const slot = h('div', {});
    const change = async (changes, what) => {
      accepted(await api('PATCH', `/v1/apps/${name}/config`, changes, {idempotencyKey: newKey()}), what);
    };
    const form = varForm('Set a config var', 'config', field('value', 'Value', {id: 'f-config-value'}),
      (key, val) => change({[key]: val}, `Set ${key}`));
    return {
      el: section('config-h', 'Config vars', error, slot,
        h('p', {class: 'muted'}, 'Each change makes a new release.'), form),
      update(result) {
        if (result.status !== 'fulfilled') {
          rerender(slot, h('p', {class: 'form-error'}, describeError(result.reason)));
          return;
        }
        const vars = result.value.config;
        const keys = Object.keys(vars).sort();
        rerender(slot, keys.length ? h('table', {},
          h('caption', {class: 'visually-hidden'}, 'Config vars of the current release'),
          h('thead', {}, h('tr', {}, ['Name', 'Value', ''].map((t) => h('th', {scope: 'col'}, t)))),
          h('tbody', {}, keys.map((key) => h('tr', {},
            h('th', {scope: 'row', class: 'mono'}, key), h('td', {class: 'mono'}, vars[key]),
            h('td', {}, unsetButton(`Unset ${key}`, key, () => change({[key]: null}, `Unset ${key}`), error))))))
          : h('p', {class: 'empty'}, 'No config vars in the current release.'));
      },
    };
  }

  function secretsSection(name, accepted) {
    const error = h('div', {class: 'form-error'});
    const slot = h('div', {});
    const form = varForm('Set a secret', 'secret',
      field('value', 'Value (write-only)', {id: 'f-secret-value', type: 'password',
                                            autocomplete: 'new-password'}),
      async (key, val) => {
        accepted(await api('PUT', `/v1/apps/${name}/secrets`, {[key]: val}, {idempotencyKey: newKey()}),
                 `Secret ${key} set`);
      });
    return {
      el: section('secrets-h', 'Secrets', error, slot, form),
      update(result) {
        if (result.status !== 'fulfilled') {
          rerender(slot, h('p', {class: 'form-error'}, `Secrets unavailable: ${describeError(result.reason)}`));
          return;
        }
        const secrets = result.value;
        rerender(slot, [h('p', {class: 'muted'},
          secrets.version ? `Vault version ${secrets.version}. ` : '', 'Values are write-only: never shown.'),
          secrets.keys.length ? h('table', {},
            h('caption', {class: 'visually-hidden'}, 'Secret names (values are never shown)'),
            h('thead', {}, h('tr', {}, ['Name', ''].map((t) => h('th', {scope: 'col'}, t)))),
            h('tbody', {}, secrets.keys.slice().sort().map((key) => h('tr', {},
              h('th', {scope: 'row', class: 'mono'}, key),
              h('td', {}, unsetButton(`Unset secret ${key}`, key, async () => {
                accepted(await api('DELETE', `/v1/apps/${name}/secrets/${encodeURIComponent(key)}`),
                         `Unset secret ${key}`);
              }, error))))))
            : h('p', {class: 'empty'}, 'No secrets set.')]);
      },
    };
  }

  // -- start ----------------------------------------------------------------------------

  // The skip link must not change the hash: the hash is the page's route.
  document.querySelector('.skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    main().focus();
  });
  document.getElementById('sign-out').addEventListener('click', () => {
    signOut('Signed out.');
    location.hash = '#/';
  });
  window.addEventListener('hashchange', route);
  // For the browser tests: the SSE parser is checked on its own too.
  window.ShamanUI = {SseParser};
  route();
})();
