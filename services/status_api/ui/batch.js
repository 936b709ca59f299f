// The batch page: live progress from the SSE stream, files/s and ETA, cancel/retry where ingest offers them,
// and the files table (status and name filters, cursor pages), refreshed while the batch runs.
import { eventStream, getJson, ingestUrl, lifecycleEndpoints, request } from "./api.js";
import { announce, h, replace } from "./dom.js";
import { duration, t } from "./i18n.js";
import { FILE_STATUSES, pager, progressBar, setProgress, statusBadge, TERMINAL } from "./widgets.js";
import { showError } from "./main.js";

const RATE_WINDOW_MS = 30_000;  // files/s over the last 30 s of snapshots: responsive, yet not jumpy
const TABLE_REFRESH_MS = 3_000;

export async function render(main, [batchId], _query, signal) {
  const base = `/v1/batches/${encodeURIComponent(batchId)}`;
  const first = await justAccepted(base, signal);
  const state = { snapshot: null, shown: 0, samples: [], receivedAt: 0 };

  const title = h("h1");
  const badge = h("span");
  const bar = progressBar(0, t("batch.progress"));
  const percentText = h("span.percent#batch-percent");
  const stat = (key, id) => h("div.stat", {}, h("dt", {}, t(key)), h(`dd#${id}`));
  const stats = h("dl.stats", {}, stat("batch.succeeded", "n-succeeded"), stat("batch.failed", "n-failed"),
    stat("batch.skipped", "n-skipped"), stat("batch.rate", "rate"), stat("batch.eta", "eta"));
  const counts = h("p#batch-counts");
  const live = h("span.live#live");
  const actions = h("div.actions");
  const table = h("div#files");
  replace(main, h("div.title-row", {}, title, badge, live),
    h("section.card", { "aria-labelledby": "progress-h" }, h("h2#progress-h.visually-hidden", {}, t("batch.progress")),
      h("div.bar-row", {}, bar, percentText), counts, stats, actions),
    h("section", { "aria-labelledby": "files-h" }, h("h2#files-h", {}, t("files.title")), table));

  // Snapshots only move forward: a lower version (a replay, a reconnect) is ignored and the bar never shrinks.
  function apply(snapshot) {
    if (state.snapshot && snapshot.version <= state.snapshot.version) return;
    const finished = !TERMINAL.has(state.snapshot?.status) && TERMINAL.has(snapshot.status);
    state.snapshot = snapshot;
    state.receivedAt = performance.now();
    state.shown = Math.max(state.shown, snapshot.percent);
    const at = Date.parse(snapshot.updated_at);
    state.samples = [...state.samples.filter(([time]) => time > at - RATE_WINDOW_MS), [at, snapshot.processed_files]];
    scheduleDraw();
    if (finished) {
      announce(t("batch.done", { status: t(`status.${snapshot.status}`) }));
      files.refresh();
      drawActions();
    }
  }

  let pending = false;
  function scheduleDraw() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  }

  function draw() {
    const s = state.snapshot;
    replace(title, t("batch.title", { name: s.name || t("batch.unnamed") }));
    replace(badge, statusBadge(s.status));
    setProgress(bar, state.shown);
    replace(percentText, `${state.shown.toFixed(1)} %`);
    replace(counts, t("batch.counts", { processed: s.processed_files, total: s.total_files }));
    replace(main.querySelector("#n-succeeded"), s.succeeded);
    replace(main.querySelector("#n-failed"), s.failed);
    replace(main.querySelector("#n-skipped"), s.skipped);
    replace(main.querySelector("#rate"), rate());
    drawEta();
  }

  function rate() {
    const s = state.snapshot;
    const [[t0, p0] = [], ...rest] = state.samples;
    const [t1, p1] = rest.at(-1) || [];
    let perSecond = t1 > t0 ? (p1 - p0) / ((t1 - t0) / 1000) : null;
    if (perSecond === null || TERMINAL.has(s.status)) {  // over the whole run: from acceptance to the last update
      const start = Date.parse(s.created_at || s.started_at);
      const end = Date.parse(s.finished_at || s.updated_at);
      perSecond = end > start && s.processed_files ? s.processed_files / ((end - start) / 1000) : null;
    }
    return perSecond === null ? t("unknown") : perSecond.toFixed(perSecond < 10 ? 2 : 1);
  }

  // The API's ETA holds at the snapshot; between snapshots it counts down with the clock.
  function drawEta() {
    const s = state.snapshot;
    const eta = s.eta_seconds == null ? null : s.eta_seconds - (performance.now() - state.receivedAt) / 1000;
    replace(main.querySelector("#eta"), TERMINAL.has(s.status) ? t("unknown") : duration(eta));
  }
  const ticker = setInterval(() => state.snapshot && drawEta(), 1000);
  signal.addEventListener("abort", () => clearInterval(ticker));

  async function drawActions() {
    const endpoints = await lifecycleEndpoints();
    const s = state.snapshot;
    const buttons = [];
    if (endpoints.cancel && !TERMINAL.has(s.status)) {
      buttons.push(h("button#cancel", { type: "button", onclick: () => confirm(t("batch.cancel.confirm")) && call(endpoints.cancel) }, t("batch.cancel")));
    }
    if (endpoints.retry && TERMINAL.has(s.status) && s.failed > 0) {
      buttons.push(h("button#retry", { type: "button", onclick: () => call(endpoints.retry, {}) }, t("batch.retry")));
    }
    replace(actions, buttons);
  }

  async function call({ method, path }, body) {
    try {
      await request(path.replace("{id}", encodeURIComponent(batchId)), { base: ingestUrl, method, body });
      announce(t("batch.requested"));
    } catch (err) {
      showError(err);
    }
  }

  const files = filesTable(table, base, signal);
  apply(first);
  drawActions();
  files.refresh();

  // Follow the stream until the batch ends (the server closes it after the terminal snapshot).
  const followed = (async () => {
    if (TERMINAL.has(first.status)) return;
    const onState = (s) => replace(live, s === "live" ? t("batch.live") : t("batch.reconnecting"));
    let lastRefresh = performance.now();
    for await (const event of eventStream(`${base}/events`, { signal, onState })) {
      if (event.event !== "progress") continue;
      apply(JSON.parse(event.data));
      if (performance.now() - lastRefresh > TABLE_REFRESH_MS) { lastRefresh = performance.now(); files.refresh(); }
    }
    replace(live);
  })();
  followed.catch((err) => err.name !== "AbortError" && showError(err));
}

function filesTable(container, base, signal) {
  let cursors = [];
  let filter = { status: "", name: "" };
  const statusSelect = h("select#file-status", { onchange: (e) => { filter.status = e.target.value; cursors = []; refresh(); } },
    h("option", { value: "" }, t("batches.any")), FILE_STATUSES.map((s) => h("option", { value: s }, t(`status.${s}`))));
  let typing;
  const nameInput = h("input#file-name", { type: "search", oninput: (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => { filter.name = e.target.value.trim(); cursors = []; refresh(); }, 250);
  } });
  const body = h("div");
  replace(container, h("div.filters", {},
    h("label", { for: "file-status" }, t("files.filter.status")), statusSelect,
    h("label", { for: "file-name" }, t("files.filter.name")), nameInput), body);

  let inFlight = null;
  async function refresh() {
    inFlight?.abort();
    const controller = inFlight = new AbortController();
    signal.addEventListener("abort", () => controller.abort(), { once: true });
    const params = new URLSearchParams({ limit: "50" });
    if (filter.status) params.set("status", filter.status);
    if (filter.name) params.set("name", filter.name);
    if (cursors.at(-1)) params.set("cursor", cursors.at(-1));
    let page;
    try {
      page = await getJson(`${base}/files?${params}`, { signal: controller.signal });
    } catch (err) {
      if (err.name !== "AbortError") replace(body, h("p.error", { role: "alert" }, err.message));
      return;
    }
    if (!page.data.length && !cursors.length) return replace(body, h("p.muted", {}, t("files.empty")));
    replace(body, h("table.grid#files-table", {},
      h("thead", {}, h("tr", {}, ["files.name", "files.status", "files.pages", "files.reason"].map((k) => h("th", { scope: "col" }, t(k))))),
      h("tbody", {}, page.data.map((f) => h("tr", {},
        h("td", {}, h("a", { href: `/ui${base.slice(3)}/files/${encodeURIComponent(f.file_id)}` }, f.original_name)),
        h("td", {}, statusBadge(f.status)),
        h("td.num", {}, f.page_count),
        h("td", {}, f.error ? [f.error_code ? h("code", {}, f.error_code) : null, " ", f.error] : ""))))),
    pager(cursors, page.next_cursor, (next) => { cursors = next; refresh(); }));
  }
  return { refresh };
}

// Right after the 202 the status view may not have read the batch's first snapshot yet: a 404 is retried for
// a few seconds before it is shown.
async function justAccepted(base, signal) {
  const deadline = performance.now() + 5000;
  for (let wait = 100; ; wait *= 2) {
    try {
      return await getJson(base, { signal });
    } catch (err) {
      if (err.status !== 404 || performance.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}
