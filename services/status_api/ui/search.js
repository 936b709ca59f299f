// The search page: each hit's snippet with the match marked, and a thumbnail of its page with the matched
// words' boxes drawn; a hit opens its file page at that page.
import { getJson, request } from "./api.js";
import { h, replace } from "./dom.js";
import { t } from "./i18n.js";
import { navigate } from "./main.js";

const THUMBNAIL_WIDTH = 240;

export async function render(main, _params, query, signal) {
  const q = query.get("q") || "";
  const input = h("input#q", { type: "search", name: "q", value: q, required: true, maxlength: "500" });
  const results = h("div#results", { "aria-live": "polite" });
  replace(main, h("h1", {}, t("search.title")),
    h("form.search", { role: "search", onsubmit: (e) => {
      e.preventDefault();
      if (input.value.trim()) navigate(`/ui/search?q=${encodeURIComponent(input.value.trim())}`);
    } }, h("label", { for: "q" }, t("search.label")), input, h("button", { type: "submit" }, t("search.submit"))),
    results);
  if (!q) return input.focus();
  const { data } = await getJson(`/v1/search?${new URLSearchParams({ q, k: "10" })}`, { signal });
  if (!data.length) return replace(results, h("p.muted", {}, t("search.empty")));
  const list = h("ol.hits");
  replace(results, list);
  for (const hit of data) {
    const href = `/ui/batches/${encodeURIComponent(hit.batch_id)}/files/${encodeURIComponent(hit.file_id)}?page=${hit.page_number}`;
    const thumb = h("div.thumb");
    list.append(h("li.hit", {},
      thumb,
      h("div", {},
        h("a.hit-link", { href }, hit.original_name, " · ", t("search.page", { n: hit.page_number })),
        h("p.snippet", {}, marked(hit.snippet, hit.match)))));
    thumbnail(hit, thumb, signal).catch(() => {});  // a thumbnail that fails leaves the hit readable
  }
}

// The snippet with the match in <mark>; the API counts characters as code points, so index by code point.
function marked(snippet, match) {
  if (!match) return snippet;
  const chars = Array.from(snippet);
  return [chars.slice(0, match.start).join(""), h("mark", {}, chars.slice(match.start, match.end).join("")),
    chars.slice(match.end).join("")];
}

async function thumbnail(hit, container, signal) {
  const path = `/v1/batches/${encodeURIComponent(hit.batch_id)}/files/${encodeURIComponent(hit.file_id)}` +
    `/pages/${hit.page_number}/image?width=${THUMBNAIL_WIDTH}`;
  const response = await request(path, { accept: "image/png", signal });
  const [width, height] = [response.headers.get("X-Page-Width"), response.headers.get("X-Page-Height")].map(Number);
  const url = URL.createObjectURL(await response.blob());
  signal.addEventListener("abort", () => URL.revokeObjectURL(url));
  const boxes = hit.match_words.map((w) => {
    const box = h("span.box.hit-box", { "aria-hidden": "true" });
    Object.assign(box.style, { left: `${(w.bbox.x / width) * 100}%`, top: `${(w.bbox.y / height) * 100}%`,
      width: `${(w.bbox.width / width) * 100}%`, height: `${(w.bbox.height / height) * 100}%` });
    return box;
  });
  replace(container, h("div.page", {},
    h("img.page-image", { src: url, alt: t("search.thumb", { n: hit.page_number, name: hit.original_name }) }),
    h("div.overlay", {}, boxes)));
}
