// vidhost web UI. One script for every page: it renders the page for
// location.pathname and talks only to the public API (/api/v1), like any
// other client. Text from the API is only ever set as text (never as HTML),
// and the page's Content-Security-Policy allows no inline script.
"use strict";

// ---- DOM helpers ------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the CSP, unlike a style attribute
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $main = () => document.getElementById("main");
function show(...nodes) {
  const m = $main();
  m.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}
function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  s = Math.round(s);
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return hh ? `${hh}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
}
function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function fmtDate(s) { return s ? new Date(s).toLocaleString() : ""; }
function problemText(e) {
  if (e && e.problem) return e.problem.detail || e.problem.title || e.message;
  return e && e.message ? e.message : String(e);
}
function errorBox(e) { return h("p", { class: "error", role: "alert" }, problemText(e)); }

// ---- auth and the API -------------------------------------------------------

const AUTH_KEY = "vidhost.auth";
const auth = {
  get() { try { return JSON.parse(localStorage.getItem(AUTH_KEY)) || null; } catch { return null; } },
  set(t) { localStorage.setItem(AUTH_KEY, JSON.stringify({ access_token: t.access_token, refresh_token: t.refresh_token })); },
  clear() { localStorage.removeItem(AUTH_KEY); me = null; },
};
let me = null; // the signed-in user ({id, email, display_name, role, mfa_enabled}) or null

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.code = problem && problem.code;
  }
}

// One refresh at a time, across tabs too: a refresh token used twice counts
// as stolen and ends the whole session, so a tab that waited re-reads the
// token another tab may have rotated meanwhile.
let refreshing = null;
async function refresh(used) {
  if (!refreshing) {
    const run = async () => {
      const cur = auth.get();
      if (!cur) return false;
      if (cur.access_token !== used) return true; // another tab refreshed
      const r = await fetch("/api/v1/auth/refresh", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: cur.refresh_token }),
      });
      if (!r.ok) { auth.clear(); return false; }
      auth.set(await r.json());
      return true;
    };
    refreshing = (navigator.locks ? navigator.locks.request("vidhost-refresh", run) : run())
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function api(method, path, body, opts = {}) {
  for (let attempt = 0; ; attempt++) {
    const t = auth.get();
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (t && opts.auth !== false) headers.authorization = `Bearer ${t.access_token}`;
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401 && t && opts.auth !== false && attempt === 0 && await refresh(t.access_token)) continue;
    if (!r.ok) {
      let p = null;
      try { p = await r.json(); } catch { /* not JSON */ }
      throw new ApiError(r.status, p);
    }
    if (r.status === 204) return null;
    const ct = r.headers.get("content-type") || "";
    return ct.includes("json") ? r.json() : r.text();
  }
}
const bearer = () => { const t = auth.get(); return t ? t.access_token : null; };

async function loadMe() {
  if (!auth.get()) { me = null; return null; }
  try { me = await api("GET", "/api/v1/me"); } catch (e) { if (e.status === 401) auth.clear(); me = null; }
  return me;
}

// ---- navigation ---------------------------------------------------------------

function go(path, replace) {
  if (replace) history.replaceState({}, "", path); else history.pushState({}, "", path);
  route();
}
document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a");
  if (!a || a.target || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/") || url.pathname.startsWith("/play/")) return;
  ev.preventDefault();
  go(url.pathname + url.search);
});
window.addEventListener("popstate", () => route());

let cleanups = []; // what the current page stops when it is left (streams, timers, players)
function onLeave(f) { cleanups.push(f); }

function renderNav() {
  const nav = document.getElementById("nav");
  const left = [h("a", { href: "/" }, "Videos")];
  const right = [];
  if (me) {
    if (me.role === "uploader" || me.role === "admin") left.push(h("a", { href: "/upload" }, "Upload"));
    left.push(h("a", { href: "/library" }, "Library"));
    if (me.role === "admin") left.push(h("a", { href: "/admin" }, "Admin"));
    right.push(h("a", { href: "/account", id: "nav-account" }, me.display_name));
    right.push(h("button", { class: "secondary", id: "logout", onclick: logout }, "Sign out"));
  } else {
    right.push(h("a", { href: "/login" }, "Sign in"), h("a", { href: "/register" }, "Register"));
  }
  nav.replaceChildren(...left, h("span", { class: "right" }, ...right));
}

async function logout() {
  const t = auth.get();
  if (t) {
    try { await fetch("/api/v1/auth/logout", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ refresh_token: t.refresh_token }) }); } catch { /* offline */ }
  }
  auth.clear();
  go("/");
}

const pages = [
  [/^\/$/, pageHome],
  [/^\/login$/, pageLogin],
  [/^\/register$/, pageRegister],
  [/^\/upload$/, pageUpload],
  [/^\/library$/, pageLibrary],
  [/^\/watch\/([^/]+)$/, pageWatch],
  [/^\/account$/, pageAccount],
  [/^\/admin$/, pageAdmin],
];

async function route() {
  for (const f of cleanups.splice(0)) { try { f(); } catch { /* already gone */ } }
  if (me === null && auth.get()) await loadMe();
  renderNav();
  const path = location.pathname;
  for (const [re, page] of pages) {
    const m = path.match(re);
    if (m) {
      try { await page(...m.slice(1).map(decodeURIComponent)); } catch (e) { show(errorBox(e)); }
      return;
    }
  }
  show(h("h1", {}, "Not found"));
}

function needSignIn() {
  if (me) return false;
  // Replaced, not pushed: Back then leaves the page that needed a sign-in.
  go(`/login?next=${encodeURIComponent(location.pathname)}`, true);
  return true;
}

// ---- video cards ----------------------------------------------------------------

function card(v) {
  const thumb = h("div", { class: "thumb" });
  if (v.thumbnail_url) thumb.style.backgroundImage = `url("${encodeURI(v.thumbnail_url)}")`;
  if (v.duration_s) thumb.append(h("span", { class: "dur" }, fmtDuration(v.duration_s)));
  return h("a", { class: "card", href: `/watch/${encodeURIComponent(v.id)}`, "data-video-id": v.id },
    thumb,
    h("div", { class: "meta" },
      h("div", { class: "title", title: v.title }, v.title || v.original_filename || "Untitled"),
      h("div", { class: "muted" }, v.owner ? v.owner.display_name : "")));
}

// ---- / : public videos, search ----------------------------------------------------

async function pageHome() {
  const params = new URLSearchParams(location.search);
  const q = params.get("q") || "";
  const sort = params.get("sort") || (q ? "relevance" : "recent");
  const input = h("input", { type: "search", name: "q", value: q, placeholder: "Search videos", "aria-label": "Search videos" });
  const sortSel = h("select", { name: "sort", "aria-label": "Sort" },
    ...["recent", "popular", "relevance"].map((s) => h("option", { value: s, selected: s === sort }, s)));
  let sortPicked = false;
  sortSel.onchange = () => { sortPicked = true; };
  const form = h("form", { class: "row", role: "search", onsubmit: (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    const words = input.value.trim();
    if (words) p.set("q", words);
    // A sort the user did not pick follows the query: relevance for words.
    const by = sortPicked || params.get("sort") ? sortSel.value : (words ? "relevance" : "recent");
    if (by !== "recent" || words) p.set("sort", by);
    go(`/${p.toString() ? "?" + p : ""}`);
  } }, h("div", { style: "flex:1" }, input), sortSel, h("button", { type: "submit" }, "Search"));
  const grid = h("div", { class: "grid", id: "videos" });
  const more = h("button", { class: "secondary", hidden: true }, "More");
  show(h("h1", {}, q ? `Results for “${q}”` : "Videos"), form, h("p"), grid, h("p"), more);
  let cursor = null;
  const load = async () => {
    const p = new URLSearchParams({ limit: "24", sort });
    if (q) p.set("q", q);
    if (cursor) p.set("cursor", cursor);
    // What anyone may see (public and ready), whoever is signed in.
    const r = await api("GET", `/api/v1/videos?${p}`, undefined, { auth: false });
    grid.append(...r.items.map(card));
    cursor = r.next_cursor;
    more.hidden = !cursor;
    if (!grid.children.length) grid.replaceWith(h("p", { class: "muted", id: "videos" }, q ? "No videos match." : "No videos yet."));
  };
  more.onclick = () => load().catch((e) => more.replaceWith(errorBox(e)));
  await load();
}

// ---- /login, /register ------------------------------------------------------------

function nextPath() {
  const n = new URLSearchParams(location.search).get("next");
  if (!n || !n.startsWith("/")) return "/library";
  // A page of this site only: resolved as the browser would (which reads
  // `//host`, `/\host` or `/<tab>/host` as another origin).
  const u = new URL(n, location.origin);
  return u.origin === location.origin ? u.pathname + u.search : "/library";
}

async function pageLogin() {
  const email = h("input", { type: "email", name: "email", required: true, autocomplete: "username" });
  const password = h("input", { type: "password", name: "password", required: true, autocomplete: "current-password" });
  const totp = h("input", { type: "text", name: "totp_code", inputmode: "numeric", autocomplete: "one-time-code" });
  const totpRow = h("div", { hidden: true }, h("label", {}, "Authenticator code (or a recovery code)"), totp);
  const msg = h("div");
  const form = h("form", { class: "box narrow", onsubmit: async (ev) => {
    ev.preventDefault();
    msg.replaceChildren();
    const body = { email: email.value, password: password.value };
    if (!totpRow.hidden && totp.value.trim()) body.totp_code = totp.value.trim();
    try {
      auth.set(await api("POST", "/api/v1/auth/login", body, { auth: false }));
      await loadMe();
      go(nextPath(), true);
    } catch (e) {
      if (e.code === "mfa_required" || e.code === "invalid_totp") {
        totpRow.hidden = false;
        totp.focus();
        if (e.code === "invalid_totp") msg.append(errorBox(e));
        else msg.append(h("p", { class: "muted" }, "Enter the code from your authenticator app."));
      } else msg.append(errorBox(e));
    }
  } },
  h("label", {}, "E-mail"), email, h("label", {}, "Password"), password, totpRow, msg,
  h("p", {}, h("button", { type: "submit" }, "Sign in")),
  h("p", { class: "muted" }, "No account? ", h("a", { href: "/register" }, "Register")));
  show(h("h1", {}, "Sign in"), form);
  email.focus();
}

async function pageRegister() {
  const email = h("input", { type: "email", name: "email", required: true, autocomplete: "username" });
  const name = h("input", { type: "text", name: "display_name", autocomplete: "nickname" });
  const password = h("input", { type: "password", name: "password", required: true, minlength: 12, autocomplete: "new-password" });
  const invite = h("input", { type: "text", name: "invite_code" });
  const msg = h("div");
  const form = h("form", { class: "box narrow", onsubmit: async (ev) => {
    ev.preventDefault();
    msg.replaceChildren();
    const body = { email: email.value, password: password.value, display_name: name.value || email.value.split("@")[0] };
    if (invite.value.trim()) body.invite_code = invite.value.trim();
    try {
      await api("POST", "/api/v1/auth/register", body, { auth: false });
      auth.set(await api("POST", "/api/v1/auth/login", { email: email.value, password: password.value }, { auth: false }));
      await loadMe();
      go("/library", true);
    } catch (e) { msg.append(errorBox(e)); }
  } },
  h("label", {}, "E-mail"), email, h("label", {}, "Display name"), name,
  h("label", {}, "Password (at least 12 characters)"), password,
  h("label", {}, "Invite code (if registration needs one)"), invite, msg,
  h("p", {}, h("button", { type: "submit" }, "Create account")));
  show(h("h1", {}, "Register"), form);
}

// ---- /upload : tus, resumable across reloads ---------------------------------------

const TUS_KEY = "vidhost.tus"; // fingerprint → {url, video_id, name, size}
const CHUNK = 8 * 1024 * 1024;
const fingerprint = (f) => `${f.name}|${f.size}|${f.lastModified}`;
function tusSaved() { try { return JSON.parse(localStorage.getItem(TUS_KEY)) || {}; } catch { return {}; } }
function tusSave(fp, v) { const s = tusSaved(); if (v) s[fp] = v; else delete s[fp]; localStorage.setItem(TUS_KEY, JSON.stringify(s)); }
const b64 = (s) => btoa(String.fromCharCode(...new TextEncoder().encode(s)));
const tusHeaders = (extra) => Object.assign({ "Tus-Resumable": "1.0.0", Authorization: `Bearer ${bearer()}` }, extra);

class TusUpload {
  constructor(file, meta, onprogress) {
    this.file = file; this.meta = meta; this.onprogress = onprogress;
    this.fp = fingerprint(file); this.xhr = null; this.paused = false;
  }
  async tusFetch(method, url, headers) {
    let r = await fetch(url, { method, headers: tusHeaders(headers) });
    if (r.status === 401 && await refresh(bearer())) r = await fetch(url, { method, headers: tusHeaders(headers) });
    return r;
  }
  async offset() {
    const saved = tusSaved()[this.fp];
    if (saved) {
      const r = await this.tusFetch("HEAD", saved.url);
      if (r.ok) { this.url = saved.url; this.videoId = saved.video_id; return Number(r.headers.get("Upload-Offset")); }
      tusSave(this.fp, null); // expired, completed elsewhere or removed: start over
    }
    const md = Object.entries(this.meta).filter(([, v]) => v).map(([k, v]) => `${k} ${b64(v)}`).join(",");
    const r = await this.tusFetch("POST", "/api/v1/tus", { "Upload-Length": String(this.file.size), "Upload-Metadata": md });
    if (r.status !== 201) {
      let p = null; try { p = await r.json(); } catch { /* none */ }
      throw new ApiError(r.status, p);
    }
    this.url = new URL(r.headers.get("Location"), location.href).pathname;
    this.videoId = this.url.split("/").pop();
    tusSave(this.fp, { url: this.url, video_id: this.videoId, name: this.file.name, size: this.file.size });
    return 0;
  }
  patch(off) {
    return new Promise((resolve, reject) => {
      const end = Math.min(off + CHUNK, this.file.size);
      const x = new XMLHttpRequest();
      this.xhr = x;
      x.open("PATCH", this.url);
      for (const [k, v] of Object.entries(tusHeaders({ "Upload-Offset": String(off), "Content-Type": "application/offset+octet-stream" }))) x.setRequestHeader(k, v);
      x.upload.onprogress = (e) => this.onprogress(off + e.loaded, this.file.size);
      x.onload = () => {
        if (x.status === 204) resolve(Number(x.getResponseHeader("Upload-Offset")));
        else { let p = null; try { p = JSON.parse(x.responseText); } catch { /* none */ } reject(new ApiError(x.status, p)); }
      };
      x.onerror = () => reject(new Error("network error"));
      x.onabort = () => reject(new Error("paused"));
      x.send(this.file.slice(off, end));
    });
  }
  async start() {
    this.paused = false;
    let off = await this.offset();
    this.onprogress(off, this.file.size);
    let failures = 0;
    while (off < this.file.size) {
      if (this.paused) return false;
      try { off = await this.patch(off); failures = 0; } catch (e) {
        if (this.paused) return false;
        if (e.status === 401 && await refresh(bearer())) continue;
        // Refused for good (not a video, too large, expired): nothing to resume.
        if (e instanceof ApiError && e.status !== 409 && e.status < 500) { tusSave(this.fp, null); throw e; }
        if (++failures > 5) throw e;
        await new Promise((r) => setTimeout(r, 1000 * failures));
        off = await this.offset(); // where the server is, after a failure
      }
      this.onprogress(off, this.file.size);
    }
    tusSave(this.fp, null);
    return true;
  }
  pause() { this.paused = true; if (this.xhr) this.xhr.abort(); }
}

async function pageUpload() {
  if (needSignIn()) return;
  if (me.role === "viewer") {
    show(h("h1", {}, "Upload"), h("p", { class: "error" }, "Your account may watch but not upload (role viewer). An admin can change that."));
    return;
  }
  const list = h("div", { id: "uploads" });
  const picker = h("input", { type: "file", multiple: true, accept: "video/*,.mkv,.ts,.mts", id: "file-input" });
  // "" leaves it to the server's default (uploads.default_visibility).
  const visibility = h("select", { name: "visibility", "aria-label": "Visibility" },
    h("option", { value: "" }, "server default"), ...["private", "unlisted", "public"].map((v) => h("option", { value: v }, v)));
  const drop = h("div", { class: "drop", id: "drop" },
    h("p", {}, "Drop video files here, or ", picker),
    h("p", { class: "row", style: "justify-content:center" }, "Visibility:", visibility));
  const add = (files) => { for (const f of files) list.append(uploadItem(f, visibility.value)); };
  picker.onchange = () => { add(picker.files); picker.value = ""; };
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); add(e.dataTransfer.files); };
  const resumeNote = h("div", { class: "box", id: "interrupted", hidden: true });
  show(h("h1", {}, "Upload"), drop, resumeNote, list);
  // Interrupted uploads the server still holds (those it finished, refused,
  // expired or that were deleted are forgotten here).
  const alive = [];
  for (const [fp, v] of Object.entries(tusSaved())) {
    const r = await fetch(v.url, { method: "HEAD", headers: tusHeaders() }).catch(() => null);
    if (r && r.ok) alive.push(Object.assign(v, { offset: Number(r.headers.get("Upload-Offset")) }));
    else if (r && (r.status === 404 || r.status === 410)) tusSave(fp, null);
  }
  if (alive.length) {
    resumeNote.replaceChildren(h("p", {}, "Interrupted uploads: choose the same file again to go on where it stopped."),
      h("ul", {}, ...alive.map((v) => h("li", {}, `${v.name} (${fmtBytes(v.offset)} of ${fmtBytes(v.size)})`))));
    resumeNote.hidden = false;
  }
}

function uploadItem(file, visibility) {
  const bar = h("progress", { max: 1, value: 0 });
  const status = h("span", { class: "muted" }, "starting…");
  const pauseBtn = h("button", { class: "secondary" }, "Pause");
  const title = file.name.replace(/\.[^.]+$/, "");
  const up = new TusUpload(file, { filename: file.name, filetype: file.type || "application/octet-stream", title, visibility },
    (done, total) => { bar.value = total ? done / total : 1; status.textContent = `${fmtBytes(done)} of ${fmtBytes(total)} (${Math.floor(100 * done / (total || 1))} %)`; });
  const item = h("div", { class: "upload-item", "data-file": file.name }, h("div", { class: "row" }, h("strong", {}, file.name), h("span", { class: "muted" }, fmtBytes(file.size)), pauseBtn), bar, status);
  const run = async () => {
    pauseBtn.textContent = "Pause";
    try {
      if (await up.start()) {
        pauseBtn.remove();
        status.replaceChildren(h("span", { class: "ok" }, "Uploaded. "), "Processing starts now — ", h("a", { href: `/watch/${encodeURIComponent(up.videoId)}` }, "watch"), " or see it in your ", h("a", { href: "/library" }, "library"), ".");
        item.dataset.done = "1";
      } else { pauseBtn.textContent = "Resume"; status.textContent = `paused at ${Math.floor(100 * bar.value)} %`; }
    } catch (e) { pauseBtn.textContent = "Retry"; status.replaceChildren(errorBox(e)); }
  };
  pauseBtn.onclick = () => { if (pauseBtn.textContent === "Pause") up.pause(); else run(); };
  run();
  return item;
}

// ---- /library : the caller's videos, live ------------------------------------------

async function pageLibrary() {
  if (needSignIn()) return;
  const tbody = h("tbody");
  const table = h("table", { id: "library" }, h("thead", {}, h("tr", {}, ...["Video", "Status", "Visibility", "Created", ""].map((t) => h("th", {}, t)))), tbody);
  show(h("h1", {}, "Your videos"), table);
  const items = [];
  let cursor = null;
  do {
    const p = new URLSearchParams({ owner: "me", limit: "100" });
    if (cursor) p.set("cursor", cursor);
    const r = await api("GET", `/api/v1/videos?${p}`);
    items.push(...r.items);
    cursor = r.next_cursor;
  } while (cursor && items.length < 1000);
  const empty = () => table.replaceWith(h("p", { class: "muted", id: "library" }, "No videos yet. ", h("a", { href: "/upload" }, "Upload one"), "."));
  if (!items.length) { empty(); return; }
  const rows = items.map((v) => libraryRow(v, () => { if (!tbody.children.length) empty(); }));
  tbody.append(...rows.map((r) => r.row));
  // Live status: the rows still on their way are read again every 2 s (one
  // request at a time: a browser has only six connections per server, and
  // an event stream per row would take them all).
  let stopped = false;
  onLeave(() => { stopped = true; });
  (async () => {
    while (!stopped) {
      await new Promise((r) => setTimeout(r, 2000));
      for (const r of rows) {
        if (stopped) return;
        if (!r.row.isConnected || !r.pending()) continue;
        try { r.update(await api("GET", `/api/v1/videos/${encodeURIComponent(r.id)}`)); } catch (e) {
          if (e.status === 404) { r.row.remove(); if (!tbody.children.length) empty(); } // deleted elsewhere
        }
      }
    }
  })();
}

function statusCell(v) {
  const s = h("span", { class: `status-${v.status}`, "data-status": v.status }, v.status.replace("_", " "));
  const cell = h("td", {}, s);
  if (v.status === "processing" || v.status === "uploaded") cell.append(h("progress", { max: 1, value: v.progress || 0 }));
  if (v.status === "failed" && v.error) cell.append(h("div", { class: "error" }, v.error));
  return cell;
}

function libraryRow(v, onRemoved) {
  const title = h("input", { type: "text", value: v.title, "aria-label": "Title" });
  const vis = h("select", { "aria-label": "Visibility" }, ...["public", "unlisted", "private"].map((x) => h("option", { value: x, selected: x === v.visibility }, x)));
  const description = h("textarea", { "aria-label": "Description" }, v.description || "");
  const tags = h("input", { type: "text", value: v.tags.join(", "), "aria-label": "Tags", placeholder: "comma, separated" });
  const more = h("details", {}, h("summary", {}, "Description and tags"), h("label", {}, "Description"), description, h("label", {}, "Tags"), tags);
  const msg = h("span");
  const save = h("button", { class: "secondary", onclick: async () => {
    msg.replaceChildren();
    const patch = { title: title.value, visibility: vis.value, description: description.value,
      tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean) };
    try { Object.assign(v, await api("PATCH", `/api/v1/videos/${encodeURIComponent(v.id)}`, patch)); msg.replaceChildren(h("span", { class: "ok" }, "saved")); } catch (e) { msg.replaceChildren(errorBox(e)); }
  } }, "Save");
  const del = h("button", { class: "danger", onclick: async () => {
    if (!confirm(`Delete “${title.value || v.title}” and every file of it?`)) return;
    try { await api("DELETE", `/api/v1/videos/${encodeURIComponent(v.id)}`); row.remove(); onRemoved(); } catch (e) { msg.replaceChildren(errorBox(e)); }
  } }, "Delete");
  let status = statusCell(v);
  const row = h("tr", { "data-video-id": v.id },
    h("td", {}, h("a", { href: `/watch/${encodeURIComponent(v.id)}` }, v.original_filename || v.id), title, more),
    status, h("td", {}, vis), h("td", {}, fmtDate(v.created_at)), h("td", {}, h("div", { class: "row" }, save, del), msg));
  return {
    row, id: v.id,
    pending: () => v.status === "uploaded" || v.status === "processing",
    update: (next) => {
      Object.assign(v, { status: next.status, progress: next.progress, error: next.error });
      const cell = statusCell(v);
      status.replaceWith(cell);
      status = cell;
    },
  };
}

// ---- /watch/{id} : the player -------------------------------------------------------

async function pageWatch(id) {
  const v = await api("GET", `/api/v1/videos/${encodeURIComponent(id)}`);
  const head = [h("h1", { id: "title" }, v.title), h("p", { class: "muted" }, v.owner.display_name, " · ", fmtDate(v.ready_at || v.created_at))];
  if (v.status !== "ready") {
    const says = { awaiting_upload: "still being uploaded", uploaded: "waiting to be processed", processing: "being processed", failed: "not playable: processing failed" };
    const st = h("p", { id: "processing" }, `This video is ${says[v.status] || v.status}`, v.status === "failed" && v.error ? ` (${v.error})` : ".");
    show(...head, st);
    if (v.status === "uploaded" || v.status === "processing") {
      const es = new EventSource(`/api/v1/videos/${encodeURIComponent(id)}/events${bearer() ? `?access_token=${encodeURIComponent(bearer())}` : ""}`);
      es.addEventListener("status", (ev) => {
        const d = JSON.parse(ev.data);
        st.textContent = `Processing: ${d.step || d.status} (${Math.floor(100 * (d.progress || 0))} %)`;
        if (d.status === "ready" || d.status === "failed") { es.close(); route(); }
      });
      onLeave(() => es.close());
    }
    return;
  }
  const pb = await api("GET", `/api/v1/videos/${encodeURIComponent(id)}/playback`);
  const video = h("video", { controls: true, playsinline: true, preload: "metadata", id: "player" });
  if (pb.poster) video.poster = pb.poster;
  const quality = h("select", { id: "quality", "aria-label": "Quality", hidden: true });
  const player = h("div", { class: "player" }, video);
  const scrub = h("div", { class: "scrub" });
  let hls = null;
  if (pb.hls && window.Hls && window.Hls.isSupported()) {
    hls = new window.Hls({ enableWorker: true });
    hls.loadSource(pb.hls);
    hls.attachMedia(video);
    hls.on(window.Hls.Events.MANIFEST_PARSED, (_e, data) => {
      quality.replaceChildren(h("option", { value: "-1" }, "Auto"),
        ...data.levels.map((l, i) => h("option", { value: String(i) }, l.height ? `${l.height}p` : `${Math.round(l.bitrate / 1000)} kb/s`)));
      quality.hidden = false;
    });
    quality.onchange = () => { hls.currentLevel = Number(quality.value); };
    onLeave(() => hls.destroy());
  } else if (pb.hls && video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = pb.hls;
  } else if (pb.mp4) {
    video.src = pb.mp4;
  }
  const info = h("div", {},
    v.description ? h("p", { id: "description" }, v.description) : null,
    v.tags.length ? h("p", { class: "tags" }, ...v.tags.map((t) => h("span", {}, t))) : null,
    h("p", { class: "row" }, "Quality:", quality, pb.mp4 ? h("a", { href: pb.mp4, download: "" }, "Download MP4") : null));
  const related = h("div", { class: "related", id: "related" }, h("h2", {}, "Related"));
  show(h("div", { class: "watch" }, h("div", {}, player, scrub, ...head, info), related));
  if (pb.storyboard_vtt) storyboard(video, scrub, pb.storyboard_vtt).catch(() => scrub.remove());
  beacons(id, video, () => (hls && hls.levels[hls.currentLevel] ? `${hls.levels[hls.currentLevel].height}p` : null));
  api("GET", `/api/v1/videos/${encodeURIComponent(id)}/related`).then((r) => {
    if (!r.items.length) related.append(h("p", { class: "muted" }, "Nothing related yet."));
    related.append(...r.items.map(card));
  }).catch(() => { /* optional */ });
}

// Storyboard scrubbing: the VTT's cues name sprite tiles (`sprite.jpg#xywh=x,y,w,h`);
// hovering or dragging the scrub bar shows the tile for that moment.
async function storyboard(video, scrub, vttUrl) {
  const text = await (await fetch(vttUrl)).text();
  const cues = [];
  const ts = (s) => s.split(":").reduce((acc, x) => acc * 60 + parseFloat(x), 0);
  for (const block of text.split(/\r?\n\r?\n/)) {
    const lines = block.trim().split(/\r?\n/);
    const i = lines.findIndex((l) => l.includes("-->"));
    if (i < 0 || !lines[i + 1]) continue;
    const [a, b] = lines[i].split("-->").map((s) => ts(s.trim()));
    const [file, frag] = lines[i + 1].trim().split("#xywh=");
    const [x, y, w, hh] = (frag || "0,0,160,90").split(",").map(Number);
    cues.push({ a, b, url: new URL(file, new URL(vttUrl, location.href)).href, x, y, w, h: hh });
  }
  if (!cues.length) return;
  const range = h("input", { type: "range", min: 0, max: 1000, value: 0, step: 1, "aria-label": "Seek", id: "scrub" });
  const label = h("span", { class: "t" });
  const preview = h("div", { class: "preview", id: "storyboard-preview" }, label);
  scrub.append(preview, range);
  const at = (clientX) => {
    const r = range.getBoundingClientRect();
    const f = Math.min(1, Math.max(0, (clientX - r.left) / r.width));
    return { f, t: f * (video.duration || cues[cues.length - 1].b), left: clientX - r.left };
  };
  const showAt = (clientX) => {
    const { t, left } = at(clientX);
    const c = cues.find((c) => t >= c.a && t < c.b) || cues[cues.length - 1];
    Object.assign(preview.style, { display: "block", width: `${c.w}px`, height: `${c.h}px`, left: `${Math.max(0, left - c.w / 2)}px`,
      backgroundImage: `url("${c.url}")`, backgroundPosition: `-${c.x}px -${c.y}px` });
    label.textContent = fmtDuration(t);
  };
  range.addEventListener("pointermove", (e) => showAt(e.clientX));
  range.addEventListener("pointerleave", () => { preview.style.display = "none"; });
  range.addEventListener("input", () => { if (video.duration) video.currentTime = (range.value / 1000) * video.duration; });
  video.addEventListener("timeupdate", () => { if (video.duration) range.value = String(Math.round((1000 * video.currentTime) / video.duration)); });
}

// Analytics beacons: play once, progress every 10 s while playing, ended.
function beacons(id, video, rendition) {
  const session = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
  let watched = 0, last = null, played = false;
  const send = (event) => {
    const body = { session_id: session, event, position_s: video.currentTime || 0, watched_s: watched };
    const r = rendition();
    if (r) body.rendition = r;
    api("POST", `/api/v1/videos/${encodeURIComponent(id)}/views`, body).catch(() => { /* best effort */ });
  };
  video.addEventListener("timeupdate", () => {
    const now = video.currentTime;
    if (last !== null && !video.paused && now > last && now - last < 2) watched += now - last;
    last = now;
  });
  video.addEventListener("play", () => { if (!played) { played = true; send("play"); } });
  video.addEventListener("ended", () => send("ended"));
  const timer = setInterval(() => { if (played && !video.paused) send("progress"); }, 10000);
  onLeave(() => { clearInterval(timer); if (played) send("progress"); });
}

// ---- /account : profile, password, MFA, sessions -----------------------------------------

async function pageAccount() {
  if (needSignIn()) return;
  const u = await api("GET", "/api/v1/me");
  me = u;
  const name = h("input", { type: "text", value: u.display_name, name: "display_name" });
  const pmsg = h("span");
  const profile = h("form", { class: "box narrow", onsubmit: async (ev) => {
    ev.preventDefault();
    try { me = await api("PATCH", "/api/v1/me", { display_name: name.value }); renderNav(); pmsg.replaceChildren(h("span", { class: "ok" }, "saved")); } catch (e) { pmsg.replaceChildren(errorBox(e)); }
  } }, h("p", { class: "muted" }, `${u.email} · ${u.role}`), h("label", {}, "Display name"), name, h("p", {}, h("button", { type: "submit" }, "Save"), " ", pmsg));

  const cur = h("input", { type: "password", autocomplete: "current-password", name: "current_password" });
  const next = h("input", { type: "password", autocomplete: "new-password", name: "new_password", minlength: 12 });
  const wmsg = h("span");
  const password = h("form", { class: "box narrow", onsubmit: async (ev) => {
    ev.preventDefault();
    try { await api("POST", "/api/v1/me/password", { current_password: cur.value, new_password: next.value }); cur.value = next.value = ""; wmsg.replaceChildren(h("span", { class: "ok" }, "Password changed; your other sessions were signed out.")); loadSessions().catch(() => {}); } catch (e) { wmsg.replaceChildren(errorBox(e)); }
  } }, h("label", {}, "Current password"), cur, h("label", {}, "New password"), next, h("p", {}, h("button", { type: "submit" }, "Change password"), " ", wmsg));

  const mfa = h("div", { class: "box narrow", id: "mfa" });
  const renderMfa = () => {
    const code = h("input", { type: "text", inputmode: "numeric", autocomplete: "one-time-code", name: "code" });
    const msg = h("div");
    if (me.mfa_enabled) {
      mfa.replaceChildren(h("p", { class: "ok" }, "Two-factor sign-in is on."), h("label", {}, "Code to turn it off"), code,
        h("p", {}, h("button", { class: "danger", onclick: async () => {
          try { await api("POST", "/api/v1/auth/mfa/totp/disable", { code: code.value.trim() }); me.mfa_enabled = false; renderMfa(); } catch (e) { msg.replaceChildren(errorBox(e)); }
        } }, "Turn off")), msg);
      return;
    }
    mfa.replaceChildren(h("p", {}, "Two-factor sign-in is off."), h("button", { id: "mfa-setup", onclick: async () => {
      try {
        const s = await api("POST", "/api/v1/auth/mfa/totp/setup");
        const qr = window.qrcode(0, "M");
        qr.addData(s.otpauth_url);
        qr.make();
        const img = h("img", { src: qr.createDataURL(4, 8), alt: "QR code for your authenticator app" });
        mfa.replaceChildren(h("p", {}, "Scan this with your authenticator app, then enter the code it shows."),
          h("div", { class: "qr", id: "mfa-qr" }, img), h("p", { class: "muted" }, "Or enter the key: ", h("code", { id: "mfa-secret" }, s.secret)),
          h("label", {}, "Code"), code, h("p", {}, h("button", { onclick: async () => {
            try {
              const r = await api("POST", "/api/v1/auth/mfa/totp/enable", { code: code.value.trim() });
              me.mfa_enabled = true;
              mfa.replaceChildren(h("p", { class: "ok" }, "Two-factor sign-in is on. Keep these recovery codes somewhere safe; each works once:"),
                h("ul", { class: "codes", id: "recovery-codes" }, ...r.recovery_codes.map((c) => h("li", {}, c))),
                h("button", { class: "secondary", onclick: renderMfa }, "Done"));
            } catch (e) { msg.replaceChildren(errorBox(e)); }
          } }, "Turn on")), msg);
      } catch (e) { msg.replaceChildren(errorBox(e)); mfa.append(msg); }
    } }, "Set up an authenticator app"), msg);
  };
  renderMfa();

  const sessions = h("tbody");
  const loadSessions = async () => {
    const r = await api("GET", "/api/v1/me/sessions");
    sessions.replaceChildren(...r.items.map((s) => h("tr", {},
      h("td", {}, s.user_agent || "unknown client", s.current ? h("strong", {}, " (this one)") : null),
      h("td", {}, s.ip || ""), h("td", {}, fmtDate(s.created_at)), h("td", {}, fmtDate(s.last_used_at)),
      h("td", {}, s.current ? null : h("button", { class: "danger", onclick: () => api("DELETE", `/api/v1/me/sessions/${encodeURIComponent(s.id)}`).catch(() => { /* already ended */ }).then(loadSessions).catch(() => { /* shown on the next load */ }) }, "Sign out")))));
  };
  show(h("h1", {}, "Account"), profile, h("h2", {}, "Password"), password, h("h2", {}, "Two-factor sign-in"), mfa,
    h("h2", {}, "Sessions"), h("table", {}, h("thead", {}, h("tr", {}, ...["Client", "IP", "Signed in", "Last used", ""].map((t) => h("th", {}, t)))), sessions));
  await loadSessions();
}

// ---- /admin : users, jobs, audit, live metrics ------------------------------------------

async function pageAdmin() {
  if (needSignIn()) return;
  if (me.role !== "admin") { show(h("h1", {}, "Admin"), h("p", { class: "error" }, "Only admins can see this page.")); return; }
  const box = h("div");
  const tab = (name, f) => h("button", { class: "secondary", "data-tab": name, onclick: () => f().catch((e) => box.replaceChildren(errorBox(e))) }, name);
  const charts = h("div", { class: "charts", id: "charts" });
  show(h("h1", {}, "Admin"), charts, h("p"), h("div", { class: "tabs" }, tab("Users", adminUsers), tab("Jobs", adminJobs), tab("Audit log", adminAudit)), box);
  liveCharts(charts);

  async function adminUsers() {
    const r = await api("GET", "/api/v1/admin/users");
    const rows = r.items.map((u) => {
      const role = h("select", { "aria-label": `Role of ${u.email}` }, ...["admin", "uploader", "viewer"].map((x) => h("option", { value: x, selected: x === u.role }, x)));
      const disabled = h("input", { type: "checkbox", checked: u.disabled, "aria-label": `Disable ${u.email}` });
      const msg = h("span");
      // A refused change shows the value the server kept.
      const save = async (patch) => {
        try { Object.assign(u, await api("PATCH", `/api/v1/admin/users/${encodeURIComponent(u.id)}`, patch)); msg.replaceChildren(h("span", { class: "ok" }, "saved")); } catch (e) { msg.replaceChildren(errorBox(e)); }
        role.value = u.role;
        disabled.checked = u.disabled;
      };
      role.onchange = () => save({ role: role.value });
      disabled.onchange = () => save({ disabled: disabled.checked });
      return h("tr", {}, h("td", {}, u.email), h("td", {}, u.display_name), h("td", {}, role), h("td", {}, disabled), h("td", {}, u.mfa_enabled ? "on" : "off"), h("td", {}, fmtDate(u.created_at)), h("td", {}, msg));
    });
    const inviteMsg = h("span");
    const inviteRole = h("select", { "aria-label": "Invite role" }, ...["uploader", "viewer", "admin"].map((x) => h("option", { value: x }, x)));
    box.replaceChildren(h("table", { id: "admin-users" }, h("thead", {}, h("tr", {}, ...["E-mail", "Name", "Role", "Disabled", "MFA", "Created", ""].map((t) => h("th", {}, t)))), h("tbody", {}, ...rows)),
      h("h2", {}, "Invite"), h("div", { class: "row" }, inviteRole, h("button", { onclick: async () => {
        try { const i = await api("POST", "/api/v1/admin/invites", { role: inviteRole.value }); inviteMsg.replaceChildren("Code: ", h("code", {}, i.code), ` (until ${fmtDate(i.expires_at)})`); } catch (e) { inviteMsg.replaceChildren(errorBox(e)); }
      } }, "Create invite code"), inviteMsg));
  }

  async function adminJobs(state = "dead") {
    const sel = h("select", { "aria-label": "Job state" }, ...["queued", "running", "failed", "dead"].map((s) => h("option", { value: s, selected: s === state }, s)));
    const failed = (e) => box.replaceChildren(errorBox(e));
    sel.onchange = () => adminJobs(sel.value).catch(failed);
    const r = await api("GET", `/api/v1/admin/jobs?state=${encodeURIComponent(state)}`);
    const rows = r.items.map((j) => h("tr", {}, h("td", {}, h("a", { href: `/watch/${encodeURIComponent(j.video_id)}` }, j.video_id)), h("td", {}, j.state), h("td", {}, `${j.attempts}/${j.max_attempts}`),
      h("td", { class: "error" }, j.last_error || ""), h("td", {}, fmtDate(j.updated_at)),
      h("td", {}, j.state === "dead" ? h("button", { onclick: () => api("POST", `/api/v1/admin/jobs/${encodeURIComponent(j.id)}/retry`).then(() => adminJobs(state)).catch(failed) }, "Retry") : null)));
    box.replaceChildren(h("div", { class: "row" }, "State:", sel),
      rows.length ? h("table", { id: "admin-jobs" }, h("thead", {}, h("tr", {}, ...["Video", "State", "Attempts", "Last error", "Updated", ""].map((t) => h("th", {}, t)))), h("tbody", {}, ...rows)) : h("p", { class: "muted" }, `No ${state} jobs.`));
  }

  async function adminAudit() {
    const r = await api("GET", "/api/v1/admin/audit?limit=100");
    const detail = (d) => Object.entries(d || {}).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
    box.replaceChildren(h("table", { id: "admin-audit" }, h("thead", {}, h("tr", {}, ...["When", "Action", "Actor", "Target", "Detail", "IP"].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...r.items.map((e) => h("tr", {}, h("td", {}, fmtDate(e.at)), h("td", {}, e.action), h("td", {}, e.actor ? e.actor.email || e.actor.id : ""), h("td", {}, e.target || ""), h("td", {}, detail(e.detail)), h("td", {}, e.ip || ""))))));
  }
  await adminUsers();
}

// Live charts from /metrics (Prometheus text), sampled every 5 s.
function liveCharts(el) {
  const series = [
    { name: "Requests per second", kind: "rate", match: (n) => n === "vidhost_http_requests_total" },
    { name: "Errors (5xx) per second", kind: "rate", match: (n, l) => n === "vidhost_http_requests_total" && /status="5/.test(l) },
    { name: "Uploads in progress", kind: "gauge", match: (n) => n === "vidhost_uploads_in_progress" },
    { name: "Jobs queued", kind: "gauge", match: (n) => n === "vidhost_jobs_queued" },
    { name: "Delivered MB per second", kind: "rate", scale: 1e-6, match: (n) => n === "vidhost_delivery_bytes_total" },
  ].map((s) => Object.assign(s, { points: [], prev: null, canvas: h("canvas", { class: "chart", width: 520, height: 240 }), label: h("div", { class: "muted" }, "collecting…") }));
  el.replaceChildren(...series.map((s) => h("div", {}, h("strong", {}, s.name), s.label, s.canvas)));
  const sample = async () => {
    let text;
    try { text = await api("GET", "/metrics"); } catch { return; }
    const now = Date.now() / 1000;
    const sums = series.map(() => 0);
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+\d.eE]+|NaN)/);
      if (!m) continue;
      series.forEach((s, i) => { if (s.match(m[1], m[2] || "")) sums[i] += Number(m[3]); });
    }
    series.forEach((s, i) => {
      let v = sums[i];
      if (s.kind === "rate") {
        const p = s.prev; s.prev = { v, t: now };
        if (!p) return;
        v = Math.max(0, (v - p.v) / (now - p.t));
      }
      v *= s.scale || 1;
      s.points.push(v);
      if (s.points.length > 60) s.points.shift();
      s.label.textContent = `now ${v.toFixed(v < 10 ? 2 : 0)}`;
      draw(s.canvas, s.points);
    });
  };
  sample();
  const timer = setInterval(sample, 5000);
  onLeave(() => clearInterval(timer));
}

function draw(canvas, pts) {
  const c = canvas.getContext("2d"), w = canvas.width, hh = canvas.height;
  c.clearRect(0, 0, w, hh);
  const max = Math.max(1e-9, ...pts);
  c.strokeStyle = "#2f6fed"; c.lineWidth = 3; c.beginPath();
  pts.forEach((p, i) => { const x = (i / 59) * w, y = hh - 10 - (p / max) * (hh - 20); if (i) c.lineTo(x, y); else c.moveTo(x, y); });
  c.stroke();
}

route();
