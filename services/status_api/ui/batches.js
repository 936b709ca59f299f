// The list page: my batches, newest first, filtered by status, paged by cursor.
import { getJson } from "./api.js";
import { h, replace } from "./dom.js";
import { dateTime, t } from "./i18n.js";
import { pager, progressBar, statusBadge, STATUSES } from "./widgets.js";

export async function render(main, _params, query, signal) {
  const status = query.get("status") || "";
  const filter = h("select#batch-status", { onchange: (e) => load([], e.target.value) },
    h("option", { value: "" }, t("batches.any")),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, t(`status.${s}`))));
  const body = h("div");
  replace(main,
    h("div.title-row", {}, h("h1", {}, t("batches.title")), h("a.button", { href: "/ui/upload" }, t("batches.new"))),
    h("div.filters", {}, h("label", { for: "batch-status" }, t("batches.filter")), filter),
    body);

  async function load(cursors, status) {
    const params = new URLSearchParams({ limit: "25" });
    if (status) params.set("status", status);
    if (cursors.at(-1)) params.set("cursor", cursors.at(-1));
    const page = await getJson(`/v1/batches?${params}`, { signal });
    if (!page.data.length && !cursors.length) return replace(body, h("p.muted", {}, t("batches.empty")));
    replace(body,
      h("table.grid#batches", {},
        h("thead", {}, h("tr", {}, ["batches.name", "batches.created", "batches.status", "batches.progress", "batches.files"]
          .map((k) => h("th", { scope: "col" }, t(k))))),
        h("tbody", {}, page.data.map((b) => h("tr", {},
          h("td", {}, h("a", { href: `/ui/batches/${encodeURIComponent(b.batch_id)}` }, b.name || b.batch_id)),
          h("td", {}, dateTime(b.created_at)),
          h("td", {}, statusBadge(b.status)),
          h("td", {}, progressBar(b.percent, `${b.name || b.batch_id}`, "small")),
          h("td.num", {}, `${b.processed_files} / ${b.total_files}`))))),
      pager(cursors, page.next_cursor, (next) => load(next, status)));
  }
  await load([], status);
}
