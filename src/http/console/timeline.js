// The timeline: one user's sessions over a time span, drawn as SVG bars at their real times on
// a time axis in the browser's time zone, one lane per device flag, each bar coloured by how
// the session ended (open sessions run to now). Hovering or focusing a bar shows its details;
// the chart is one tab stop, and the arrow keys move between bars (left and right within a
// lane, up and down across lanes), so it works with the keyboard alone.

import {
  dateTime, dayName, duration, flagName, levelName, reasonColour, reasonLabel, timeOfDay,
} from './format.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
const BAR_H = 16;
const ROW_GAP = 4;
const LANE_PAD = 7;
const MAX_ROWS = 4;
const AXIS_H = 34;
const TOP = 16;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;

// Tick steps the axis may use, smallest first: seconds and minutes on round times, hours
// aligned to local midnight, then days.
const STEPS = [
  ...[1, 2, 5, 10, 15, 30].map((n) => ({ ms: n * SECOND, fine: true, seconds: true })),
  ...[1, 2, 5, 10, 15, 30].map((n) => ({ ms: n * MINUTE, fine: true })),
  { ms: HOUR, hours: 1 }, { ms: 2 * HOUR, hours: 2 }, { ms: 3 * HOUR, hours: 3 },
  { ms: 6 * HOUR, hours: 6 }, { ms: 12 * HOUR, hours: 12 },
  { ms: DAY, days: 1 }, { ms: 2 * DAY, days: 2 }, { ms: 7 * DAY, days: 7 },
];

// The tick times between `from` and `to` for at most `maxTicks` ticks, at local round times.
export function ticks(from, to, maxTicks) {
  const step = STEPS.find((s) => (to - from) / s.ms <= maxTicks) ?? STEPS[STEPS.length - 1];
  const out = [];
  if (step.fine) {
    // Under an hour, round multiples of the step are round local times too (time zones are
    // whole quarter hours away from UTC).
    for (let t = Math.ceil(from / step.ms) * step.ms; t <= to; t += step.ms) {
      const d = new Date(t);
      out.push({ t, midnight: d.getHours() === 0 && d.getMinutes() === 0 && d.getSeconds() === 0 });
    }
    return { ticks: out, daily: false, seconds: Boolean(step.seconds) };
  }
  const d = new Date(from);
  d.setHours(0, 0, 0, 0);
  let guard = 0;
  while (d.getTime() <= to && guard < 2000) {
    guard += 1;
    const t = d.getTime();
    if (t >= from) out.push({ t, midnight: d.getHours() === 0 && d.getMinutes() === 0 });
    if (step.hours) {
      d.setHours(d.getHours() + step.hours);
      // A daylight-saving change can leave the hour off the step: realign on the next.
      if (d.getHours() % step.hours !== 0) d.setHours(d.getHours() - (d.getHours() % step.hours));
    } else {
      d.setDate(d.getDate() + step.days);
    }
  }
  return { ticks: out, daily: !step.hours, seconds: false };
}

// Sub-rows inside a lane, so that sessions that overlap (several devices of one flag) do not
// hide each other: each bar takes the first row free at its start.
function packRows(bars) {
  const rowEnds = [];
  for (const b of bars) {
    // Half a pixel of slack: a session that starts as the one before it ends (a replaced
    // device) shares its row.
    let row = rowEnds.findIndex((end) => end <= b.x + 0.5);
    if (row === -1) {
      row = rowEnds.length < MAX_ROWS ? rowEnds.length : MAX_ROWS - 1;
      rowEnds[row] = -Infinity;
    }
    b.row = row;
    rowEnds[row] = Math.max(rowEnds[row], b.x + b.w);
  }
  return Math.max(1, rowEnds.length);
}

export function describe(s, now) {
  const start = Date.parse(s.connected_at);
  const end = s.disconnected_at ? Date.parse(s.disconnected_at) : null;
  const device = `${s.device_name ?? flagName(s.device_flag)}, device ${s.device_id}`;
  if (end === null) {
    return `${device}, since ${dateTime(start)} (${duration(now - start)}), still open`;
  }
  return `${device}, ${dateTime(start)} to ${dateTime(end)} (${duration(end - start)}), ended: ${s.reason}`;
}

export class Timeline {
  constructor(container, tooltip) {
    this.container = container;
    this.tooltip = tooltip;
    this.last = null;
    this.activeId = null;
    this.bars = [];
    // Redrawn at a new width, once per frame at most.
    let pending = false;
    new ResizeObserver(() => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        if (this.last && this.container.clientWidth !== this.drawnWidth) this.render(this.last);
      });
    }).observe(container);
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') this.hideTip();
    });
  }

  // `sessions` newest first as `/user/sessions` answers them; `onlineFlags` the flags memory
  // says are online (their lanes show even when empty); `from`..`now` the span, in ms.
  render({ uid, sessions, from, now, onlineFlags }) {
    this.last = { uid, sessions, from, now, onlineFlags };
    const hadFocus = this.container.contains(document.activeElement);
    const width = Math.max(280, this.container.clientWidth);
    this.drawnWidth = this.container.clientWidth;
    const labelW = width < 520 ? 62 : 92;
    const x0 = labelW;
    const plotW = width - labelW - 14;
    const span = now - from;
    const X = (t) => x0 + ((t - from) / span) * plotW;

    const visible = sessions.filter((s) => {
      const end = s.disconnected_at ? Date.parse(s.disconnected_at) : now;
      return end >= from && Date.parse(s.connected_at) <= now;
    });
    const flags = [...new Set([...visible.map((s) => s.device_flag), ...onlineFlags])].sort((a, b) => a - b);

    // Bars per lane, oldest first.
    const lanes = flags.map((flag) => ({ flag, bars: [] }));
    for (const s of [...visible].reverse()) {
      const start = Math.max(from, Date.parse(s.connected_at));
      const end = Math.min(now, s.disconnected_at ? Date.parse(s.disconnected_at) : now);
      const x = X(start);
      const w = Math.max(3, X(end) - x);
      lanes.find((l) => l.flag === s.device_flag).bars.push({ s, x, w });
    }
    let y = TOP;
    for (const lane of lanes) {
      lane.rows = packRows(lane.bars);
      lane.y = y;
      lane.h = LANE_PAD * 2 + lane.rows * BAR_H + (lane.rows - 1) * ROW_GAP;
      y += lane.h + 2;
    }
    const plotBottom = Math.max(y, TOP + 40);
    const height = plotBottom + AXIS_H;

    const root = svg('svg', {
      width, height, viewBox: `0 0 ${width} ${height}`,
      role: 'group',
      'aria-label': `Sessions of ${uid} from ${dateTime(from)} to now, one row per device`,
      'data-from': from, 'data-to': now, 'data-plot-x': x0, 'data-plot-width': plotW,
    });

    // Lanes and their labels.
    for (const lane of lanes) {
      const g = svg('g', { class: 'lane', 'data-flag': lane.flag, 'data-y': lane.y, 'data-h': lane.h });
      g.append(svg('rect', { class: 'lane-bg', x: x0, y: lane.y, width: plotW, height: lane.h, 'aria-hidden': 'true' }));
      g.append(svg('text', { class: 'lane-label', x: 2, y: lane.y + 15, 'aria-hidden': 'true' }, flagName(lane.flag)));
      g.append(svg('text', { class: 'lane-sub', x: 2, y: lane.y + 29, 'aria-hidden': 'true' }, `flag ${lane.flag}`));
      lane.g = g;
      root.append(g);
    }

    // The axis: grid lines and labels at local round times, then the now line.
    const { ticks: tickList, daily, seconds } = ticks(from, now, Math.max(2, Math.floor(plotW / 72)));
    const axis = svg('g', { class: 'axis', 'aria-hidden': 'true' });
    for (const { t, midnight } of tickList) {
      const x = X(t);
      axis.append(svg('line', { class: 'grid', x1: x, x2: x, y1: TOP - 4, y2: plotBottom + 4 }));
      if (x < x0 + 16 || x > x0 + plotW - 26) continue;
      const label = daily || midnight ? dayName(t) : timeOfDay(t, seconds);
      const cls = daily || midnight ? 'tick-label tick-day' : 'tick-label';
      axis.append(svg('text', { class: cls, x, y: plotBottom + 18, 'text-anchor': 'middle' }, label));
    }
    const nowX = X(now);
    axis.append(svg('line', { class: 'now-line', x1: nowX, x2: nowX, y1: TOP - 6, y2: plotBottom + 4 }));
    axis.append(svg('text', { class: 'now-label', x: nowX, y: TOP - 6, 'text-anchor': 'end' }, 'now'));
    axis.append(svg('text', { class: 'tick-label', x: x0, y: plotBottom + 31 }, dateTime(from)));
    root.insertBefore(axis, root.firstChild);

    if (lanes.length === 0) {
      root.append(svg('text', { class: 'empty', x: x0 + 8, y: TOP + 24 }, 'No sessions in this time span.'));
    }

    // The bars, last so they are drawn over the grid. One prototype cloned per bar and one set
    // of listeners on the chart (not per bar): a user of 10,000 sessions draws in a blink.
    this.bars = [];
    this.byRect = new Map();
    const proto = svg('rect', { class: 'bar', height: BAR_H, rx: 2, tabindex: -1, role: 'img' });
    for (const [laneIndex, lane] of lanes.entries()) {
      const frag = document.createDocumentFragment();
      for (const [i, b] of lane.bars.entries()) {
        const s = b.s;
        const rect = proto.cloneNode(false);
        rect.setAttribute('x', b.x.toFixed(2));
        rect.setAttribute('y', lane.y + LANE_PAD + b.row * (BAR_H + ROW_GAP));
        rect.setAttribute('width', b.w.toFixed(2));
        rect.setAttribute('fill', reasonColour(s.reason));
        rect.setAttribute('aria-label', describe(s, now));
        rect.setAttribute('data-session-id', s.session_id);
        rect.setAttribute('data-flag', s.device_flag);
        rect.setAttribute('data-reason', s.reason ?? 'open');
        rect.setAttribute('data-start', Date.parse(s.connected_at));
        rect.setAttribute('data-end', s.disconnected_at ? Date.parse(s.disconnected_at) : '');
        const entry = { rect, s, lane: laneIndex, index: i };
        frag.append(rect);
        b.entry = entry;
        this.byRect.set(rect, entry);
        this.bars.push(entry);
      }
      lane.g.append(frag);
    }
    this.lanes = lanes;
    root.addEventListener('mouseover', (e) => {
      const entry = this.byRect.get(e.target);
      if (!entry) return;
      entry.rect.classList.add('hover');
      this.showTip(entry);
    });
    root.addEventListener('mouseout', (e) => {
      const entry = this.byRect.get(e.target);
      if (!entry) return;
      entry.rect.classList.remove('hover');
      this.hideTip();
    });
    root.addEventListener('focusin', (e) => {
      const entry = this.byRect.get(e.target);
      if (!entry) return;
      this.activeId = entry.s.session_id;
      if (!this.restoring) this.showTip(entry);
    });
    root.addEventListener('focusout', () => this.hideTip());
    root.addEventListener('keydown', (e) => {
      const entry = this.byRect.get(e.target);
      if (entry) this.onKey(e, entry, this.lanes);
    });

    // One tab stop: the bar focused last, else the newest.
    const active = this.bars.find((b) => b.s.session_id === this.activeId) ??
      this.bars.reduce((best, b) => (!best || Date.parse(b.s.connected_at) > Date.parse(best.s.connected_at) ? b : best), null);
    if (active) active.rect.setAttribute('tabindex', '0');

    this.container.replaceChildren(root);
    if (hadFocus && active && active.s.session_id === this.activeId) {
      // The bar keeps the focus across a redraw; its details stay as they were (shown, or
      // dismissed with Escape).
      const tipShown = !this.tooltip.hidden;
      this.restoring = true;
      active.rect.focus({ preventScroll: true });
      this.restoring = false;
      if (tipShown) this.showTip(active);
    }
    return { bars: this.bars.length, lanes: lanes.length };
  }

  onKey(e, entry, lanes) {
    const lane = lanes[entry.lane];
    let target = null;
    if (e.key === 'ArrowRight') target = lane.bars[entry.index + 1];
    else if (e.key === 'ArrowLeft') target = lane.bars[entry.index - 1];
    else if (e.key === 'Home') target = lane.bars[0];
    else if (e.key === 'End') target = lane.bars[lane.bars.length - 1];
    else if (e.key === 'ArrowUp' || e.key === 'ArrowDown') {
      const step = e.key === 'ArrowUp' ? -1 : 1;
      // The nearest lane that has bars, then the bar closest in time.
      for (let l = entry.lane + step; l >= 0 && l < lanes.length; l += step) {
        if (lanes[l].bars.length === 0) continue;
        const mid = Date.parse(entry.s.connected_at);
        target = lanes[l].bars.reduce((best, b) =>
          (!best || Math.abs(Date.parse(b.s.connected_at) - mid) < Math.abs(Date.parse(best.s.connected_at) - mid) ? b : best), null);
        break;
      }
    } else {
      return;
    }
    e.preventDefault();
    if (!target) return;
    entry.rect.setAttribute('tabindex', '-1');
    target.entry.rect.setAttribute('tabindex', '0');
    target.entry.rect.focus();
  }

  showTip(entry) {
    const s = entry.s;
    const now = this.last.now;
    const start = Date.parse(s.connected_at);
    const end = s.disconnected_at ? Date.parse(s.disconnected_at) : null;
    const rows = [
      ['Device', `${s.device_name ?? flagName(s.device_flag)} (flag ${s.device_flag})`],
      ['Device id', s.device_id],
      ['Level', levelName(s.device_level)],
      ['Node', s.node_id],
      ['Peer', s.peer],
      ['Connected', dateTime(start)],
      ['Ended', end === null ? 'still open' : dateTime(end)],
      ['Lasted', duration((end ?? now) - start)],
      ['How it ended', reasonLabel(s.reason)],
    ];
    const tip = this.tooltip;
    tip.replaceChildren();
    const title = document.createElement('div');
    title.className = 'tip-title';
    title.textContent = 'Session';
    const dl = document.createElement('dl');
    for (const [k, v] of rows) {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = String(v);
      dl.append(dt, dd);
    }
    tip.append(title, dl);
    tip.hidden = false;
    const r = entry.rect.getBoundingClientRect();
    const tw = tip.offsetWidth;
    const th = tip.offsetHeight;
    let left = Math.min(Math.max(8, r.left + r.width / 2 - tw / 2), window.innerWidth - tw - 8);
    let top = r.bottom + 8;
    if (top + th > window.innerHeight - 8) top = Math.max(8, r.top - th - 8);
    tip.style.left = `${left}px`;
    tip.style.top = `${top}px`;
  }

  hideTip() {
    this.tooltip.hidden = true;
  }
}
