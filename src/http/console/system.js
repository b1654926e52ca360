// The whole system: `/stats` (sessions open, sockets, users, memory, the log's end), the
// connects and closes per second by reason, the nodes (`/cluster/nodes`), and the system uids.
//
// The rates come from the log itself: between two reads of `/stats`, the log grew by
// `last_seq` - `last_seq before`; the events in that range are read from `/events` and counted
// by type and close reason. When more events came than one page holds, the newest page is a
// sample, scaled to the growth, and the rate is marked as an estimate.

import { get, post, withQuery } from './api.js';
import {
  bytes, count, dateTime, duration, el, REASONS, reasonBadge,
} from './format.js';

const $ = (id) => document.getElementById(id);
const PAGE = 1000;
const WINDOW_MS = 10_000;
const SHOWN_UIDS = 300;

export class SystemView {
  constructor({ fail }) {
    this.fail = fail;
    this.lastSeq = null;
    this.samples = [];
    this.busy = false;
  }

  async refresh() {
    if (this.busy) return;
    this.busy = true;
    try {
      const [stats, nodes] = await Promise.all([get('stats'), get('cluster/nodes')]);
      this.drawStats(stats);
      this.drawNodes(nodes);
      await this.sample(stats.last_seq);
    } catch (e) {
      this.fail(e);
    } finally {
      this.busy = false;
    }
  }

  drawStats(stats) {
    const items = [
      ['Sessions open', count(stats.online_sessions)],
      ['Open sockets', count(stats.open_connections)],
      ['Known users', count(stats.known_users)],
      ['Memory (RSS)', bytes(stats.rss_bytes)],
      ['Log: last seq', count(stats.last_seq)],
    ];
    $('system-stats').replaceChildren(...items.map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', {}, v))));
  }

  drawNodes(nodes) {
    $('nodes-table').tBodies[0].replaceChildren(...nodes.map((n) => el('tr', { 'data-node': n.node_id },
      el('td', { class: 'num' }, n.node_id),
      el('td', {}, n.alive ? 'alive' : 'lost'),
      el('td', { class: 'num' }, count(n.sessions_open)),
      el('td', { class: 'when', title: dateTime(Date.parse(n.started_at)) },
        duration(Date.now() - Date.parse(n.started_at))))));
  }

  // Counts what the log recorded since the last sample.
  async sample(lastSeq) {
    const t = performance.now();
    if (this.lastSeq === null || lastSeq < this.lastSeq) {
      this.lastSeq = lastSeq;
      this.samples = [{ t, counts: null }];
      this.drawRates();
      return;
    }
    const grew = lastSeq - this.lastSeq;
    const counts = { connects: 0, closes: {}, estimated: false };
    if (grew > 0) {
      const exact = grew <= PAGE;
      const page = await get(withQuery('events', { after: exact ? this.lastSeq : lastSeq - PAGE, limit: PAGE }));
      const events = page.events.filter((e) => e.seq <= lastSeq);
      const scale = exact || events.length === 0 ? 1 : grew / events.length;
      for (const e of events) {
        if (e.type === 'Connected') counts.connects += scale;
        else if (e.type === 'Disconnected') {
          const r = e.data?.reason ?? 'unknown';
          counts.closes[r] = (counts.closes[r] ?? 0) + scale;
        }
      }
      counts.estimated = !exact;
    }
    this.lastSeq = lastSeq;
    this.samples.push({ t, counts });
    while (this.samples.length > 2 && t - this.samples[1].t >= WINDOW_MS) this.samples.shift();
    this.drawRates();
  }

  drawRates() {
    const body = $('rates-table').tBodies[0];
    // Each sample counts what came since the one before it: the first is only a start.
    const done = this.samples.slice(1);
    if (done.length === 0) {
      body.replaceChildren(el('tr', {}, el('td', { colspan: 2, class: 'muted' }, 'Measuring…')));
      $('rates-note').textContent = '';
      return;
    }
    const seconds = (this.samples[this.samples.length - 1].t - this.samples[0].t) / 1000;
    let connects = 0;
    let estimated = false;
    const closes = {};
    for (const s of done) {
      connects += s.counts.connects;
      estimated ||= s.counts.estimated;
      for (const [r, n] of Object.entries(s.counts.closes)) closes[r] = (closes[r] ?? 0) + n;
    }
    const rate = (n) => (seconds > 0 ? n / seconds : 0);
    const fmt = (n) => (n === 0 ? '0' : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US'));
    const totalCloses = Object.values(closes).reduce((a, b) => a + b, 0);
    const rows = [
      el('tr', { 'data-rate': 'connects' }, el('th', { scope: 'row' }, 'Connects'), el('td', { class: 'num' }, fmt(rate(connects)))),
      el('tr', { 'data-rate': 'closes' }, el('th', { scope: 'row' }, 'Closes'), el('td', { class: 'num' }, fmt(rate(totalCloses)))),
    ];
    const order = REASONS.map(([name]) => name);
    const reasons = Object.keys(closes).sort((a, b) => order.indexOf(a) - order.indexOf(b));
    for (const r of reasons) {
      rows.push(el('tr', { 'data-rate': r }, el('td', {}, reasonBadge(r)), el('td', { class: 'num' }, fmt(rate(closes[r])))));
    }
    body.replaceChildren(...rows);
    $('rates-note').textContent = estimated
      ? 'Estimated: more events came than one read holds, so the newest 1,000 are scaled up.'
      : `Counted from the log over the last ${Math.round(seconds)} s.`;
  }
}

export class SystemUidsView {
  constructor({ confirm, announce, fail }) {
    this.confirm = confirm;
    this.announce = announce;
    this.fail = fail;
    this.uids = [];
    $('sysuids-add-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.add();
    });
    $('sysuids-filter').addEventListener('input', () => this.draw());
  }

  async load() {
    try {
      this.uids = await get('user/systemuids');
      this.draw();
    } catch (e) {
      this.fail(e);
    }
  }

  draw() {
    const filter = $('sysuids-filter').value.trim();
    const matching = filter ? this.uids.filter((u) => u.includes(filter)) : this.uids;
    const shown = matching.slice(0, SHOWN_UIDS);
    $('sysuids-list').replaceChildren(...shown.map((uid) => el('li', { 'data-uid': uid },
      el('code', {}, uid),
      el('button', {
        type: 'button', class: 'small',
        'aria-label': `Remove ${uid} from the system uids`,
        onclick: () => this.remove(uid),
      }, 'Remove…'))));
    let text = `${count(this.uids.length)} system uid${this.uids.length === 1 ? '' : 's'}`;
    if (filter) text += `, ${count(matching.length)} matching`;
    if (matching.length > shown.length) text += `, the first ${count(shown.length)} shown`;
    $('sysuids-count').textContent = `${text}.`;
  }

  async add() {
    const input = $('sysuids-add');
    const error = $('sysuids-error');
    const uids = input.value.split(/[\s,]+/).filter((u) => u.length > 0);
    error.hidden = true;
    if (uids.length === 0) {
      error.textContent = 'Type one or more uids.';
      error.hidden = false;
      input.focus();
      return;
    }
    try {
      await post('user/systemuids_add', { uids });
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      input.focus();
      return;
    }
    input.value = '';
    this.announce(`Added ${uids.join(', ')} to the system uids.`);
    await this.load();
  }

  async remove(uid) {
    const ok = await this.confirm({
      title: `Remove ${uid} from the system uids?`,
      text: 'The application will no longer treat it as a trusted account.',
      action: 'Remove',
    });
    if (!ok) return;
    try {
      await post('user/systemuids_remove', { uids: [uid] });
      this.announce(`Removed ${uid} from the system uids.`);
    } catch (e) {
      this.fail(e);
    }
    await this.load();
    $('sysuids-filter').focus();
  }
}
