// The HTTP side: the key in sessionStorage, JSON calls with clear errors, SSE over fetch (EventSource cannot
// send an Authorization header), and the upload with its progress (XMLHttpRequest reports upload bytes).
import { t } from "./i18n.js";

const KEY = "ocrstream.apiKey";
export const ingestUrl = document.querySelector('meta[name="ocrstream-ingest-url"]').content.replace(/\/$/, "");

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) { value ? sessionStorage.setItem(KEY, value) : sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(status ? t("error.http", { status, detail: describe(detail) }) : t("error.network", { detail }));
    Object.assign(this, { status, code, detail });
  }
}

// A problem's detail as one readable text: a string, ingest's per-file list, or FastAPI's validation list.
export function describe(detail) {
  if (detail == null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => d.file ? `${d.file}: ${d.reason}` : d.loc ? `${d.loc.slice(1).join(".")}: ${d.msg}` : describe(d)).join("\n");
  }
  return JSON.stringify(detail);
}

// Listeners told when the key was refused, so the page can ask for another.
const unauthorized = new Set();
export const onUnauthorized = (fn) => unauthorized.add(fn);

async function failure(response) {
  let body = {};
  try { body = await response.json(); } catch { body = { detail: response.statusText }; }
  const error = new ApiError(response.status, body.code, body.detail);
  if (response.status === 401) unauthorized.forEach((fn) => fn(error));
  return error;
}

export async function request(path, { key = session.key, base = "", accept = "application/json", method = "GET",
                                      body, signal } = {}) {
  let response;
  try {
    response = await fetch(base + path, {
      method, signal, body: body === undefined ? undefined : JSON.stringify(body),
      headers: { Authorization: `Bearer ${key}`, Accept: accept, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", err.message);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export const getJson = async (path, options) => (await request(path, options)).json();
export const getBlob = async (path, options) => (await request(path, { accept: "*/*", ...options })).blob();

// Every SSE event of `path` as {event, id, data}; reconnects with Last-Event-ID after a dropped connection,
// ends when the server ends the stream (the batch reached a terminal status) or `signal` aborts.
export async function* eventStream(path, { signal, onState } = {}) {
  let lastId = null;
  for (let attempt = 0; !signal?.aborted; attempt++) {
    try {
      const headers = { Authorization: `Bearer ${session.key}`, Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const response = await fetch(path, { headers, signal });
      if (!response.ok) throw await failure(response);
      onState?.("live");
      attempt = 0;
      for await (const event of parseEvents(response.body, signal)) {
        if (event.id) lastId = event.id;
        yield event;
      }
      return;
    } catch (err) {
      if (err.name === "AbortError" || (err instanceof ApiError && err.status >= 400 && err.status < 500)) throw err;
      onState?.("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * 2 ** attempt, 10_000)));
    }
  }
}

async function* parseEvents(stream, signal) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  signal?.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { event: "message", id: null, data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(text);
        else if (field === "event") event.event = text;
        else if (field === "id") event.id = text;
      }
      if (event.data.length) yield { ...event, data: event.data.join("\n") };
    }
  }
}

// POST the files as one multipart batch to ingest; onProgress(sentBytes, totalBytes) while the body streams.
export function uploadBatch(files, fields, onProgress) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) if (value) form.append(name, value);
  for (const { file, path } of files) form.append("files", file, path);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${ingestUrl}/v1/batches`);
    xhr.setRequestHeader("Authorization", `Bearer ${session.key}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => e.lengthComputable && onProgress(e.loaded, e.total, false));
    xhr.upload.addEventListener("load", () => onProgress(1, 1, true));
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", ingestUrl)));
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch { body = { detail: xhr.statusText || xhr.responseText }; }
      if (xhr.status === 202) return resolve(body);
      const error = new ApiError(xhr.status, body.code, body.detail);
      if (xhr.status === 401) unauthorized.forEach((fn) => fn(error));
      reject(error);
    });
    xhr.send(form);
  });
}

// Which lifecycle endpoints ingest offers, read from its OpenAPI document once: the console shows cancel and
// retry only where they exist (any path parameter name; cancel as DELETE /v1/batches/{id} or POST .../cancel).
let lifecycle;
export function lifecycleEndpoints() {
  lifecycle ??= fetch(`${ingestUrl}/openapi.json`).then((r) => (r.ok ? r.json() : { paths: {} }))
    .catch(() => ({ paths: {} }))
    .then(({ paths = {} }) => {
      const found = { cancel: null, retry: null };
      for (const [path, ops] of Object.entries(paths)) {
        const route = path.replace(/\{[^}]+\}/, "{id}");
        if (route === "/v1/batches/{id}" && ops.delete) found.cancel ??= { method: "DELETE", path: route };
        if (route === "/v1/batches/{id}/cancel" && ops.post) found.cancel = { method: "POST", path: route };
        if (route === "/v1/batches/{id}/retry" && ops.post) found.retry = { method: "POST", path: route };
      }
      return found;
    });
  return lifecycle;
}
