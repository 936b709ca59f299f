// Small pieces several pages share: status badges, progress bars, the cursor pager.
import { h } from "./dom.js";
import { t } from "./i18n.js";

export const STATUSES = ["pending", "processing", "completed", "failed", "cancelled"];
export const FILE_STATUSES = ["ok", "failed", "skipped"];
export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

export const statusBadge = (status) => h(`span.badge.s-${status}`, {}, t(`status.${status}`));

export function progressBar(percent, label, size = "") {
  const bar = h(`div.bar${size ? "." + size : ""}`, { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
    "aria-label": label }, h("div.fill"));
  setProgress(bar, percent);
  return bar;
}

export function setProgress(bar, percent) {
  const value = Math.max(0, Math.min(100, percent));
  bar.firstChild.style.width = `${value}%`;
  bar.setAttribute("aria-valuenow", value.toFixed(1));
  bar.setAttribute("aria-valuetext", `${value.toFixed(1)} %`);
}

// Previous/next by cursor: `cursors` holds the cursor each page was loaded with (none for the first).
export function pager(cursors, next, load) {
  return h("nav.pager", { "aria-label": t("page.number", { n: cursors.length + 1 }) },
    h("button", { type: "button", disabled: !cursors.length, onclick: () => load(cursors.slice(0, -1)) }, t("page.prev")),
    h("span", {}, t("page.number", { n: cursors.length + 1 })),
    h("button", { type: "button", disabled: !next, onclick: () => load([...cursors, next]) }, t("page.next")));
}
