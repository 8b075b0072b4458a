// The page of `ebook2audio serve`: plain ES2020, no framework, no build step.
// It talks to the server's REST API (see docs/serve.md): uploads, engines, voice
// preview, jobs, and the live queue from the server-sent events of /api/events.
// URLs are relative, so the page also works behind a reverse proxy under a prefix.

const $ = (id) => document.getElementById(id);

const STATE_TEXT = {
  queued: "Queued",
  running: "Running",
  waiting: "Waiting for the cluster",
  cancelling: "Cancelling",
  done: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
  uploading: "Uploading",
  pending: "Waiting to upload",
};
// A sign beside each state's text, so that state never rests on colour alone.
const STATE_SIGN = {
  queued: "◷", running: "▶", waiting: "⏸", cancelling: "■", done: "✓", failed: "✗",
  cancelled: "■", uploading: "↑", pending: "◷",
};
const FILE_KIND = {
  audio: "Audiobook",
  report: "Report",
  subtitles: "Subtitles",
  readalong: "Read-along EPUB",
  failures: "Failed chunks",
};
const FINAL = new Set(["done", "failed", "cancelled"]);
const ACTIVE = new Set(["queued", "running", "waiting"]);

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function ensureCsrf() {
  if (csrfToken()) return;
  const response = await fetch("api/csrf", { credentials: "same-origin" });
  if (response.ok) {
    const body = await response.json();
    document.querySelector('meta[name="csrf-token"]').content = body.csrf || "";
  }
}

/** One line saying why a request failed: the API's `detail`, else the HTTP status. */
async function errorText(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) {
    detail = "";
  }
  return detail || `${response.status} ${response.statusText}`.trim();
}

/** fetch with the CSRF header on unsafe methods; throws Error(one line) unless 2xx. */
async function api(path, { method = "GET", json, body, headers = {} } = {}) {
  const init = { method, credentials: "same-origin", headers: { ...headers } };
  if (method !== "GET" && method !== "HEAD") {
    await ensureCsrf();
    init.headers["X-CSRF-Token"] = csrfToken();
  }
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new Error(`the server did not answer (${err.message})`);
  }
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

function formatBytes(n) {
  if (!Number.isFinite(n)) return "";
  const units = ["bytes", "kB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return i === 0 ? `${n} bytes` : `${n.toFixed(1)} ${units[i]}`;
}

function formatEta(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `about ${s} s left`;
  const m = Math.floor(s / 60);
  if (m < 60) return `about ${m} min ${s % 60} s left`;
  return `about ${Math.floor(m / 60)} h ${m % 60} min left`;
}

/** Sorted chapter numbers as the API's chapter string: [2, 3, 5] -> "2-3,5". */
export function chapterRanges(numbers) {
  const sorted = [...new Set(numbers)].sort((a, b) => a - b);
  const parts = [];
  let i = 0;
  while (i < sorted.length) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j += 1;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

const announced = [];
/** Say *text* in the polite live region (and keep the last 30 lines visible). */
function announce(text) {
  const list = $("activity");
  const time = new Date().toLocaleTimeString();
  list.append(el("li", {}, el("span", { class: "time", text: time }), ` ${text}`));
  announced.push(text);
  while (list.children.length > 30) list.firstElementChild.remove();
}

function stateBadge(state) {
  return el(
    "span",
    { class: `state state-${state}` },
    el("span", { "aria-hidden": "true", text: `${STATE_SIGN[state] || "•"} ` }),
    STATE_TEXT[state] || state,
  );
}

// ---------------------------------------------------------------- engines

let engines = [];

async function loadEngines() {
  const select = $("engine");
  try {
    const response = await api("api/engines");
    engines = (await response.json()).engines || [];
  } catch (err) {
    $("engine-help").textContent = `Engines could not be listed: ${err.message}`;
    return;
  }
  select.replaceChildren();
  let chosen = null;
  for (const engine of engines) {
    const label = engine.available ? engine.name : `${engine.name} (unavailable)`;
    select.append(el("option", { value: engine.name, disabled: !engine.available, text: label }));
    if (chosen === null && engine.available && !engine.why) chosen = engine.name;
  }
  if (chosen === null) {
    const first = engines.find((engine) => engine.available);
    chosen = first ? first.name : null;
  }
  if (chosen !== null) select.value = chosen;
  showVoices();
}

function showVoices() {
  const engine = engines.find((e) => e.name === $("engine").value);
  const voice = $("voice");
  const previous = voice.value;
  voice.replaceChildren(el("option", { value: "", text: "Default for each book's language" }));
  for (const v of (engine && engine.voices) || []) {
    const text = v.language && v.language !== v.id ? `${v.id} (${v.language})` : v.id;
    voice.append(el("option", { value: v.id, text }));
  }
  if ([...voice.options].some((o) => o.value === previous)) voice.value = previous;
  $("engine-help").textContent = engine && engine.why ? engine.why : "";
}

// ---------------------------------------------------------------- cluster

async function loadCluster() {
  try {
    const info = await (await api("api/cluster")).json();
    const workers = info.workers === 1 ? "1 worker" : `${info.workers ?? 0} workers`;
    $("cluster-state").textContent = info.connected
      ? `connected, ${workers}.`
      : "not connected (jobs wait until it is back).";
    const link = $("dashboard");
    if (info.dashboard) {
      link.href = info.dashboard;
      link.hidden = false;
    } else {
      link.hidden = true;
    }
  } catch (err) {
    $("cluster-state").textContent = `unknown (${err.message}).`;
  }
}

// ---------------------------------------------------------------- books

// upload id (or a temporary key while uploading) -> {key, file, upload, node, listing}
const books = new Map();
let uploadCount = 0;
let uploadChain = Promise.resolve();

function addFiles(fileList) {
  for (const file of fileList) {
    uploadCount += 1;
    const key = `pending-${uploadCount}`;
    const book = { key, file, upload: null, node: null, listing: [] };
    books.set(key, book);
    renderBook(book, "pending");
    // One upload at a time: the server limits pending uploads, and the order stays the
    // order the books were given in.
    uploadChain = uploadChain.then(() => uploadBook(book));
  }
  updateEmpty();
}

async function uploadBook(book) {
  renderBook(book, "uploading");
  try {
    const name = encodeURIComponent(book.file.name);
    const response = await api(`api/uploads?filename=${name}`, {
      method: "POST",
      body: book.file,
      headers: { "Content-Type": "application/octet-stream" },
    });
    book.upload = await response.json();
  } catch (err) {
    book.error = err.message;
    renderBook(book, "failed");
    announce(`Upload of ${book.file.name} failed: ${err.message}`);
    return;
  }
  books.delete(book.key);
  book.key = book.upload.id;
  books.set(book.key, book);
  if (book.upload.error || !book.upload.summary) {
    book.error = book.upload.error || "the book could not be read";
    renderBook(book, "failed");
    const named = book.error.startsWith(`${book.file.name}:`);
    announce(`Cannot convert ${named ? "" : `${book.file.name}: `}${book.error}`);
    return;
  }
  renderBook(book, "ready");
  const title = book.upload.summary.title || book.file.name;
  announce(`${title} uploaded: ${book.listing.filter((c) => c.kind === "body").length} chapters.`);
}

/** Draw (or redraw) the card of one book in the form. */
function renderBook(book, phase) {
  const id = `book-${book.key.replace(/[^A-Za-z0-9_-]/g, "")}`;
  const summary = book.upload && book.upload.summary;
  const title = (summary && summary.title) || book.file.name;
  const heading = el("h3", { id: `${id}-title`, text: title });
  const card = el("li", { class: `book book-${phase}`, "data-upload": book.upload?.id });
  const article = el("article", { "aria-labelledby": `${id}-title` });
  card.append(article);
  const body = el("div", { class: "book-body" });
  if (summary && summary.cover && book.upload.cover_url) {
    article.append(
      el("img", { class: "cover", src: book.upload.cover_url, alt: `Cover of ${title}` }),
    );
  }
  article.append(body);
  body.append(heading);
  if (phase === "pending" || phase === "uploading") {
    body.append(
      el("p", { class: "book-meta" }, stateBadge(phase), ` ${book.file.name}`,
        ` (${formatBytes(book.file.size)})`),
    );
  } else if (phase === "failed") {
    body.append(
      el("p", { class: "book-meta" }, stateBadge("failed"), ` ${book.file.name}`),
      el("p", { class: "error", text: `Error: ${book.error}` }),
    );
  } else {
    const authors = summary.authors && summary.authors.length ? summary.authors.join(", ") : "";
    body.append(
      el(
        "p",
        { class: "book-meta" },
        authors ? `By ${authors}. ` : "",
        `Language: ${summary.language || "unknown"}. `,
        `Format: ${(summary.format || "").toUpperCase()}. `,
        `${formatBytes(book.upload.size)}.`,
      ),
    );
    body.append(chapterList(book, id, summary, title));
  }
  const remove = button("Remove book", title, { class: "remove", onclick: () => removeBook(book) });
  if (phase !== "uploading" && phase !== "pending") body.append(remove);
  if (book.node) book.node.replaceWith(card);
  else $("books").append(card);
  book.node = card;
}

/** The fieldset of chapter checkboxes: the body checked, skipped matter listed unchecked. */
function chapterList(book, id, summary, title) {
  // `listing` is every section in reading order; body chapters are numbered as
  // --chapters takes them, and every section is numbered (by position) when
  // include_matter is on. Older summaries without a listing: chapters then skipped.
  const listing = summary.listing || [...summary.chapters, ...(summary.skipped || [])];
  book.listing = listing.map((row, position) => ({ ...row, position: position + 1 }));
  const fieldset = el("fieldset", { class: "chapters" });
  fieldset.append(el("legend", { text: `Chapters of ${title}` }));
  const tools = el("div", { class: "chapter-tools" });
  const setAll = (checked, which) => () => {
    for (const box of fieldset.querySelectorAll("input[type=checkbox]")) {
      if (which(box)) box.checked = checked;
    }
  };
  tools.append(
    button("Check every chapter", `of ${title}`,
      { onclick: setAll(true, (b) => !b.dataset.skipped) }),
    button("Uncheck all", `sections of ${title}`, { onclick: setAll(false, () => true) }),
  );
  fieldset.append(tools);
  const list = el("ul", { class: "chapter-list" });
  let bodyNumber = 0;
  for (const row of book.listing) {
    const skipped = row.kind !== "body";
    if (!skipped) bodyNumber += 1;
    row.bodyNumber = skipped ? null : bodyNumber;
    const boxId = `${id}-section-${row.position}`;
    const words = `${row.words ?? "?"} words`;
    const label = el("label", { for: boxId });
    if (skipped) {
      label.append(
        el("span", { class: "skipped-tag", text: `Skipped (${row.kind} matter)` }),
        ` ${row.title || "untitled"} `,
        el("span", { class: "detail", text: `— ${words}; ${row.reason || "not body text"}` }),
      );
    } else {
      label.append(
        el("span", { class: "number", text: `${bodyNumber}.` }),
        ` ${row.title || "untitled"} `,
        el("span", { class: "detail", text: `— ${words}` }),
      );
    }
    const box = el("input", {
      type: "checkbox",
      id: boxId,
      checked: !skipped,
      "data-position": row.position,
      "data-chapter": skipped ? null : bodyNumber,
      "data-skipped": skipped ? "true" : null,
    });
    list.append(el("li", { class: skipped ? "skipped" : "" }, box, label));
  }
  fieldset.append(list);
  return fieldset;
}

async function removeBook(book) {
  if (book.upload && book.upload.id) {
    try {
      await api(`api/uploads/${encodeURIComponent(book.upload.id)}`, { method: "DELETE" });
    } catch (err) {
      announce(`Could not remove ${book.file.name}: ${err.message}`);
      return;
    }
  }
  books.delete(book.key);
  book.node.remove();
  updateEmpty();
  announce(`${book.file.name} removed.`);
  $("files").focus();
}

function updateEmpty() {
  $("books-empty").hidden = books.size > 0;
}

function readyBooks() {
  return [...books.values()].filter((b) => b.upload && b.upload.summary && !b.upload.error);
}

/** The books of the job to submit, and whether it needs include_matter. */
function selectedBooks() {
  const chosen = readyBooks().map((book) => {
    const boxes = [...book.node.querySelectorAll("input[type=checkbox][data-position]")];
    const checked = new Set(boxes.filter((b) => b.checked).map((b) => +b.dataset.position));
    return { book, checked };
  });
  const includeMatter = chosen.some(({ book, checked }) =>
    book.listing.some((row) => row.bodyNumber === null && checked.has(row.position)),
  );
  const out = [];
  for (const { book, checked } of chosen) {
    const title = book.upload.summary.title || book.file.name;
    if (checked.size === 0) throw new Error(`check at least one chapter of ${title}`);
    const everyBody = book.listing.every((row) =>
      row.bodyNumber === null ? !checked.has(row.position) : checked.has(row.position),
    );
    let chapters = null;
    if (includeMatter) {
      // Every section numbered in reading order, as convert --include-matter does.
      if (checked.size < book.listing.length) chapters = chapterRanges([...checked]);
    } else if (!everyBody) {
      chapters = chapterRanges(
        book.listing.filter((r) => checked.has(r.position)).map((r) => r.bodyNumber),
      );
    }
    out.push({ upload_id: book.upload.id, chapters });
  }
  return { books: out, includeMatter };
}

function jobOptions() {
  const options = {
    format: $("format").value,
    split: $("split").value,
    subtitles: $("subtitles").value,
    layout: $("layout").value,
  };
  if ($("engine").value) options.engine = $("engine").value;
  if ($("voice").value) options.voice = $("voice").value;
  const language = $("language").value.trim();
  if (language) options.language = language;
  if ($("loudnorm").checked) options.loudnorm = true;
  if ($("readalong").checked) options.readalong = true;
  return options;
}

async function submitJob(event) {
  event.preventDefault();
  const status = $("submit-status");
  status.classList.remove("error");
  if ([...books.values()].some((b) => !b.upload && !b.error)) {
    status.textContent = "Wait until every book is uploaded.";
    return;
  }
  let selection;
  try {
    if (readyBooks().length === 0) throw new Error("add at least one readable book first");
    selection = selectedBooks();
  } catch (err) {
    status.classList.add("error");
    status.textContent = `Not submitted: ${err.message}.`;
    return;
  }
  const options = jobOptions();
  if (selection.includeMatter) options.include_matter = true;
  const priority = Number.parseInt($("priority").value, 10) || 0;
  $("submit").setAttribute("aria-busy", "true");
  try {
    const response = await api("api/jobs", {
      method: "POST",
      json: { books: selection.books, options, priority },
    });
    const job = await response.json();
    status.textContent = `Job ${shortId(job.id)} queued with ${job.books.length} book(s).`;
    announce(`Job ${shortId(job.id)} queued.`);
    for (const book of readyBooks()) {
      book.node.remove();
      books.delete(book.key);
    }
    updateEmpty();
    knownJobs.set(job.id, { state: job.state, books: job.books.map((b) => b.state) });
    renderJobs(lastJobs.filter((j) => j.id !== job.id).concat([job]));
  } catch (err) {
    status.classList.add("error");
    status.textContent = `Not submitted: ${err.message}`;
  } finally {
    $("submit").removeAttribute("aria-busy");
  }
}

// ---------------------------------------------------------------- preview

let previewUrl = null;

async function playPreview() {
  const status = $("preview-status");
  const audio = $("preview-audio");
  const button = $("preview");
  const request = {};
  if ($("engine").value) request.engine = $("engine").value;
  if ($("voice").value) request.voice = $("voice").value;
  const book = readyBooks()[0];
  if (book) request.upload_id = book.upload.id;
  else request.text = "This is how the chosen voice reads your books.";
  status.classList.remove("error");
  status.textContent = "Synthesising the preview…";
  button.setAttribute("aria-busy", "true");
  try {
    const response = await api("api/preview", { method: "POST", json: request });
    const blob = await response.blob();
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(blob);
    audio.src = previewUrl;
    status.textContent = "Playing the preview.";
    try {
      await audio.play();
    } catch (err) {
      status.textContent = "Preview ready: press play on the player below.";
    }
  } catch (err) {
    status.classList.add("error");
    status.textContent = `No preview: ${err.message}`;
  } finally {
    button.removeAttribute("aria-busy");
  }
}

// ---------------------------------------------------------------- queue

const knownJobs = new Map(); // job id -> {state, books: [state...]} last seen
let lastJobs = [];
let firstSnapshot = true;
const jobNodes = new Map(); // job id -> li

function shortId(id) {
  return String(id).slice(0, 8);
}

function bookTitle(book) {
  return book.title || book.name || `book ${book.index + 1}`;
}

function progressLine(done, total, fromCache, eta) {
  const parts = [];
  if (total) {
    let chunks = `${done ?? 0} of ${total} chunks`;
    if (fromCache) chunks += ` (${fromCache} from the cache)`;
    parts.push(chunks);
  }
  const etaText = formatEta(eta);
  if (etaText) parts.push(etaText);
  return parts.join(", ");
}

function percent(done, total, fraction) {
  if (Number.isFinite(fraction)) return Math.floor(fraction * 100);
  return total ? Math.floor((100 * (done || 0)) / total) : 0;
}

/** Announce state changes (not every percent) against the last snapshot. */
function announceChanges(jobs) {
  for (const job of jobs) {
    const before = knownJobs.get(job.id);
    const name = `Job ${shortId(job.id)}`;
    if (!firstSnapshot && before && before.state !== job.state) {
      if (job.state === "running") announce(`${name} started.`);
      else if (job.state === "done") announce(`${name} done.`);
      else if (job.state === "failed") announce(`${name} finished with failures.`);
      else announce(`${name}: ${STATE_TEXT[job.state] || job.state}.`);
    }
    job.books.forEach((book, i) => {
      const was = before ? before.books[i] : undefined;
      if (firstSnapshot || was === book.state || !before) return;
      if (book.state === "done") announce(`${bookTitle(book)} done.`);
      else if (book.state === "failed") {
        announce(`${bookTitle(book)} failed: ${book.error || "no reason given"}`);
      } else if (book.state === "running") announce(`${bookTitle(book)} started.`);
    });
    knownJobs.set(job.id, { state: job.state, books: job.books.map((b) => b.state) });
  }
  firstSnapshot = false;
}

function renderJobs(jobs) {
  lastJobs = jobs;
  const list = $("jobs");
  const focused = document.activeElement;
  const focusKey = focused && focused.dataset ? focused.dataset.focusKey : null;
  const seen = new Set();
  jobs.forEach((job, position) => {
    seen.add(job.id);
    let node = jobNodes.get(job.id);
    if (!node) {
      node = el("li", { class: "job", "data-job": job.id });
      jobNodes.set(job.id, node);
    }
    // Redraw a job only when it (or its place among the queued jobs) changed.
    const queued = jobs.filter((j) => j.state === "queued");
    const drawn = JSON.stringify([job, queued.indexOf(job), queued.length]);
    if (node.dataset.drawn !== drawn) {
      fillJob(node, job, jobs);
      node.dataset.drawn = drawn;
    }
    if (list.children[position] !== node) list.insertBefore(node, list.children[position] || null);
  });
  for (const [id, node] of jobNodes) {
    if (!seen.has(id)) {
      node.remove();
      jobNodes.delete(id);
    }
  }
  $("queue-empty").hidden = jobs.length > 0;
  // Keep the keyboard where it was when the node it was on moved or was redrawn; when
  // that control went away (a job's state changed), go to the job's next control.
  if (focusKey && document.activeElement !== focused) {
    const again = list.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
    const job = list.querySelector(`li[data-job="${CSS.escape(focusKey.split(":")[0])}"]`);
    const fallback = job
      ? [...job.querySelectorAll(".actions button")].find((b) => !b.hidden)
      : null;
    if (again && !again.hidden) again.focus();
    else if (fallback) fallback.focus();
    else if (job) job.querySelector("h3").focus();
    else $("queue-heading").focus();
  }
}

/** A button whose accessible name is its visible text plus *context* (hidden). */
function button(text, context, attrs = {}) {
  return el("button", { type: "button", ...attrs }, text,
    context ? el("span", { class: "visually-hidden", text: ` ${context}` }) : null);
}

function jobButton(job, action, text, context, handler) {
  return button(text, context, {
    class: `action action-${action}`,
    "data-focus-key": `${job.id}:${action}`,
    onclick: handler,
  });
}

/** Fill a job's list item; its buttons keep their identity (focus) across updates. */
function fillJob(node, job, jobs) {
  const id = `job-${job.id}`;
  const name = `Job ${shortId(job.id)}`;
  const progress = job.progress || {};
  const pct = percent(progress.chunks_done, progress.chunks_total, progress.fraction);
  if (!node.firstChild) {
    // Fixed slots; the action buttons are made once so that focus stays on them.
    const article = el("article", { "aria-labelledby": `${id}-title` });
    const actions = el("div", { class: "actions", role: "group", "aria-label": `Actions on ${name}` });
    actions.append(
      jobButton(job, "up", "Move up", name, () => move(job.id, -1)),
      jobButton(job, "down", "Move down", name, () => move(job.id, 1)),
      jobButton(job, "cancel", "Cancel", name, () => jobAction(job.id, "cancel")),
      jobButton(job, "retry", "Retry failed books", `of ${name}`, () => jobAction(job.id, "retry")),
      jobButton(job, "delete", "Remove from the list", name, () => deleteJob(job.id)),
    );
    article.append(el("h3"), el("p"), el("div"), actions, el("ul"));
    node.append(article);
  }
  node.className = `job job-state-${job.state}`;
  const [oldHeader, oldMeta, oldBar, actions, oldBooks] = node.firstChild.children;
  const titles = job.books.map(bookTitle).join("; ");
  oldHeader.replaceWith(el("h3", { id: `${id}-title`, tabindex: -1 }, `${name}: ${titles} `,
    stateBadge(job.state)));
  const options = job.options || {};
  const position = Number.isInteger(job.position) ? `Position ${job.position} in the queue. ` : "";
  oldMeta.replaceWith(el("p", { class: "job-meta" },
    `Priority ${job.priority}. `,
    position,
    options.engine ? `Engine ${options.engine}` : "Default engine",
    options.voice ? `, voice ${options.voice}. ` : ". ",
    options.format ? `Format ${options.format}.` : ""));
  const fromCache = job.books.reduce((sum, b) => sum + (b.chunks_from_cache || 0), 0);
  const bar = el("div", { class: "progress" },
    el("label", { for: `${id}-progress`, text: `Progress of ${name}` }),
    el("progress", { id: `${id}-progress`, max: 100, value: pct, "data-percent": pct,
      text: `${pct} %` }),
    el("span", { class: "percent", text: `${pct} %` }),
    el("span", { class: "detail", text: ` ${progressLine(progress.chunks_done,
      progress.chunks_total, fromCache, job.state === "running" ? progress.eta_s : null)}` }));
  if (job.error) bar.append(el("p", { class: "error", text: `Error: ${job.error}` }));
  oldBar.replaceWith(bar);

  const queued = jobs.filter((j) => j.state === "queued");
  const rank = queued.findIndex((j) => j.id === job.id);
  const show = {
    up: rank >= 0,
    down: rank >= 0,
    cancel: ACTIVE.has(job.state),
    retry: job.state === "failed" || job.state === "cancelled",
    delete: FINAL.has(job.state),
  };
  // At either end of the queue the move buttons stay focusable, marked unavailable.
  const blocked = { up: rank === 0, down: rank === queued.length - 1 };
  for (const button of actions.children) {
    const action = button.dataset.focusKey.split(":").pop();
    button.hidden = !show[action];
    if (blocked[action]) button.setAttribute("aria-disabled", "true");
    else button.removeAttribute("aria-disabled");
  }

  const bookList = el("ul", { class: "job-books", "aria-label": `Books of ${name}` });
  for (const book of job.books) bookList.append(bookItem(job, book));
  oldBooks.replaceWith(bookList);
}

function bookItem(job, book) {
  const id = `job-${job.id}-book-${book.index}`;
  const title = bookTitle(book);
  const pct = percent(book.chunks_done, book.chunks_total, book.state === "done" ? 1 : null);
  const item = el("li", { class: `job-book book-state-${book.state}` });
  item.append(
    el("h4", { id: `${id}-title` }, `${title} `, stateBadge(book.state)),
    el("p", { class: "book-meta" },
      book.chapters ? `Chapters ${book.chapters}. ` : "All chapters. ",
      book.name && book.name !== title ? `File ${book.name}.` : ""),
    el("div", { class: "progress" },
      el("label", { for: `${id}-progress`, text: `Progress of ${title}` }),
      el("progress", { id: `${id}-progress`, max: 100, value: pct, "data-percent": pct,
        text: `${pct} %` }),
      el("span", { class: "percent", text: `${pct} %` }),
      el("span", { class: "detail", text: ` ${progressLine(book.chunks_done, book.chunks_total,
        book.chunks_from_cache, book.state === "running" ? book.eta_s : null)}` })),
  );
  if (book.error) item.append(el("p", { class: "error", text: `Error: ${book.error}` }));
  if (book.files && book.files.length) {
    const files = el("ul", { class: "files", "aria-label": `Files of ${title}` });
    for (const file of book.files) {
      const href = `api/jobs/${encodeURIComponent(job.id)}/books/${book.index}/files/` +
        encodeURIComponent(file.name);
      files.append(el("li", {},
        el("a", { href, download: file.name, "data-kind": file.kind,
          "data-focus-key": `${job.id}:${book.index}:${file.name}` },
          `${FILE_KIND[file.kind] || file.kind}: ${file.name}`),
        ` (${formatBytes(file.size)})`));
    }
    item.append(files);
  }
  return item;
}

async function move(jobId, direction) {
  const peers = lastJobs.filter((j) => j.state === "queued");
  const rank = peers.findIndex((j) => j.id === jobId);
  const other = rank < 0 ? null : peers[rank + direction];
  if (!other) {
    announce(`Job ${shortId(jobId)} is already ${direction < 0 ? "first" : "last"} in the queue.`);
    return;
  }
  // The queue runs by priority, then age: step just past the neighbour's priority.
  const priority = direction < 0 ? other.priority + 1 : other.priority - 1;
  try {
    await api(`api/jobs/${encodeURIComponent(jobId)}`, { method: "PATCH", json: { priority } });
    announce(`Job ${shortId(jobId)} moved ${direction < 0 ? "up" : "down"} (priority ${priority}).`);
  } catch (err) {
    announce(`Job ${shortId(jobId)} not moved: ${err.message}`);
  }
}

async function jobAction(jobId, action) {
  try {
    await api(`api/jobs/${encodeURIComponent(jobId)}/${action}`, { method: "POST" });
    announce(action === "cancel" ? `Cancelling job ${shortId(jobId)}.` :
      `Job ${shortId(jobId)} queued again.`);
  } catch (err) {
    announce(`Job ${shortId(jobId)}: ${action} refused: ${err.message}`);
  }
}

async function deleteJob(jobId) {
  try {
    await api(`api/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
    announce(`Job ${shortId(jobId)} removed from the list.`);
    $("queue-heading").focus();
  } catch (err) {
    announce(`Job ${shortId(jobId)} not removed: ${err.message}`);
  }
}

// ---------------------------------------------------------------- live events

function connectEvents() {
  const source = new EventSource("api/events");
  const state = $("connection-state");
  source.addEventListener("open", () => {
    state.textContent = "connected.";
    loadCluster();
  });
  source.addEventListener("jobs", (event) => {
    let jobs;
    try {
      jobs = JSON.parse(event.data).jobs || [];
    } catch (_) {
      return;
    }
    announceChanges(jobs);
    renderJobs(jobs);
  });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself; say so rather than show stale progress silently.
    state.textContent = source.readyState === EventSource.CLOSED
      ? "disconnected: reload the page."
      : "connection lost, reconnecting…";
  });
}

// ---------------------------------------------------------------- start

function setupDropzone() {
  const zone = $("dropzone");
  const input = $("files");
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "dragend"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer && event.dataTransfer.files.length) {
      addFiles([...event.dataTransfer.files]);
    }
  });
}

function start() {
  setupDropzone();
  $("engine").addEventListener("change", showVoices);
  $("preview").addEventListener("click", playPreview);
  $("job-form").addEventListener("submit", submitJob);
  updateEmpty();
  loadEngines();
  loadCluster();
  connectEvents();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
