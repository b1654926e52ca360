// The console's one way to the API: every call goes through `call`, which adds the manager
// token (when the operator gave one) in the `token` header, and turns every failure into an
// ApiError whose message a person can act on. The token lives in sessionStorage (this tab
// only); nothing else is ever stored by this module.

const TOKEN_KEY = 'wkuser.console.token';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// Why a token cannot be sent at all (a header value has no line breaks or control
// characters, and no space at either end), or null when it can.
export function tokenProblem(value) {
  if (value.length === 0) return 'Type the manager token.';
  if (/[\u0000-\u001f\u007f]/.test(value)) return 'The token cannot hold control characters or line breaks.';
  if (value.trim() !== value) return 'The token cannot start or end with a space.';
  if (/[^\u0020-\u00ff]/.test(value)) return 'An HTTP header cannot carry this token: it holds characters beyond Latin-1.';
  return null;
}

// Calls the API at `path` (relative to the page, so that a proxy prefix is kept); answers the
// parsed JSON body. `body`, when given, is sent as JSON.
export async function call(method, path, body) {
  const headers = {};
  const t = token();
  if (t !== null) headers.token = t;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, `Cannot reach the server (${e.message}). Is it running?`);
  }
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  if (response.status === 401) {
    throw new ApiError(401, t === null
      ? 'This server needs its manager token.'
      : 'Wrong manager token: the server refused it (401 unauthorized).');
  }
  if (!response.ok) {
    const msg = json && typeof json.msg === 'string' ? json.msg : text.slice(0, 200);
    throw new ApiError(response.status, `${msg} (HTTP ${response.status})`);
  }
  return json;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);

// `path?name=value&...`, values encoded, undefined ones left out.
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}
