// The console's shell: the key gate, the navigation and a router over /ui/... paths (History API).
import { ApiError, getJson, onUnauthorized, session } from "./api.js";
import { h, replace } from "./dom.js";
import { lang, t } from "./i18n.js";

const ROUTES = [
  [/^\/ui\/?$/, () => import("./batches.js")],
  [/^\/ui\/upload$/, () => import("./upload.js")],
  [/^\/ui\/search$/, () => import("./search.js")],
  [/^\/ui\/batches\/([^/]+)$/, () => import("./batch.js")],
  [/^\/ui\/batches\/([^/]+)\/files\/([^/]+)$/, () => import("./file.js")],
];

const main = document.getElementById("main");
let leave = () => {};

export function navigate(url, { replaceState = false } = {}) {
  history[replaceState ? "replaceState" : "pushState"](null, "", url);
  route();
}

async function route() {
  leave();
  leave = () => {};
  drawNav();
  if (!session.key) return askForKey();
  const path = location.pathname;
  const match = ROUTES.map(([re, load]) => [path.match(re), load]).find(([m]) => m);
  if (!match) return navigate("/ui/", { replaceState: true });
  const [[, ...params], load] = match;
  const view = await load();
  const controller = new AbortController();
  leave = () => controller.abort();
  replace(main);
  try {
    await view.render(main, params.map(decodeURIComponent), new URLSearchParams(location.search), controller.signal);
  } catch (err) {
    if (err.name !== "AbortError") showError(err);
  }
  main.querySelector("h1")?.setAttribute("tabindex", "-1");
  if (document.activeElement === document.body || !main.contains(document.activeElement)) main.querySelector("h1")?.focus();
}

export function showError(err) {
  const box = h("p.error", { role: "alert", tabindex: "-1" }, err.message);
  main.prepend(box);
  return box;
}

function askForKey(message) {
  drawNav();
  const input = h("input#api-key", { type: "password", name: "api-key", autocomplete: "off", required: true, "aria-describedby": "key-help key-error" });
  const error = h("p.error#key-error", { role: "alert" }, message || "");
  const form = h("form.card", { onsubmit: async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return replace(error, t("key.missing"));
    replace(error, t("key.checking"));
    try {
      await getJson("/v1/batches?limit=1", { key });
      session.key = key;
      route();
    } catch (err) {
      replace(error, err instanceof ApiError && err.status === 401 ? t("key.rejected", { detail: err.detail }) : err.message);
      input.focus();
    }
  } },
  h("h1", {}, t("key.title")),
  h("label", { for: "api-key" }, t("key.label")), input,
  h("p.muted#key-help", {}, t("key.help")),
  h("button", { type: "submit" }, t("key.submit")), error);
  replace(main, form);
  input.focus();
}

function drawNav() {
  const links = [["/ui/", "nav.batches"], ["/ui/upload", "nav.upload"], ["/ui/search", "nav.search"]];
  const here = location.pathname;
  const current = (href) => (href === "/ui/" ? here === "/ui" || here === "/ui/" || here.startsWith("/ui/batches")
    : here.startsWith(href));
  replace(document.getElementById("nav"), h("ul", {}, links.map(([href, key]) =>
    h("li", {}, h("a", { href, "aria-current": current(href) ? "page" : null }, t(key))))));
  replace(document.getElementById("session"), session.key
    ? h("button.link", { type: "button", onclick: () => { session.key = null; route(); } }, t("key.signout")) : null);
}

onUnauthorized((err) => {
  session.key = null;
  leave();
  askForKey(t("key.rejected", { detail: err.detail }));
});

// In-app links: same-origin /ui/ anchors route without a reload (new tabs and modifiers keep their meaning).
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download") || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/ui")) return;
  if (url.hash && url.pathname === location.pathname) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", route);

document.documentElement.lang = lang;
document.title = "ocrstream";
document.getElementById("skip-link").textContent = t("skip");
document.getElementById("nav").setAttribute("aria-label", t("nav.main"));
route();
