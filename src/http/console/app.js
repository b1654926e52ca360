// The console's wiring: the manager token (asked for when the server needs one, kept for this
// tab only), the uid search and its recent list (uids only, in localStorage), the confirmation
// dialog, and the clock that refreshes what is shown.

import { forgetToken, get, setToken, token, tokenProblem } from './api.js';
import { el, OPEN_COLOUR, REASONS, zoneName } from './format.js';
import { SystemUidsView, SystemView } from './system.js';
import { UserView } from './user.js';

const RECENT_KEY = 'wkuser.console.recent';
const RECENT_MAX = 8;
const TICK_MS = 2000;

const $ = (id) => document.getElementById(id);

let ticker = null;
let ticks = 0;
let alertTimer = null;

function announce(text) {
  const status = $('status');
  status.textContent = '';
  // A fresh text node after a pause, so that the same words twice are read twice.
  setTimeout(() => { status.textContent = text; }, 50);
}

function showAlert(text) {
  const alert = $('alert');
  alert.textContent = text;
  alert.hidden = false;
  clearTimeout(alertTimer);
  alertTimer = setTimeout(() => { alert.hidden = true; }, 15000);
}

// Every failure of a call ends here: a refused token sends the operator back to the token
// form; anything else is shown and the console carries on.
function fail(error) {
  if (error.status === 401) {
    const had = token() !== null;
    forgetToken();
    showLogin(had
      ? 'The server refused the manager token (401 unauthorized). Type it again.'
      : 'This server needs its manager token.', had);
    return;
  }
  showAlert(error.message);
}

const confirmDialog = ({ title, text, action }) => new Promise((resolve) => {
  const dialog = $('confirm');
  const opener = document.activeElement;
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = action;
  const done = (answer) => {
    $('confirm-ok').onclick = null;
    $('confirm-cancel').onclick = null;
    dialog.oncancel = null;
    dialog.close();
    // Back where the operator was; a kick button may have gone with its device.
    if (opener && opener.isConnected) opener.focus();
    else $('main').focus();
    resolve(answer);
  };
  $('confirm-ok').onclick = () => done(true);
  $('confirm-cancel').onclick = () => done(false);
  dialog.oncancel = (e) => {
    e.preventDefault();
    done(false);
  };
  dialog.showModal();
});

const services = { confirm: confirmDialog, announce, fail };
const user = new UserView(services);
const system = new SystemView(services);
const systemUids = new SystemUidsView(services);

function showLogin(why, refused) {
  stopTicker();
  user.close();
  $('app').hidden = true;
  $('login').hidden = false;
  $('forget-token').hidden = true;
  $('token-state').textContent = '';
  $('login-why').textContent = 'This server needs its manager token.';
  const error = $('login-error');
  if (refused) {
    error.textContent = why;
    error.hidden = false;
  } else {
    error.hidden = true;
  }
  $('login-token').value = '';
  $('login-token').focus();
}

// Asks the server whether it takes this tab's token (or none); `typed`: the operator just
// typed it, so a refusal says the token is wrong.
async function probe(typed) {
  try {
    await get('stats');
  } catch (e) {
    if (e.status === 401) {
      const had = token() !== null;
      forgetToken();
      showLogin(had
        ? `Wrong manager token: the server refused it (401 unauthorized). Check the token the ` +
          `server was started with (--manager-token or WK_MANAGER_TOKEN) and try again.`
        : 'This server needs its manager token.', had || typed);
      return;
    }
    showAlert(`${e.message} Trying again in a few seconds.`);
    setTimeout(() => probe(false), 5000);
    return;
  }
  enterApp();
}

function enterApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('alert').hidden = true;
  const has = token() !== null;
  $('token-state').textContent = has ? 'Manager token set for this tab' : 'No manager token needed';
  $('forget-token').hidden = !has;
  systemUids.load();
  system.refresh();
  startTicker();
  const uid = uidFromHash();
  if (uid) search(uid);
  else $('search-uid').focus();
}

function startTicker() {
  stopTicker();
  ticker = setInterval(() => {
    if (document.hidden) return;
    ticks += 1;
    system.refresh();
    user.followEvents();
    if (ticks % 2 === 0) user.refresh();
  }, TICK_MS);
}

function stopTicker() {
  if (ticker !== null) clearInterval(ticker);
  ticker = null;
}

// Why `uid` is not one (protocol.md section 1), or null.
function uidProblem(uid) {
  if (uid.length === 0) return 'Type a uid.';
  if (new TextEncoder().encode(uid).length > 255) return 'A uid is at most 255 bytes.';
  if (/[\s\u0000-\u001f\u007f]/.test(uid)) return 'A uid has no spaces or control characters.';
  if (/[@#&]/.test(uid)) return 'A uid cannot hold @, # or &.';
  return null;
}

function uidFromHash() {
  const m = /^#uid=(.*)$/.exec(location.hash);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

function recent() {
  try {
    const list = JSON.parse(localStorage.getItem(RECENT_KEY) ?? '[]');
    return Array.isArray(list) ? list.filter((u) => typeof u === 'string') : [];
  } catch {
    return [];
  }
}

function remember(uid) {
  const list = [uid, ...recent().filter((u) => u !== uid)].slice(0, RECENT_MAX);
  localStorage.setItem(RECENT_KEY, JSON.stringify(list));
  drawRecent();
}

function drawRecent() {
  const list = recent();
  $('recent').hidden = list.length === 0;
  $('recent-list').replaceChildren(...list.map((uid) => el('li', {},
    el('button', { type: 'button', 'aria-label': `Show ${uid}`, onclick: () => search(uid) }, uid))));
}

async function search(uid) {
  const error = $('search-error');
  const problem = uidProblem(uid);
  if (problem) {
    error.textContent = problem;
    error.hidden = false;
    $('search-uid').focus();
    return;
  }
  error.hidden = true;
  $('search-uid').value = uid;
  remember(uid);
  history.replaceState(null, '', `#uid=${encodeURIComponent(uid)}`);
  announce(`Showing ${uid}.`);
  await user.open(uid);
}

function drawLegend() {
  const item = (reason, colour, name, meaning) => {
    const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true', 'data-reason': reason });
    swatch.style.background = colour;
    return el('li', { 'data-reason': reason, 'data-colour': colour }, swatch, el('span', {}, name),
      el('span', { class: 'sr-only' }, `: ${meaning}`));
  };
  $('legend').replaceChildren(
    item('open', OPEN_COLOUR, 'open (still connected)', 'the session is still open'),
    ...REASONS.map(([name, colour, meaning]) => item(name, colour, name, meaning)));
  $('zone-note').textContent = `Times are in your browser's time zone (${zoneName()}).`;
}

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = $('login-token').value;
  const problem = tokenProblem(value);
  if (problem) {
    $('login-error').textContent = problem;
    $('login-error').hidden = false;
    $('login-token').focus();
    return;
  }
  setToken(value);
  probe(true);
});

$('forget-token').addEventListener('click', () => {
  forgetToken();
  showLogin('', false);
  $('login-why').textContent = 'Token forgotten. Type it again to go on.';
});

$('search-form').addEventListener('submit', (e) => {
  e.preventDefault();
  search($('search-uid').value.trim());
});

$('recent-clear').addEventListener('click', () => {
  localStorage.removeItem(RECENT_KEY);
  drawRecent();
  $('search-uid').focus();
});

window.addEventListener('hashchange', () => {
  const uid = uidFromHash();
  if (uid && uid !== user.uid && !$('app').hidden) search(uid);
});

drawLegend();
drawRecent();
probe(false);
