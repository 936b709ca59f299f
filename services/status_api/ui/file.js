// The file page: the page image (the original image, or the PDF/TIFF page rendered by the API) with every
// recognized word's box drawn over it, coloured by confidence; the page text beside it, to copy or download.
import { getBlob, getJson, request } from "./api.js";
import { h, replace, saveAs } from "./dom.js";
import { t } from "./i18n.js";
import { navigate } from "./main.js";
import { statusBadge } from "./widgets.js";

// Types a browser shows as they are; other files' pages (PDF, TIFF) come from the page-image endpoint.
const SHOWN_AS_IS = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"]);

export async function render(main, [batchId, fileId], query, signal) {
  const base = `/v1/batches/${encodeURIComponent(batchId)}/files/${encodeURIComponent(fileId)}`;
  const file = await getJson(base, { signal });
  const pageCount = file.pages.length;
  const pageNumber = Math.min(Math.max(parseInt(query.get("page") || "1", 10) || 1, 1), Math.max(pageCount, 1));
  const page = file.pages.find((p) => p.page_number === pageNumber);
  const stem = file.original_name.replace(/^.*\//, "").replace(/\.[^.]+$/, "");

  const header = h("div.title-row", {}, h("h1", {}, t("file.title", { name: file.original_name })), statusBadge(file.status),
    h("a", { href: `/ui/batches/${encodeURIComponent(batchId)}` }, t("file.back")));
  if (!page) {
    replace(main, header, h("p.error", { role: "alert" }, t("file.failed", { reason: [file.error_code, file.error].filter(Boolean).join(": ") })));
    return;
  }
  const goTo = (n) => navigate(`/ui/batches/${encodeURIComponent(batchId)}/files/${encodeURIComponent(fileId)}?page=${n}`);
  const pages = pageCount > 1 ? h("nav.pager", { "aria-label": t("file.page") },
    h("button", { type: "button", disabled: pageNumber <= 1, onclick: () => goTo(pageNumber - 1) }, t("file.prevpage")),
    h("span", {}, `${t("file.page")} ${pageNumber} ${t("file.of", { n: pageCount })}`),
    h("button", { type: "button", disabled: pageNumber >= pageCount, onclick: () => goTo(pageNumber + 1) }, t("file.nextpage"))) : null;

  const viewer = h("div.viewer");
  const status = h("p.muted", { role: "status" });
  const text = h("pre.page-text#page-text", { tabindex: "0", "aria-labelledby": "text-h" }, page.text);
  replace(main, header, pages,
    h("div.file-layout", {},
      h("section", { "aria-label": file.original_name }, viewer, legend(page)),
      h("section.text-pane", { "aria-labelledby": "text-h" },
        h("h2#text-h", {}, t("file.text")),
        h("div.actions", {},
          h("button#copy", { type: "button", onclick: () => copy(page.text, status) }, t("file.copy")),
          h("button#download-txt", { type: "button", onclick: async () =>
            saveAs(await (await request(base, { accept: "text/plain" })).blob(), `${stem}.txt`) }, t("file.txt")),
          h("button#download-json", { type: "button", onclick: () =>
            saveAs(new Blob([JSON.stringify(file, null, 2)], { type: "application/json" }), `${stem}.json`) }, t("file.json"))),
        status, text)));

  const source = SHOWN_AS_IS.has(file.content_type) && pageCount === 1 ? `${base}/content` : `${base}/pages/${pageNumber}/image`;
  try {
    const url = URL.createObjectURL(await getBlob(source, { signal }));
    signal.addEventListener("abort", () => URL.revokeObjectURL(url));
    replace(viewer, pageWithBoxes(url, page, file.original_name));
  } catch (err) {
    if (err.name === "AbortError") throw err;
    replace(viewer, h("p.error", { role: "alert" }, t("file.noimage", { detail: err.message })));
  }
}

// Boxes are placed in percent of the page's pixel size, so they follow the image at any displayed size.
export function pageWithBoxes(url, page, name, words = page.words || []) {
  const tip = h("div.tip", { role: "tooltip", id: "word-tip", hidden: true });
  const boxes = words.map((w, i) => {
    const box = h(`span.box.${band(w.confidence)}`, {
      tabindex: i === 0 ? "0" : "-1", role: "img",
      "aria-label": `${w.text} (${Math.round(w.confidence * 100)} %)`,
      dataset: { text: w.text, confidence: w.confidence, x: w.bbox.x, y: w.bbox.y, w: w.bbox.width, h: w.bbox.height },
    });
    Object.assign(box.style, {
      left: `${(w.bbox.x / page.width) * 100}%`, top: `${(w.bbox.y / page.height) * 100}%`,
      width: `${(w.bbox.width / page.width) * 100}%`, height: `${(w.bbox.height / page.height) * 100}%`,
    });
    return box;
  });
  const overlay = h("div.overlay", { role: "group", "aria-label": t("file.words.label") }, boxes);
  const show = (box) => {
    replace(tip, h("strong", {}, box.dataset.text), ` ${Math.round(box.dataset.confidence * 100)} %`);
    tip.hidden = false;
    const below = box.offsetTop + box.offsetHeight + 4;
    Object.assign(tip.style, { left: `${box.offsetLeft}px`, top: `${below}px` });
  };
  overlay.addEventListener("mouseover", (e) => e.target.classList.contains("box") && show(e.target));
  overlay.addEventListener("mouseleave", () => { tip.hidden = true; });
  overlay.addEventListener("focusin", (e) => show(e.target));
  overlay.addEventListener("focusout", () => { tip.hidden = true; });
  overlay.addEventListener("keydown", (e) => {  // roving focus: one tab stop, arrow keys between words
    const i = boxes.indexOf(e.target);
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[e.key]
      ?? (e.key === "Home" ? -i : e.key === "End" ? boxes.length - 1 - i : null);
    if (i < 0 || step === null) return;
    e.preventDefault();
    const next = boxes[Math.min(Math.max(i + step, 0), boxes.length - 1)];
    e.target.tabIndex = -1;
    next.tabIndex = 0;
    next.focus();
  });
  return h("div.page", { dataset: { width: page.width, height: page.height } },
    h("img.page-image", { src: url, alt: name }), overlay, tip);
}

function band(confidence) {
  return confidence >= 0.9 ? "high" : confidence >= 0.7 ? "mid" : "low";
}

function legend(page) {
  return h("p.legend", {}, t("file.legend"), ": ",
    ["high", "mid", "low"].map((b) => h("span", {}, h(`span.swatch.${b}`, { "aria-hidden": "true" }), ` ${t(`file.${b}`)} `)),
    " · ", t("file.words", { n: (page.words || []).length }));
}

async function copy(text, status) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {  // no clipboard permission (plain http on another host): select the text for Ctrl+C instead
    getSelection().selectAllChildren(document.getElementById("page-text"));
  }
  replace(status, t("file.copied"));
}
