// One user, as the console shows it: "Now" (the devices online), the timeline, the session
// table and the raw events, and the kick action.
//
// Everything comes from the API in pages, never a whole history: the sessions the timeline and
// "Now" need are read newest first in pages of 1,000 until the chosen span is covered and every
// flag that memory reports online has its open session; later reads only re-read the newest
// pages, down to the oldest session that was open. The events are found by probing back from
// the log's end, then followed with `after`.

import { get, post, withQuery } from './api.js';
import {
  count, dateTime, duration, el, flagName, levelName, reasonBadge, sameDay, timeOfDay,
} from './format.js';
import { Timeline } from './timeline.js';

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
// The spans the timeline offers; `fit` zooms onto the sessions of the last 30 days.
export const SPANS = { '1h': HOUR, '24h': DAY, '7d': 7 * DAY, '30d': 30 * DAY, fit: 30 * DAY };
// The narrowest `fit`: ten seconds, so that a handful of quick sessions still reads as bars.
const FIT_MIN = 10 * 1000;
const PAGE = 1000;
// Pages read back beyond the newest, for one uid: the timeline of a user with more sessions in
// the span than this stops there and says so.
const MAX_PAGES_BACK = 30;
const REFRESH_PAGE = 100;
const HISTORY_PAGE = 50;
const EVENTS_PAGE = 1000;
const EVENTS_FIRST = 50;
const EVENTS_KEEP = 5000;

const $ = (id) => document.getElementById(id);
const isOpen = (s) => s.disconnected_at === null;
const byIdDesc = (a, b) => (a.session_id < b.session_id ? 1 : a.session_id > b.session_id ? -1 : 0);

export class UserView {
  // `confirm(options)` resolves true when the operator confirms; `announce(text)` tells a
  // screen reader; `fail(error)` shows an error.
  constructor({ confirm, announce, fail }) {
    this.confirm = confirm;
    this.announce = announce;
    this.fail = fail;
    this.timeline = new Timeline($('timeline'), $('tooltip'));
    this.span = '24h';
    this.uid = null;
    this.gen = 0;
    this.refreshing = null;
    this.again = false;

    for (const input of document.querySelectorAll('input[name=span]')) {
      input.addEventListener('change', () => {
        if (!input.checked) return;
        this.span = input.value;
        this.refresh();
      });
    }
    $('history-newest').addEventListener('click', () => this.historyGo(0));
    $('history-newer').addEventListener('click', () => this.historyGo(this.history.index - 1));
    $('history-older').addEventListener('click', () => this.historyGo(this.history.index + 1));
    $('events-older').addEventListener('click', () => this.loadOlderEvents());
    $('kick-all').addEventListener('click', () => this.kick(-1));
  }

  // Shows `uid`, reading everything afresh.
  async open(uid) {
    this.gen += 1;
    this.uid = uid;
    this.byId = new Map();
    this.ordered = [];
    this.online = [];
    this.next = undefined; // the cursor past the oldest session read; null: none older
    this.pagesBack = 0;
    this.truncated = false;
    this.missingBefore = new Set();
    this.history = { cursors: [undefined], index: 0, next: null };
    this.events = { list: [], cursor: 0, olderDone: false };
    this.timeline.activeId = null;
    this.drawnKey = null;
    $('user-uid').textContent = uid;
    $('user').hidden = false;
    $('now-table').tBodies[0].replaceChildren();
    $('history-table').tBodies[0].replaceChildren();
    $('events-table').tBodies[0].replaceChildren();
    $('now-summary').textContent = 'Loading…';
    const gen = this.gen;
    await Promise.all([this.refresh(), this.loadHistory(gen), this.loadLatestEvents(gen)]);
  }

  close() {
    this.gen += 1;
    this.uid = null;
    $('user').hidden = true;
  }

  // Where the sessions must be read back to.
  spanFrom(now) {
    return now - SPANS[this.span];
  }

  // Where the timeline starts: the span's start, or for `fit` a little before the oldest
  // session of the last 30 days.
  drawFrom(now) {
    const from = this.spanFrom(now);
    if (this.span !== 'fit') return from;
    let oldest = now;
    for (const s of this.ordered) {
      const end = s.disconnected_at ? Date.parse(s.disconnected_at) : now;
      if (end >= from) oldest = Math.min(oldest, Date.parse(s.connected_at));
    }
    const span = Math.max(FIT_MIN, now - Math.max(from, oldest));
    return now - span * 1.04;
  }

  // Re-reads the sessions and redraws "Now" and the timeline; one at a time (a call made while
  // one runs runs once more after it).
  refresh() {
    if (this.uid === null) return Promise.resolve();
    if (this.refreshing) {
      this.again = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      try {
        do {
          this.again = false;
          const gen = this.gen;
          if (await this.readSessions(gen)) this.draw();
          if (gen === this.gen && this.history.index === 0) await this.loadHistory(gen);
        } while (this.again && this.uid !== null);
      } catch (e) {
        this.fail(e);
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  merge(sessions) {
    for (const s of sessions) this.byId.set(s.session_id, s);
  }

  sessionsPage(before, limit = PAGE) {
    return get(withQuery('user/sessions', { uid: this.uid, limit, before }));
  }

  // Reads what changed since the last read (see the file's header); false when the uid
  // changed meanwhile.
  async readSessions(gen) {
    const first = this.ordered.length === 0 && this.next === undefined;
    const openIds = this.ordered.filter(isOpen).map((s) => s.session_id);
    const oldestOpen = openIds.length ? openIds[openIds.length - 1] : null;
    let cursor;
    let pages = 0;
    for (;;) {
      // A refresh usually finds little new: its first page is a short one.
      const page = await this.sessionsPage(cursor, first || pages > 0 ? PAGE : REFRESH_PAGE);
      if (gen !== this.gen) return false;
      pages += 1;
      if (pages === 1) this.online = page.online.map((o) => o.device_flag);
      const last = page.sessions.length ? page.sessions[page.sessions.length - 1].session_id : null;
      const metCache = page.sessions.some((s) => this.byId.has(s.session_id));
      this.merge(page.sessions);
      if (first) {
        this.next = page.next ?? null;
        break;
      }
      if (!page.next) {
        this.next = null;
        break;
      }
      if (metCache && (oldestOpen === null || last <= oldestOpen)) break;
      if (pages >= MAX_PAGES_BACK) {
        // A burst larger than the pages read: start over from what was read now.
        const fresh = new Map();
        for (const s of this.byId.values()) if (s.session_id >= last) fresh.set(s.session_id, s);
        this.byId = fresh;
        this.next = page.next;
        break;
      }
      cursor = page.next;
    }
    this.ordered = [...this.byId.values()].sort(byIdDesc);

    // Further back, while the span or "Now" needs it. A flag online without an open session
    // read is looked for only when it was missing at the last read too: the session table
    // follows memory by a moment, so a session just opened is not yet there.
    const now = Date.now();
    for (;;) {
      if (!this.next) break;
      const oldest = this.ordered[this.ordered.length - 1];
      const needSpan = !oldest || Date.parse(oldest.connected_at) > this.spanFrom(now);
      const openFlags = new Set(this.ordered.filter(isOpen).map((s) => s.device_flag));
      const missing = this.online.filter((f) => !openFlags.has(f));
      const needNow = missing.some((f) => this.missingBefore.has(f));
      if (!needSpan && !needNow) break;
      if (this.pagesBack >= MAX_PAGES_BACK) {
        this.truncated = true;
        break;
      }
      const page = await this.sessionsPage(this.next);
      if (gen !== this.gen) return false;
      this.pagesBack += 1;
      this.merge(page.sessions);
      this.next = page.next ?? null;
      this.ordered = [...this.byId.values()].sort(byIdDesc);
    }
    const openFlags = new Set(this.ordered.filter(isOpen).map((s) => s.device_flag));
    this.missingBefore = new Set(this.online.filter((f) => !openFlags.has(f)));
    return true;
  }

  draw() {
    const now = Date.now();
    this.drawNow(now);
    const from = this.drawFrom(now);
    // The timeline is drawn again only when its sessions changed, or when time moved it by
    // more than a pixel: a large history is not redrawn every few seconds for nothing.
    const key = [this.span, this.ordered.length, this.ordered[0]?.session_id,
      this.ordered.filter(isOpen).length, this.online.join(','), this.truncated].join('|');
    const msPerPixel = (now - from) / Math.max(1, this.timeline.container.clientWidth);
    if (key === this.drawnKey && now - this.drawnAt < msPerPixel) return;
    this.drawnKey = key;
    this.drawnAt = now;
    const { bars, lanes } = this.timeline.render({
      uid: this.uid, sessions: this.ordered, from, now, onlineFlags: this.online,
    });
    let caption = `${count(bars)} session${bars === 1 ? '' : 's'} on ${lanes} device flag${lanes === 1 ? '' : 's'}, ` +
      `from ${dateTime(from)} to now (${dateTime(now)}).`;
    if (this.truncated) caption += ` Only the newest ${count(PAGE * (MAX_PAGES_BACK + 1))} sessions are drawn.`;
    $('timeline-caption').textContent = caption;
  }

  // The devices online: the flags memory reports online, each with its open sessions.
  drawNow(now) {
    const body = $('now-table').tBodies[0];
    const rows = [];
    const open = this.ordered.filter(isOpen);
    const flags = [...this.online].sort((a, b) => a - b);
    for (const flag of flags) {
      const sessions = open.filter((s) => s.device_flag === flag);
      const kick = el('button', {
        type: 'button', class: 'danger small',
        'aria-label': `Kick every ${flagName(flag)} device (flag ${flag}) of ${this.uid}`,
        'data-kick-flag': flag,
        onclick: () => this.kick(flag),
      }, 'Kick…');
      const name = el('td', {}, el('strong', {}, flagName(flag)), el('span', { class: 'muted small' }, ` flag ${flag}`));
      if (sessions.length === 0) {
        rows.push(el('tr', { 'data-flag': flag }, name,
          el('td', { colspan: 4, class: 'muted' }, 'Online; its session is not in the history read yet.'),
          el('td', {}, kick)));
        continue;
      }
      sessions.forEach((s, i) => {
        const since = Date.parse(s.connected_at);
        rows.push(el('tr', { 'data-flag': flag, 'data-session-id': s.session_id },
          i === 0 ? name : el('td', {}, el('span', { class: 'sr-only' }, flagName(flag))),
          el('td', {}, levelName(s.device_level)),
          el('td', { class: 'num' }, s.node_id),
          el('td', { class: 'mono' }, s.device_id),
          el('td', { class: 'when' }, dateTime(since), el('br'),
            el('span', { class: 'muted small' }, `for ${duration(now - since)}`)),
          el('td', {}, i === 0 ? kick : '')));
      });
    }
    // Keep focus on a kick button across redraws.
    const focused = document.activeElement?.dataset?.kickFlag;
    body.replaceChildren(...rows);
    if (focused !== undefined) body.querySelector(`[data-kick-flag="${focused}"]`)?.focus();
    $('now-empty').hidden = flags.length > 0;
    $('now-table').hidden = flags.length === 0;
    $('kick-all').hidden = flags.length === 0;
    $('now-summary').textContent = flags.length === 0
      ? 'Offline.'
      : `Online on ${flags.map(flagName).join(', ')}: ${open.filter((s) => flags.includes(s.device_flag)).length} open session(s).`;
  }

  async kick(flag) {
    const uid = this.uid;
    const what = flag === -1 ? 'every device' : `${flagName(flag)} (flag ${flag})`;
    const ok = await this.confirm({
      title: `Kick ${what} of ${uid}?`,
      text: 'Its sessions are closed now, and its token is cleared: the device cannot ' +
        'reconnect until the application gives it a new token.',
      action: flag === -1 ? 'Kick every device' : `Kick ${flagName(flag)}`,
    });
    if (!ok || uid !== this.uid) return;
    try {
      await post('user/device_quit', { uid, device_flag: flag });
      this.announce(`Kicked ${what} of ${uid}.`);
    } catch (e) {
      this.fail(e);
      return;
    }
    await this.refresh();
    // The sessions close a moment after the answer: look again soon.
    setTimeout(() => this.refresh(), 700);
  }

  // The session table, paged as `/user/sessions` pages it.
  async historyGo(index) {
    if (index < 0 || index >= this.history.cursors.length + 1) return;
    if (index === this.history.cursors.length) {
      if (!this.history.next) return;
      this.history.cursors.push(this.history.next);
    }
    this.history.index = index;
    await this.loadHistory(this.gen);
  }

  async loadHistory(gen) {
    const h = this.history;
    let page;
    try {
      page = await get(withQuery('user/sessions', {
        uid: this.uid, limit: HISTORY_PAGE, before: h.cursors[h.index],
      }));
    } catch (e) {
      this.fail(e);
      return;
    }
    if (gen !== this.gen) return;
    h.next = page.next ?? null;
    h.cursors.length = h.index + 1;
    const now = Date.now();
    const rows = page.sessions.map((s) => {
      const start = Date.parse(s.connected_at);
      const end = s.disconnected_at ? Date.parse(s.disconnected_at) : null;
      return el('tr', { 'data-session-id': s.session_id },
        el('td', { class: 'when' }, dateTime(start)),
        el('td', { class: 'when' }, end === null ? 'open' : sameDay(start, end) ? timeOfDay(end, true) : dateTime(end)),
        el('td', { class: 'when' }, duration((end ?? now) - start)),
        el('td', { class: 'nowrap' }, `${s.device_name} (${s.device_flag})`),
        el('td', { class: 'mono' }, s.device_id),
        el('td', {}, levelName(s.device_level)),
        el('td', { class: 'num' }, s.node_id),
        el('td', { class: 'mono' }, s.peer),
        el('td', {}, reasonBadge(s.reason)));
    });
    $('history-table').tBodies[0].replaceChildren(...rows);
    const first = h.index * HISTORY_PAGE + 1;
    $('history-page').textContent = page.sessions.length === 0
      ? 'No sessions.'
      : `Sessions ${count(first)}–${count(first + page.sessions.length - 1)}, newest first` +
        `${h.next ? '' : ' (the oldest)'}.`;
    $('history-newest').disabled = h.index === 0;
    $('history-newer').disabled = h.index === 0;
    $('history-older').disabled = !h.next;
  }

  eventsPage(after) {
    return get(withQuery('events', { uid: this.uid, after, limit: EVENTS_PAGE }));
  }

  // The newest events of the uid: probes back from the log's end, a wider span each time,
  // until it has a screenful or reaches the start.
  async loadLatestEvents(gen) {
    try {
      const head = await get(withQuery('events', { uid: this.uid, limit: 1 }));
      if (gen !== this.gen) return;
      let span = 256;
      for (;;) {
        const after = Math.max(0, head.last_seq - span);
        let page = await this.eventsPage(after);
        if (gen !== this.gen) return;
        let got = page.events;
        // More than a page in the span: read on to the end, keeping the newest.
        while (page.events.length === EVENTS_PAGE) {
          page = await this.eventsPage(page.events[page.events.length - 1].seq);
          if (gen !== this.gen) return;
          got = got.concat(page.events).slice(-EVENTS_KEEP);
        }
        if (got.length >= EVENTS_FIRST || after === 0) {
          this.events.list = got.reverse();
          this.events.cursor = page.last_seq;
          this.events.olderDone = after === 0 && got.length < EVENTS_KEEP;
          break;
        }
        span *= 8;
      }
      this.drawEvents(0);
    } catch (e) {
      this.fail(e);
    }
  }

  // The events just before the oldest shown.
  async loadOlderEvents() {
    const gen = this.gen;
    const list = this.events.list;
    const before = list.length ? list[list.length - 1].seq : this.events.cursor + 1;
    let span = 256;
    try {
      for (let tries = 0; tries < 40; tries += 1) {
        const after = Math.max(0, before - 1 - span);
        const page = await this.eventsPage(after);
        if (gen !== this.gen) return;
        const older = page.events.filter((e) => e.seq < before);
        const full = page.events.length === EVENTS_PAGE;
        if (full && older.length && older[older.length - 1].seq < before - 1 && span > 1) {
          // Too many to read at once: a narrower span, so that none is skipped.
          span = Math.max(1, Math.floor(span / 4));
          continue;
        }
        if (older.length || after === 0) {
          this.events.list = list.concat(older.reverse());
          if (after === 0 && !full) this.events.olderDone = true;
          this.drawEvents(0);
          this.announce(older.length ? `${older.length} older events.` : 'No older events.');
          return;
        }
        span *= 8;
      }
    } catch (e) {
      this.fail(e);
    }
  }

  // New events since the last read, put on top.
  async followEvents() {
    if (this.uid === null || !$('events-follow').checked || this.following) return;
    this.following = true;
    const gen = this.gen;
    try {
      let fresh = [];
      for (let pages = 0; pages < 5; pages += 1) {
        const page = await this.eventsPage(this.events.cursor);
        if (gen !== this.gen) return;
        fresh = fresh.concat(page.events);
        if (page.events.length === EVENTS_PAGE) {
          this.events.cursor = page.events[page.events.length - 1].seq;
        } else {
          this.events.cursor = page.last_seq;
          break;
        }
      }
      if (fresh.length) {
        this.events.list = fresh.reverse().concat(this.events.list).slice(0, EVENTS_KEEP);
        this.drawEvents(fresh.length);
        this.announce(`${fresh.length} new event${fresh.length === 1 ? '' : 's'}.`);
      }
    } catch (e) {
      this.fail(e);
    } finally {
      this.following = false;
    }
  }

  drawEvents(freshCount) {
    const rows = this.events.list.map((e, i) => el('tr', { class: i < freshCount ? 'fresh' : null, 'data-seq': e.seq, 'data-type': e.type },
      el('td', { class: 'num' }, e.seq),
      el('td', { class: 'when' }, dateTime(e.recorded_at)),
      el('td', {}, e.type),
      el('td', { class: 'num' }, e.node_id),
      el('td', {}, eventSummary(e)),
      el('td', {}, el('details', {}, el('summary', {}, 'JSON'), el('pre', {}, JSON.stringify(e, null, 1))))));
    $('events-table').tBodies[0].replaceChildren(...rows);
    $('events-empty').hidden = rows.length > 0;
    $('events-older').disabled = this.events.olderDone;
    $('events-note').textContent = this.events.olderDone
      ? `All ${count(rows.length)} events shown.`
      : `The newest ${count(rows.length)} events shown.`;
  }
}

// One line saying what an event did (its raw JSON is beside it).
export function eventSummary(e) {
  const d = e.data ?? {};
  switch (e.type) {
    case 'Connected':
      return `${flagName(d.device_flag)}, ${levelName(d.device_level)}, device ${d.device_id}, from ${d.peer}, on node ${d.node_id}`;
    case 'Disconnected':
      return `${flagName(d.device_flag)}: ${d.reason}`;
    case 'TokenUpdated':
      return `${flagName(d.device_flag)}: new ${levelName(d.device_level)} token`;
    case 'DeviceQuit':
      return d.device_flag === -1 ? 'every device quit' : `${flagName(d.device_flag)} quit`;
    case 'SystemUidsAdded':
      return `added: ${(d.uids ?? []).join(', ')}`;
    case 'SystemUidsRemoved':
      return `removed: ${(d.uids ?? []).join(', ')}`;
    default:
      return '';
  }
}
