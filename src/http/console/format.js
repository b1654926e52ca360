// What the console shows a person: device and reason names, the reasons' colours, times in the
// browser's time zone, durations, and `el`, the one way views build DOM (text is always set as
// text, never parsed as HTML, so a uid or a device id cannot inject markup).

// protocol.md section 1: the concept page's names, `flag N` for the rest.
export function flagName(flag) {
  switch (flag) {
    case 1: return 'iOS';
    case 2: return 'Android';
    case 3: return 'Web';
    case 4: return 'Desktop';
    default: return `flag ${flag}`;
  }
}

export function levelName(level) {
  if (level === 1 || level === 'master') return 'master';
  if (level === 0 || level === 'slave') return 'slave';
  return String(level);
}

// protocol.md section 3.4, in its order, each with a colour (at least 3:1 against the chart's
// background) and what it means.
export const REASONS = [
  ['client_closed', '#6e7781', 'the client closed or the connection dropped'],
  ['device_quit', '#cf222e', 'kicked by device_quit'],
  ['master_login', '#8250df', 'replaced by a master login on another device'],
  ['token_updated', '#9a6700', 'kicked by a master token update'],
  ['replaced', '#0969da', 'the same device id connected again'],
  ['idle_timeout', '#bc4c00', 'nothing received within the idle limit'],
  ['slow_consumer', '#bf3989', 'did not read its messages'],
  ['protocol_error', '#6c3a00', 'broke the protocol'],
  ['server_shutdown', '#1b7c83', 'the server stopped'],
  ['server_restart', '#0a3069', 'found open at a restart (a crash)'],
  ['node_lost', '#24292f', 'its node stopped renewing its lease'],
];

export const OPEN_COLOUR = '#1a7f37';
const UNKNOWN_COLOUR = '#768390';

export function reasonColour(reason) {
  if (reason === null || reason === undefined) return OPEN_COLOUR;
  const known = REASONS.find(([name]) => name === reason);
  return known ? known[1] : UNKNOWN_COLOUR;
}

export function reasonLabel(reason) {
  return reason === null || reason === undefined ? 'still open' : reason;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

// `2026-12-06 16:29:54` in the browser's time zone: sortable, and readable at a glance.
export function dateTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// `16:29`, or `16:29:54` with `seconds`.
export function timeOfDay(ms, seconds = false) {
  const d = new Date(ms);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return seconds ? `${hm}:${pad(d.getSeconds())}` : hm;
}

// Whether two times fall on the same local day.
export function sameDay(a, b) {
  return new Date(a).toDateString() === new Date(b).toDateString();
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

// `Mon 7 Dec`.
export function dayName(ms) {
  const d = new Date(ms);
  return `${DAYS[d.getDay()]} ${d.getDate()} ${MONTHS[d.getMonth()]}`;
}

// The browser's offset from UTC, as `UTC+01:00`.
export function zoneName() {
  const minutes = -new Date().getTimezoneOffset();
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

// `3 d 4 h`, `2 h 05 min`, `45 s`: the two largest units.
export function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${pad(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${pad(m % 60)} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export function count(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US');
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

// A DOM element: `attrs` as attributes (`class`, `data-*`, `aria-*`...; a function value for
// an `on...` name is a listener), `children` as nodes or text.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// A coloured square and the reason's name, for tables and the legend.
export function reasonBadge(reason) {
  const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true', 'data-reason': reason ?? 'open' });
  swatch.style.background = reasonColour(reason);
  return el('span', { class: 'reason' }, swatch, reasonLabel(reason));
}
