// The upload page: files or a whole folder (drop, or the two pickers), sent to ingest as one multipart batch
// with a progress bar for the bytes; the batch page opens as soon as the 202 arrives.
import { uploadBatch } from "./api.js";
import { h, replace } from "./dom.js";
import { bytes, t } from "./i18n.js";
import { navigate, showError } from "./main.js";
import { progressBar, setProgress } from "./widgets.js";

export async function render(main, _params, _query, signal) {
  let chosen = [];  // [{file, path}]
  let skipped = 0;
  const summary = h("p#selection", { role: "status" }, t("upload.none"));
  const filesInput = h("input#pick-files.visually-hidden", { type: "file", multiple: true, tabindex: "-1",
    onchange: (e) => choose([...e.target.files].map((file) => ({ file, path: file.name }))) });
  const folderInput = h("input#pick-folder.visually-hidden", { type: "file", webkitdirectory: true, tabindex: "-1",
    onchange: (e) => choose([...e.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name }))) });
  const name = h("input#batch-name", { type: "text", maxlength: "200" });
  const languages = h("select#languages", {}, ["kor+eng", "kor", "eng"].map((l) => h("option", { value: l }, l)));
  const submit = h("button#upload", { type: "submit", disabled: true }, t("upload.submit"));
  const bar = progressBar(0, t("upload.title"));
  const barText = h("p#upload-status", { role: "status" });
  const progress = h("div.upload-progress", { hidden: true }, bar, barText);
  const zone = h("div.dropzone#dropzone", {},
    h("p", {}, t("upload.drop")),
    h("div.actions", {},
      h("button", { type: "button", onclick: () => filesInput.click() }, t("upload.files")),
      h("button", { type: "button", onclick: () => folderInput.click() }, t("upload.folder"))),
    filesInput, folderInput, summary);
  for (const type of ["dragenter", "dragover"]) zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const entries = [...e.dataTransfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
    choose(entries.length ? await filesOf(entries) : [...e.dataTransfer.files].map((file) => ({ file, path: file.name })));
  });

  replace(main, h("h1", {}, t("upload.title")),
    h("form.card#upload-form", { onsubmit: send }, zone,
      h("div.fields", {},
        h("label", { for: "batch-name" }, t("upload.name")), name,
        h("label", { for: "languages" }, t("upload.languages")), languages),
      submit, progress));

  function choose(files) {
    // Hidden files (.DS_Store, Thumbs.db's kin) are never meant for OCR, and ingest refuses unknown types.
    const visible = files.filter(({ path }) => !path.split("/").some((part) => part.startsWith(".")));
    skipped = files.length - visible.length;
    chosen = visible;
    const size = chosen.reduce((sum, { file }) => sum + file.size, 0);
    replace(summary, chosen.length ? t("upload.selected", { n: chosen.length, size: bytes(size) }) : t("upload.none"),
      skipped ? ` (${t("upload.skipped", { n: skipped })})` : "");
    if (!name.value && chosen[0]?.path.includes("/")) name.value = chosen[0].path.split("/")[0];
    submit.disabled = !chosen.length;
  }

  async function send(e) {
    e.preventDefault();
    submit.disabled = true;
    progress.hidden = false;
    main.querySelector(".error")?.remove();
    try {
      const accepted = await uploadBatch(chosen, { name: name.value.trim(), languages: languages.value }, (sent, total, done) => {
        setProgress(bar, (sent / total) * 100);
        replace(barText, done ? t("upload.waiting") : t("upload.sending", { percent: Math.floor((sent / total) * 100), sent: bytes(sent), size: bytes(total) }));
      });
      if (!signal.aborted) navigate(`/ui/batches/${encodeURIComponent(accepted.batch_id)}`);
    } catch (err) {
      progress.hidden = true;
      submit.disabled = false;
      showError(Object.assign(err, { message: `${t("upload.rejected")}: ${err.message}` })).focus?.();
    }
  }
}

// Every file under the dropped entries (folders walked), with its path relative to the drop.
async function filesOf(entries) {
  const out = [];
  async function walk(entry) {
    if (entry.isFile) {
      out.push({ file: await new Promise((ok, fail) => entry.file(ok, fail)), path: entry.fullPath.replace(/^\//, "") });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (let batch; (batch = await new Promise((ok, fail) => reader.readEntries(ok, fail))).length;) {
        for (const child of batch) await walk(child);
      }
    }
  }
  for (const entry of entries) await walk(entry);
  return out;
}
