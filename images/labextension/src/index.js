// DS01 session: a status bar item, a panel and the culler's warnings as notifications.
// Every figure comes from the hub side through this server's ds01_session server extension
// (GET ds01/session); "Keep running" is POST ds01/keep-running. See docs/user-guide.md.
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

const PANEL_POLL_S = 5;
const COMMAND = 'ds01-session:open';

function span(seconds) {
  if (seconds === null || seconds === undefined) return 'unlimited';
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 120) return `${s} s`;
  const m = Math.ceil(s / 60);
  if (m < 120) return `${m} min`;
  const h = Math.floor(m / 60);
  return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
}

function gib(mib) {
  return mib === null || mib === undefined ? '?' : (mib / 1024).toFixed(1);
}

function gpuText(g) {
  if (g.missing) return `${g.uuid}: ${g.note}`;
  const what = g.kind === 'mig' ? `MIG ${g.mig_profile || ''} slice` : 'GPU';
  const mem = `${gib(g.memory_used_mib)} / ${gib(g.memory_total_mib)} GiB`;
  const util = g.utilization_pct === null ? g.utilization_note : `${g.utilization_pct}% busy`;
  return `${what} ${g.index} (${g.name}): ${mem}, ${util}`;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

class Session {
  constructor(app) {
    this.app = app;
    this.settings = app.serviceManager.serverSettings;
    this.data = null;
    this.error = null;
    this.listeners = [];
    this.shown = new Set(); // warnings already notified (reason/fraction/since)
    this.finalShown = new Set();
    this.timer = null;
    this.finalTimer = null;
  }

  url(path) {
    return this.settings.baseUrl.replace(/\/?$/, '/') + path;
  }

  async refresh() {
    try {
      const r = await ServerConnection.makeRequest(this.url('ds01/session'), {}, this.settings);
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(body.message || `HTTP ${r.status}`);
      this.data = body;
      this.error = null;
      this.notify(body);
    } catch (e) {
      this.error = String(e.message || e);
    }
    this.listeners.forEach(f => f());
  }

  async keepRunning() {
    const r = await ServerConnection.makeRequest(
      this.url('ds01/keep-running'),
      { method: 'POST' },
      this.settings
    );
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      Notification.error(`Keep running failed: ${body.message || r.status}`, { autoClose: 8000 });
      return;
    }
    Notification.success('Recorded: your server counts as active now.', { autoClose: 5000 });
    await this.refresh();
  }

  openHome() {
    window.open((this.data && this.data.home_url) || '/hub/home', '_blank');
  }

  actions(reason) {
    const home = { label: 'Open home page', callback: () => this.openHome() };
    if (reason !== 'idle') return [home];
    return [
      { label: 'Keep running', callback: () => this.keepRunning(), displayType: 'accent' },
      home
    ];
  }

  notify(data) {
    for (const w of data.warnings || []) {
      const key = `${w.reason}/${w.fraction}/${w.since}`;
      if (this.shown.has(key)) continue;
      this.shown.add(key);
      // JupyterLab cuts a toast's message at 140 characters: a short one here, the whole
      // message in the panel
      const left = span((Date.parse(w.deadline) - Date.now()) / 1000);
      const text =
        w.reason === 'idle'
          ? `DS01: your server '${data.project}' is idle: it will be retired in ${left} unless it is used.`
          : `DS01: your server '${data.project}' reaches its runtime limit in ${left}. Save your work.`;
      Notification.warning(text, { autoClose: false, actions: this.actions(w.reason) });
    }
    this.scheduleFinal(data);
  }

  // A final notice shortly before the deadline of a warning in force.
  scheduleFinal(data) {
    clearTimeout(this.finalTimer);
    const warnings = data.warnings || [];
    if (!warnings.length) return;
    const last = warnings.reduce((a, b) => (Date.parse(a.deadline) <= Date.parse(b.deadline) ? a : b));
    const deadline = Date.parse(last.deadline);
    const key = `${last.reason}/${last.since}/${last.deadline}`;
    if (this.finalShown.has(key)) return;
    const lead = Math.min(60000, (deadline - Date.parse(last.at)) / 2);
    const wait = Math.max(0, deadline - lead - Date.now());
    this.finalTimer = setTimeout(() => {
      if (this.finalShown.has(key)) return;
      this.finalShown.add(key);
      const left = span((deadline - Date.now()) / 1000);
      Notification.error(
        `DS01: '${data.project}' is retired in about ${left} ` +
          `(${last.reason === 'idle' ? 'idle' : 'runtime limit'}). Save your work now.`,
        { autoClose: false, actions: this.actions(last.reason) }
      );
    }, wait);
  }

  poll(seconds) {
    clearTimeout(this.timer);
    const again = () => {
      this.timer = setTimeout(async () => {
        await this.refresh();
        again();
      }, 1000 * this.interval());
    };
    this.pollSeconds = seconds;
    again();
  }

  interval() {
    const slow = (this.data && this.data.poll_seconds) || 60;
    return this.panelOpen ? Math.min(PANEL_POLL_S, slow) : slow;
  }
}

class SessionPanel extends Widget {
  constructor(session) {
    super();
    this.session = session;
    this.id = 'ds01-session-panel';
    this.title.label = 'DS01 session';
    this.title.caption = 'DS01 session: GPU, time left, limits';
    this.addClass('ds01-session-panel');
    session.listeners.push(() => this.render());
    this.render();
  }

  onAfterShow() {
    this.session.panelOpen = true;
    this.session.refresh().then(() => this.session.poll());
  }

  onAfterHide() {
    this.session.panelOpen = false;
    this.session.poll();
  }

  row(table, label, value) {
    const tr = el('tr');
    tr.appendChild(el('th', '', label));
    const td = el('td', '', value);
    tr.appendChild(td);
    table.appendChild(tr);
    return td;
  }

  render() {
    const d = this.session.data;
    const node = this.node;
    node.textContent = '';
    node.appendChild(el('h2', '', 'DS01 session'));
    if (this.session.error) node.appendChild(el('p', 'ds01-session-error', this.session.error));
    if (!d) {
      node.appendChild(el('p', '', 'Loading…'));
      return;
    }
    const t = el('table', 'ds01-session-table');
    this.row(t, 'Project', d.project);
    const gpus = d.gpus || [];
    const g = this.row(t, 'GPU', gpus.length ? '' : 'none');
    gpus.forEach(x => g.appendChild(el('div', 'ds01-session-gpu', gpuText(x))));
    const rt = d.runtime || {};
    this.row(
      t,
      'Runtime left',
      rt.unlimited ? 'no runtime limit' : `${span(rt.left_s)} of ${span(rt.max_runtime_s)}`
    );
    const idle = d.idle || {};
    let idleText = 'no idle timeout';
    if (!idle.unlimited) {
      idleText =
        idle.left_s === null || idle.left_s === undefined
          ? idle.note || 'not known yet'
          : `${span(idle.left_s)} of ${span(idle.timeout_s)}`;
    }
    this.row(t, 'Idle time left', idleText);
    if (!idle.unlimited) {
      const active = idle.active_now || [];
      this.row(t, 'Active now', active.length ? active.join(', ') : 'nothing (idle)');
      // each signal's last activity as the culler saw it ("Keep running" shows as hub)
      const seen = Object.entries(idle.signals || {})
        .filter(([name]) => name !== 'remembered')
        .map(([name, at]) => `${name.replace('_', '-')} ${String(at).slice(11, 19)}`);
      this.row(t, 'Last activity (UTC)', seen.length ? seen.join(', ') : 'none seen yet');
    }
    const u = d.usage || {};
    const lim = v => (v === null || v === undefined ? 'unlimited' : v);
    this.row(t, 'Servers', `${u.servers} of ${lim(u.max_servers)}`);
    this.row(t, 'GPU equivalents', `${u.gpu_equivalents} of ${lim(u.max_gpu_equivalents)}`);
    const f = d.free || {};
    this.row(t, 'Free now', `${f.gpus} GPUs, ${f.mig_slices} MIG slices (of ${f.devices} devices)`);
    const q = d.queue || [];
    this.row(
      t,
      'GPU queue',
      q.length ? q.map(w => `${w.project}: place ${w.position}`).join('; ') : 'nothing waiting'
    );
    node.appendChild(t);
    const limits = d.limits || {};
    if (Object.keys(limits).length) {
      node.appendChild(el('h3', '', 'Your limits'));
      const lt = el('table', 'ds01-session-table');
      Object.keys(limits).forEach(k => this.row(lt, k, limits[k]));
      node.appendChild(lt);
    }
    (d.warnings || []).forEach(w => node.appendChild(el('p', 'ds01-session-warning', w.message)));
    const buttons = el('div', 'ds01-session-buttons');
    const keep = el('button', 'jp-Button jp-mod-accept', 'Keep running');
    keep.onclick = () => this.session.keepRunning();
    const home = el('button', 'jp-Button', 'Open home page');
    home.onclick = () => this.session.openHome();
    buttons.appendChild(keep);
    buttons.appendChild(home);
    node.appendChild(buttons);
    node.appendChild(el('p', 'ds01-session-checked', `Checked ${d.checked_at}`));
  }
}

class SessionStatus extends Widget {
  constructor(session, open) {
    super();
    this.session = session;
    this.addClass('ds01-session-status');
    this.node.title = 'DS01 session (click for details)';
    this.node.onclick = open;
    session.listeners.push(() => this.render());
    this.render();
  }

  render() {
    const d = this.session.data;
    if (!d) {
      this.node.textContent = this.session.error ? 'DS01: no session data' : 'DS01';
      return;
    }
    const parts = [`DS01 ${d.project}`];
    const g = (d.gpus || [])[0];
    if (g && !g.missing) parts.push(`GPU ${gib(g.memory_used_mib)}/${gib(g.memory_total_mib)} GiB`);
    const idle = d.idle || {};
    if (!idle.unlimited && idle.left_s !== null && idle.left_s !== undefined) {
      parts.push(`idle ${span(idle.left_s)} left`);
    }
    const rt = d.runtime || {};
    if (!rt.unlimited) parts.push(`runtime ${span(rt.left_s)} left`);
    this.node.textContent = parts.join(' · ');
    this.node.classList.toggle('ds01-session-warned', (d.warnings || []).length > 0);
  }
}

const plugin = {
  id: 'ds01-session:plugin',
  description: 'DS01 session: GPU, time left and the culler warnings inside JupyterLab',
  autoStart: true,
  optional: [IStatusBar, ICommandPalette],
  activate: (app, statusBar, palette) => {
    const session = new Session(app);
    const panel = new SessionPanel(session);
    app.shell.add(panel, 'right', { rank: 900 });
    app.commands.addCommand(COMMAND, {
      label: 'Show the DS01 session panel',
      execute: () => app.shell.activateById(panel.id)
    });
    if (palette) palette.addItem({ command: COMMAND, category: 'DS01' });
    if (statusBar) {
      const item = new SessionStatus(session, () => app.commands.execute(COMMAND));
      statusBar.registerStatusItem('ds01-session:status', {
        item,
        align: 'left',
        rank: 1000
      });
    }
    session.refresh().then(() => session.poll());
  }
};

export default plugin;
