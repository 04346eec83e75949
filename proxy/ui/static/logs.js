/* Logs tab: spend-log rows newest first, filtered and paged on the server
 * (/spend/logs); "Export CSV" downloads every filtered row (/spend/logs/csv). */
"use strict";

(() => {
  const PAGE_SIZE = 50;
  const table = document.getElementById("logs");
  const filters = document.getElementById("log-filters");
  const pager = document.querySelector(".pager");
  let page = 1;
  let latest = 0; // only the answer to the latest request is shown
  let order = "desc"; // newest first; the Time header turns it around
  const timeHead = document.getElementById("time-head");
  const timeSort = document.getElementById("time-sort");

  function query(extra = {}) {
    const params = new URLSearchParams({ ...UI.formValues(filters), order, ...extra });
    return params.toString();
  }

  function seconds(row) {
    const ms = Date.parse(row.endTime) - Date.parse(row.startTime);
    return Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : "—";
  }

  function row(log) {
    return UI.el("tr", { dataset: { requestId: log.request_id } }, [
      UI.el("td", { className: "nowrap", title: log.request_id }, log.startTime.slice(0, 19).replace("T", " ")),
      UI.el("td", {}, UI.el("span", { className: log.status === "success" ? "badge" : "badge blocked" }, log.status)),
      UI.el("td", {}, log.model_group),
      UI.el("td", { className: "mono", title: log.api_key || "" }, log.api_key ? `${log.api_key.slice(0, 8)}…` : ""),
      UI.el("td", { className: "mono" }, log.user || ""),
      UI.el("td", { className: "mono" }, log.team_id || ""),
      UI.el("td", { className: "mono" }, log.end_user || ""),
      UI.el("td", { className: "num" }, `${UI.count(log.prompt_tokens)} / ${UI.count(log.completion_tokens)}`),
      UI.el("td", { className: "num" }, UI.money(log.spend)),
      UI.el("td", { className: "num" }, seconds(log)),
    ]);
  }

  async function load() {
    const mine = ++latest;
    UI.clearErrors(filters);
    let rows;
    let hasNext;
    try {
      const response = await fetch(`/spend/logs?${query({ page, page_size: PAGE_SIZE })}`, {
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRF-Token": UI.csrfToken },
      });
      const data = await response.json();
      if (!response.ok) throw new UI.ApiError(data.error || {}, response.status);
      rows = data;
      hasNext = response.headers.has("Link");
    } catch (err) {
      if (mine === latest) UI.showError(filters, err);
      return;
    }
    if (mine !== latest) return;
    UI.fillTable(table, rows.map(row));
    pager.hidden = page === 1 && !hasNext;
    pager.querySelector(".pager-status").textContent = `Page ${page}`;
    pager.querySelector('[data-page="prev"]').disabled = page <= 1;
    pager.querySelector('[data-page="next"]').disabled = !hasNext;
  }

  /* The CSV comes from the server in one streamed answer; the browser saves it. */
  async function exportCsv() {
    const response = await fetch(`/spend/logs/csv?${query()}`, {
      credentials: "same-origin",
      headers: { "X-CSRF-Token": UI.csrfToken },
    });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      UI.showError(filters, new UI.ApiError(data.error || {}, response.status));
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = UI.el("a", { href: url, download: "spend-logs.csv" });
    document.body.append(link);
    link.click();
    link.remove();
    URL.revokeObjectURL(url);
    UI.notice("CSV of the filtered calls downloaded.");
  }

  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    page = 1;
    load();
  });
  filters.addEventListener("reset", () => {
    setTimeout(() => {
      page = 1;
      load();
    });
  });
  pager.addEventListener("click", (event) => {
    const direction = event.target.dataset && event.target.dataset.page;
    if (!direction) return;
    page += direction === "next" ? 1 : -1;
    load();
  });
  timeSort.addEventListener("click", () => {
    order = order === "desc" ? "asc" : "desc";
    timeSort.dataset.dir = order;
    timeHead.setAttribute("aria-sort", order === "desc" ? "descending" : "ascending");
    page = 1;
    load();
  });
  document.getElementById("export-csv").addEventListener("click", exportCsv);
  load();
})();
