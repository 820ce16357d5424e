// openwit explorer: a static page over the data files `openwit audit explorer` writes
// (pipeline/audit/explorer.py names them). Every data file is a script calling
// openwit.take(name, value): chromium blocks fetch() of file:// URLs, script tags are not.
// The page state lives in the URL's hash (#view=dropped&reason=http_404), so the report
// and people can link to any view. Captions and URLs are web text: set as textContent only.
"use strict";

const openwit = {store: new Map(), waiting: new Map()};
const PAGE = 48;
const CLUSTERS_PER_PAGE = 20;
const ENTRIES_PER_PAGE = 100;
const ROW_CACHE = 64;  // rows chunks kept in memory (1,000 rows each)

openwit.take = function (name, value) {
  openwit.store.set(name, value);
  const waiter = openwit.waiting.get(name);
  if (waiter) { openwit.waiting.delete(name); waiter.resolve(value); }
};

function load(name) {
  if (openwit.store.has(name)) return Promise.resolve(openwit.store.get(name));
  if (openwit.waiting.has(name)) return openwit.waiting.get(name).promise;
  const waiter = {};
  waiter.promise = new Promise((resolve, reject) => { waiter.resolve = resolve; waiter.reject = reject; });
  openwit.waiting.set(name, waiter);
  const script = document.createElement("script");
  script.src = "data/" + name + ".js";
  script.onload = () => script.remove();
  script.onerror = () => { openwit.waiting.delete(name); script.remove(); waiter.reject(new Error("cannot load data/" + name + ".js")); };
  document.head.appendChild(script);
  return waiter.promise;
}

function chunkName(kind, n) { return kind + "-" + String(n).padStart(5, "0"); }

function forget(kind, keep) {
  // Drop the oldest rows chunks beyond `keep` (Map keeps insertion order).
  const names = [...openwit.store.keys()].filter(n => n.startsWith(kind + "-"));
  for (const name of names.slice(0, Math.max(0, names.length - keep))) openwit.store.delete(name);
}

// ------------------------------------------------------------------ data

const app = {meta: null, codes: null, settled: Promise.resolve(), generation: 0};

function decode(b64) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

async function start() {
  app.meta = await load("meta");
  const raw = await load("codes");
  app.codes = {fate: decode(raw.fate), lang: decode(raw.lang), size: decode(raw.size), image: decode(raw.image),
               shard: new Uint16Array(decode(raw.shard).buffer)};
  openwit.store.delete("codes");
  const m = app.meta;
  document.getElementById("summary").textContent =
    `${m.rows.toLocaleString()} candidates, ${m.kept.toLocaleString()} kept, ${m.reasons.length} drop reasons, ` +
    `${m.clusters.toLocaleString()} duplicate clusters · ${m.out} · openwit ${m.openwit_version} · seed ${m.seed}`;
  window.addEventListener("hashchange", () => render());
  render();
}

async function rows(indices) {
  // The ledger rows (as objects) of the given row numbers, loading their chunks.
  const per = app.meta.rows_per_chunk;
  const chunks = [...new Set(indices.map(i => Math.floor(i / per)))];
  const loaded = await Promise.all(chunks.map(c => load(chunkName("rows", c))));
  const byChunk = new Map(chunks.map((c, k) => [c, loaded[k]]));
  forget("rows", Math.max(ROW_CACHE, chunks.length));
  return indices.map(i => toRow(i, byChunk.get(Math.floor(i / per))[i % per]));
}

function toRow(index, values) {
  const row = {row: index};
  app.meta.columns.forEach((name, k) => { row[name] = values[k]; });
  return row;
}

async function entriesTable() {
  const table = await load("entries");
  if (!app.entryById) app.entryById = new Map(table.map(e => [e[0], e]));
  return table;
}

async function posting(entry) {
  const lists = await load(chunkName("postings", Math.floor(entry / app.meta.entries_per_chunk))).catch(() => ({}));
  return lists[String(entry)] || [];
}

async function captionMatches(candidates, query) {
  // Substring search, case-insensitive, over the caption chunks the candidates fall in.
  const per = app.meta.captions_per_chunk, needle = query.toLowerCase(), found = [];
  let k = 0;
  while (k < candidates.length) {
    const chunk = Math.floor(candidates[k] / per);
    const name = chunkName("captions", chunk);
    let lower = openwit.store.get(name + ":lower");
    if (!lower) {
      lower = (await load(name)).map(c => c.toLowerCase());
      openwit.store.delete(name);
      openwit.store.set(name + ":lower", lower);
    }
    for (; k < candidates.length && Math.floor(candidates[k] / per) === chunk; k++) {
      if (lower[candidates[k] % per].includes(needle)) found.push(candidates[k]);
    }
  }
  return found;
}

function reasonCode(name) { return app.meta.reasons.findIndex(r => r.name === name) + 1; }

async function select(state) {
  // Row numbers passing the state's filters, in explorer order.
  const c = app.codes, m = app.meta, fates = new Uint8Array(m.reasons.length + 1);
  if (state.view === "kept") fates[0] = 1;
  else if (state.view === "dropped") {
    m.reasons.forEach((r, k) => {
      if ((!state.reason || r.name === state.reason) && (!state.stage || r.stage === state.stage)) fates[k + 1] = 1;
    });
  } else if (state.view === "balancing") {
    fates[0] = 1;
    for (const name of ["balanced_out_pre", "balanced_out_final"]) if (reasonCode(name)) fates[reasonCode(name)] = 1;
  }
  const lang = state.lang === undefined ? -1 : (state.lang === "other" ? m.other_language : m.languages.indexOf(state.lang));
  const shard = state.shard ? m.shards.indexOf(state.shard) + 1 : -1;
  const size = state.size === undefined ? -1 : Number(state.size);
  const entry = state.entry === undefined ? null : await posting(Number(state.entry));
  const pass = i => fates[c.fate[i]] && (lang < 0 || c.lang[i] === lang) && (shard < 0 || c.shard[i] === shard) &&
                    (size < 0 || c.size[i] === size);
  let out = [];
  if (entry) { for (const i of entry) if (pass(i)) out.push(i); }
  else { for (let i = 0; i < m.rows; i++) if (pass(i)) out.push(i); }
  if (state.q) out = await captionMatches(out, state.q);
  return out;
}

// ------------------------------------------------------------------ state and DOM helpers

function parseHash() {
  const state = {};
  for (const [k, v] of new URLSearchParams(location.hash.slice(1))) state[k] = v;
  state.view = state.view || "kept";
  state.page = Number(state.page || 0);
  return state;
}

function go(changes, keepPage) {
  const state = Object.assign(parseHash(), changes);
  if (!keepPage && !("page" in changes)) state.page = 0;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v !== undefined && v !== "" && !(k === "page" && !v)) params.set(k, v);
  location.hash = params.toString();
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function webLink(url, text) {
  // Only http(s) URLs become links: the ledger's URLs come from the web.
  if (!url) return el("span", {class: "muted"}, "none");
  return /^https?:\/\//i.test(url) ? el("a", {href: url, rel: "nofollow noreferrer", target: "_blank"}, text || url)
                                   : el("span", {}, url);
}

function image(row) {
  if (!app.codes.image[row.row]) return el("div", {class: "noimage"}, "no image");
  const folder = String(Math.floor(row.row / app.meta.rows_per_chunk)).padStart(5, "0");
  return el("img", {class: "thumb", loading: "lazy", alt: row.caption || "", src: `img/${folder}/${row.row}.jpg`});
}

function card(row) {
  const dropped = row.status !== "kept";
  return el("figure", {class: "card", "data-row": row.row, "data-uid": row.uid, onclick: () => go({row: row.row}, true)},
    image(row),
    el("figcaption", {},
      dropped ? el("div", {class: "reason"}, row.reason) : null,
      el("div", {class: "caption"}, row.caption || ""),
      dropped && row.detail ? el("div", {class: "detail"}, row.detail) : null));
}

function selectBox(label, name, options, value) {
  // options: [value, text] pairs; "" means any.
  const box = el("select", {name, onchange: e => go({[name]: e.target.value || undefined})},
    options.map(([v, t]) => el("option", {value: v}, t)));
  box.value = value === undefined ? "" : value;
  return el("label", {}, label + " ", box);
}

function searchBox(state, label, placeholder) {
  const input = el("input", {type: "search", name: "q", placeholder: placeholder || "search captions", value: state.q || ""});
  input.addEventListener("change", e => go({q: e.target.value || undefined}));
  return el("label", {}, (label || "caption") + " ", input);
}

function entryBox(state) {
  const input = el("input", {type: "search", name: "entry-name", placeholder: "vocabulary entry"});
  if (state.entry !== undefined && app.entryById && app.entryById.get(Number(state.entry))) {
    input.value = app.entryById.get(Number(state.entry))[1];
  }
  input.addEventListener("change", async e => {
    const text = e.target.value.trim().toLowerCase();
    if (!text) return go({entry: undefined});
    const hit = (await entriesTable()).find(x => x[1].toLowerCase() === text || String(x[0]) === text);
    if (hit) go({entry: hit[0]});
    else setStatus(`no vocabulary entry "${e.target.value}" matched any candidate`);
  });
  return el("label", {}, "entry ", input);
}

function setStatus(text) { document.getElementById("status").textContent = text; }

function pager(state, total, perPage) {
  const first = state.page * perPage;
  return el("div", {class: "pager"},
    el("button", {disabled: state.page > 0 ? null : "", onclick: () => go({page: state.page - 1})}, "previous"),
    el("span", {id: "count", "data-total": total},
       total ? `${(first + 1).toLocaleString()}–${Math.min(first + perPage, total).toLocaleString()} of ${total.toLocaleString()}` : "none"),
    el("button", {disabled: first + perPage < total ? null : "", onclick: () => go({page: state.page + 1})}, "next"));
}

// ------------------------------------------------------------------ views

function commonFilters(state) {
  const m = app.meta;
  return [
    entryBox(state),
    selectBox("language", "lang", [["", "any"], ...m.languages.map(l => [l, l]), ["other", "other / none"]], state.lang),
    selectBox("shard", "shard", [["", "any"], ...m.shards.map(s => [s, s])], state.shard),
    selectBox("size", "size", [["", "any"], ...m.sizes.map(([code, text]) => [String(code), text])], state.size),
    searchBox(state),
  ];
}

async function gridView(state, main, filters) {
  const started = performance.now();
  const found = await select(state);
  const page = found.slice(state.page * PAGE, (state.page + 1) * PAGE);
  const shown = await rows(page);
  main.replaceChildren(pager(state, found.length, PAGE), el("div", {class: "grid", id: "grid"}, shown.map(card)));
  setStatus(`${found.length.toLocaleString()} candidates match · ${Math.round(performance.now() - started)} ms`);
  return filters;
}

async function keptView(state, main, filters) {
  if (state.entry !== undefined) await entriesTable();
  filters.replaceChildren(...commonFilters(state));
  return gridView(state, main, filters);
}

async function droppedView(state, main, filters) {
  const m = app.meta;
  const stages = [...new Set(m.reasons.map(r => r.stage))];
  const reasons = m.reasons.filter(r => !state.stage || r.stage === state.stage);
  // one option per name: a name met at several stages (internal_error) selects all of them
  const counts = new Map();
  for (const r of reasons) counts.set(r.name, (counts.get(r.name) || 0) + r.count);
  if (state.entry !== undefined) await entriesTable();
  filters.replaceChildren(
    selectBox("stage", "stage", [["", "any"], ...stages.map(s => [s, s])], state.stage),
    selectBox("reason", "reason", [["", "any"], ...[...counts].map(([name, n]) => [name, `${name} (${n.toLocaleString()})`])], state.reason),
    ...commonFilters(state));
  await gridView(state, main, filters);
  const reason = reasons.find(r => r.name === state.reason);
  if (reason) {
    main.prepend(el("p", {class: "reason-text", id: "reason-text"},
      el("b", {}, `${reason.stage}: ${reason.name}`), ` (${reason.transient ? "transient" : "permanent"}) — ${reason.description}`));
  }
}

function distanceText(distances) {
  const parts = Object.entries(distances || {}).map(([k, v]) => `${k} ${v}`);
  return parts.length ? parts.join(", ") : "";
}

async function clusterStrip(cluster, open) {
  const [survivor, uid, members, face] = cluster;
  const head = el("h3", {onclick: () => go({cluster: uid}, true)},
    `${uid}: ${members.length} duplicate${members.length === 1 ? "" : "s"}`);
  if (!open) return el("div", {class: "cluster", "data-survivor": uid}, head);
  // each cluster carries what its strip shows (uid, status, reason, caption): no rows file
  const asRow = (row, [rowUid, status, reason, caption]) => ({row, uid: rowUid, status, reason, caption});
  const shown = [asRow(survivor, face), ...members.map(m => asRow(m[0], m[3]))];
  const figures = shown.map((row, k) => {
    const member = k ? members[k - 1] : null;
    const attrs = {class: k ? "member" : "survivor", "data-uid": row.uid, "data-row": row.row,
                   onclick: () => go({row: row.row}, true)};
    if (member) {
      attrs["data-reason"] = member[1];
      for (const [name, value] of Object.entries(member[2])) attrs[`data-${name}-distance`] = value;
    }
    return el("figure", attrs, image(row),
      el("figcaption", {}, k ? `${member[1]} ${distanceText(member[2])}` :
                           (row.status === "kept" ? "survivor (kept)" : `survivor (later dropped: ${row.reason})`),
         el("br"), row.caption || ""));
  });
  return el("div", {class: "cluster open", "data-survivor": uid}, head, el("div", {class: "strip"}, figures));
}

async function clusterRange(first, count) {
  // Clusters first..first+count-1 (largest first), from the clusters chunks they fall in.
  const per = app.meta.clusters_per_chunk, last = Math.min(first + count, app.meta.clusters), out = [];
  for (let c = Math.floor(first / per); c * per < last; c++) {
    const chunk = await load(chunkName("clusters", c));
    for (let k = 0; k < chunk.length; k++) if (c * per + k >= first && c * per + k < last) out.push(chunk[k]);
  }
  forget("clusters", 8);
  return out;
}

async function clusterByUid(uid) {
  // meta.cluster_index holds the first survivor uid of each index chunk (sorted): one
  // index chunk says the cluster's number, one clusters chunk holds it.
  const firsts = app.meta.cluster_index || [];
  let lo = 0, hi = firsts.length - 1, at = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (firsts[mid] <= uid) { at = mid; lo = mid + 1; } else hi = mid - 1;
  }
  if (at < 0) return null;
  const index = await load(chunkName("clusterindex", at));
  forget("clusterindex", 4);  // up to 5,000 uids each: keep only the recent ones
  if (!Object.hasOwn(index, uid)) return null;
  return (await clusterRange(index[uid], 1))[0] || null;
}

async function clustersView(state, main, filters) {
  const total = app.meta.clusters;
  filters.replaceChildren(el("span", {}, "Each strip: the survivor (green) and the candidates dropped as its duplicates, with their distances. "));
  let chosen;
  if (state.cluster) {
    const one = await clusterByUid(state.cluster);
    chosen = one ? [one] : [];
  } else {
    chosen = await clusterRange(state.page * CLUSTERS_PER_PAGE, CLUSTERS_PER_PAGE);
  }
  const strips = [];
  for (const cluster of chosen) strips.push(await clusterStrip(cluster, true));
  main.replaceChildren(state.cluster ? el("button", {onclick: () => go({cluster: undefined})}, "all clusters")
                                     : pager(state, total, CLUSTERS_PER_PAGE), ...strips);
  setStatus(`${total.toLocaleString()} clusters` +
            (state.cluster && !chosen.length ? ` · no duplicate cluster has the survivor ${state.cluster}` : ""));
}

async function balancingView(state, main, filters) {
  const table = await entriesTable();
  const m = app.meta;
  if (state.entry !== undefined) {
    const e = app.entryById.get(Number(state.entry));
    filters.replaceChildren(el("button", {onclick: () => go({entry: undefined})}, "all entries"),
      el("span", {id: "entry-counts"}, e ? `${e[1]}: ${e[2]} matches in the pool, ${e[3]} kept before download, ${e[4]} kept in the shards. Kept and balanced-out candidates:`
                                         : `entry ${state.entry}`));
    return gridView(state, main, filters);
  }
  const needle = (state.q || "").toLowerCase();
  const prefix = state.list ? state.list + ":" : "";  // a worldwide list's entries are "lang:entry"
  const ordered = table.filter(e => e[1].startsWith(prefix) && e[1].toLowerCase().includes(needle))
                       .sort((a, b) => b[2] - a[2] || a[0] - b[0]);
  const top = ordered.length ? ordered[0][2] : 1;
  const page = ordered.slice(state.page * ENTRIES_PER_PAGE, (state.page + 1) * ENTRIES_PER_PAGE);
  filters.replaceChildren(searchBox(state, "entry name", "part of an entry"),
                          state.list ? el("button", {onclick: () => go({list: undefined})}, `all lists (now: ${state.list})`) : el("span"),
                          el("span", {class: "muted"}, "click an entry for its kept and balanced-out candidates"));
  const bar = (n, cls) => el("span", {class: "bar " + cls, style: `width:${Math.round(160 * n / top)}px`});
  main.replaceChildren(languageFunnel(m), languageBalancing(m), pager(state, ordered.length, ENTRIES_PER_PAGE), el("table", {class: "entries", id: "entries"},
    el("tr", {}, ["entry", "matches in pool", "kept before download", "kept in shards", ""].map(t => el("th", {}, t))),
    page.map(e => el("tr", {class: "entry", "data-entry": e[0], onclick: () => go({entry: e[0], q: undefined})},
      el("td", {}, e[1]), el("td", {}, e[2]), el("td", {}, e[3]), el("td", {}, e[4]),
      el("td", {style: "text-align:left"}, bar(e[2], "pool"), el("br"), bar(e[4], "kept"))))));
  setStatus(`${ordered.length.toLocaleString()} entries with a match` + (m.entries ? "" : " (this output has no balancing stats)"));
}

// Per language ID: what happened to its candidates; a row opens that language's kept samples.
function languageFunnel(m) {
  if (!(m.language_funnel || []).length) return el("span");
  return el("table", {class: "entries", id: "language-funnel"},
    el("tr", {}, ["language", "candidates", "dropped before balancing", "balanced out", "dropped after", "kept"]
      .map(t => el("th", {}, t))),
    m.language_funnel.map(([lang, ...counts]) => el("tr", {class: "entry", "data-language": lang,
        onclick: () => go({view: "kept", lang: lang, list: undefined, q: undefined})},
      el("td", {}, lang), ...counts.map(n => el("td", {}, n.toLocaleString())))));
}

// A worldwide run: each language list's t (MetaCLIP 2: the t giving it English's tail share).
// A row shows that list's entries (their names are "lang:entry").
function languageBalancing(m) {
  const langs = Object.entries(m.balancing_languages || {}).sort((a, b) => b[1].matches_in_pool - a[1].matches_in_pool);
  if (!langs.length) return el("span");
  return el("table", {class: "entries", id: "language-balancing"},
    el("tr", {}, ["list", "t", "tail share", "matches in pool", "entries matched", "over t", "matches kept"].map(t => el("th", {}, t))),
    langs.map(([lang, e]) => el("tr", {class: "entry", "data-list": lang, onclick: () => go({list: lang, q: undefined})},
      el("td", {}, lang), el("td", {}, e.threshold), el("td", {}, (100 * e.tail_share).toFixed(1) + "%"),
      el("td", {}, e.matches_in_pool), el("td", {}, e.entries_matched), el("td", {}, e.entries_over_threshold),
      el("td", {}, e.matches_kept_final ?? 0))));
}

function timelineView(state, main, filters) {
  filters.replaceChildren();
  const items = app.meta.timeline.map(e => {
    const fields = Object.entries(e).filter(([k, v]) => !["kind", "at"].includes(k) && v !== null && v !== undefined &&
                                                   !(Array.isArray(v) && !v.length));
    return el("li", {class: e.kind}, el("b", {}, `${e.at || "?"} ${e.kind}`),
      el("div", {}, fields.map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : v}`).join(" · ")),
      e.kind === "takedown" ? el("a", {href: "#view=dropped&reason=takedown"}, "taken-down candidates") : null);
  });
  main.replaceChildren(el("ol", {class: "timeline", id: "timeline"}, items));
  setStatus(`${items.length} events`);
}

async function detailPanel(state) {
  const panel = document.getElementById("detail");
  if (state.row === undefined) { panel.hidden = true; panel.replaceChildren(); return; }
  const [row] = await rows([Number(state.row)]);
  const reason = app.meta.reasons.find(r => r.name === row.reason);
  if (row.entry_ids && row.entry_ids.length) await entriesTable();
  const value = (name) => {
    const v = row[name];
    if (name === "url" || name === "page_url") return webLink(v);
    if (name === "entry_ids") return (v || []).map(id => { const e = app.entryById && app.entryById.get(id); return e ? `${id} ${e[1]}` : String(id); }).join(", ");
    if (name === "duplicate_of" && v) return el("a", {href: "#" + new URLSearchParams({view: "clusters", cluster: v})}, v);
    return v === null || v === undefined ? "" : String(v);
  };
  panel.replaceChildren(
    el("button", {class: "close", onclick: () => go({row: undefined}, true)}, "close"),
    el("h2", {}, row.status === "kept" ? "kept" : `dropped at ${row.stage}: ${row.reason}`),
    reason ? el("p", {class: "reason-text"}, reason.description) : null,
    image(row),
    el("table", {id: "ledger-row"}, app.meta.columns.map(name =>
      el("tr", {"data-field": name}, el("th", {}, name), el("td", {}, value(name))))));
  panel.hidden = false;
}

const VIEWS = {kept: keptView, dropped: droppedView, clusters: clustersView, balancing: balancingView, timeline: timelineView};

function render() {
  const state = parseHash();
  const generation = ++app.generation;
  for (const a of document.querySelectorAll("#views a[data-view]")) a.classList.toggle("active", a.dataset.view === state.view);
  const main = document.getElementById("main"), filters = document.getElementById("filters");
  const view = VIEWS[state.view] || keptView;
  // Only the newest render may touch the page: a slow search must not overwrite a later view.
  const staging = {main: el("main", {id: "main"}), filters: el("section", {id: "filters"})};
  app.settled = (async () => {
    await view(state, staging.main, staging.filters);
    if (generation !== app.generation) return;
    main.replaceWith(staging.main);
    filters.replaceWith(staging.filters);
    await detailPanel(state);
  })().catch(err => { setStatus("error: " + err.message); throw err; });
  return app.settled;
}

start();
