/* Shared helpers of the admin UI pages: call the admin API, read forms, show errors.
 *
 * Every change goes through the admin API, so the UI shows the API's own
 * OpenAI-shaped errors: next to the field named by error.param when the form
 * has it, above the form's buttons otherwise. The session cookie only counts
 * together with the X-CSRF-Token header, read from the page's meta tag.
 */
"use strict";

const UI = (() => {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = csrfMeta ? csrfMeta.content : "";
  const ownBudgetPrefix = document.body.dataset.ownBudgetPrefix || "";

  class ApiError extends Error {
    constructor(error, status) {
      super(error.message || `HTTP ${status}`);
      this.param = error.param && error.param !== "None" ? error.param : null;
      this.status = status;
    }
  }

  async function api(method, path, body) {
    return (await exchange(method, path, body)).data;
  }

  /* The answer's JSON and headers (a list's total comes in x-total-count). */
  async function exchange(method, path, body) {
    const init = {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": csrfToken },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError({ message: `Comptroller is not reachable (${err.message}).` }, 0);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (response.status === 401) {
      // The session expired or the master key changed: log in again.
      window.location.assign(`/ui/login?next=${encodeURIComponent(window.location.pathname)}`);
    }
    if (!response.ok) {
      throw new ApiError((data && data.error) || {}, response.status);
    }
    return { data, headers: response.headers };
  }

  /* Build a DOM element; text is always set as text, never parsed as HTML. */
  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name in node) node[name] = value;
      else node.setAttribute(name, value);
    }
    for (const child of [].concat(children)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function convert(raw, kind) {
    if (kind === "int") {
      // Anything that is not a whole number goes as typed, so the API names the field.
      const n = Number(raw);
      return /^-?\d+$/.test(raw) && Number.isSafeInteger(n) ? n : raw;
    }
    if (kind === "list") return raw.split(",").map((s) => s.trim()).filter(Boolean);
    if (kind === "json") {
      try {
        return JSON.parse(raw);
      } catch (err) {
        return raw;
      }
    }
    // Money stays text: the API takes "4.5" and explains anything else.
    return raw;
  }

  /* The form's fields as a JSON body. Empty fields are left out, or sent as
   * null when `clearEmpty` (an edit: emptying a limit removes it). */
  function formValues(form, { clearEmpty = false } = {}) {
    const body = {};
    for (const input of form.querySelectorAll("input[name], select[name], textarea[name]")) {
      if (input.disabled || input.type === "hidden") continue;
      const raw = input.value.trim();
      if (raw === "") {
        if (clearEmpty) body[input.name] = null;
        continue;
      }
      body[input.name] = convert(raw, input.dataset.kind);
    }
    return body;
  }

  function fillForm(form, values) {
    for (const input of form.querySelectorAll("input[name], select[name], textarea[name]")) {
      const value = values[input.name];
      if (value === null || value === undefined) input.value = "";
      else if (input.dataset.kind === "json") input.value = Object.keys(value).length ? JSON.stringify(value) : "";
      else input.value = Array.isArray(value) ? value.join(", ") : String(value);
    }
  }

  function clearErrors(form) {
    for (const slot of form.querySelectorAll(".field-error, .form-error")) {
      slot.textContent = "";
      slot.hidden = true;
    }
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  }

  function showError(form, err) {
    const slot = err.param && form.querySelector(`[data-error-for="${CSS.escape(err.param)}"]`);
    if (slot) {
      slot.textContent = err.message;
      slot.hidden = false;
      const input = form.elements.namedItem(err.param);
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.focus();
      }
      return;
    }
    const general = form.querySelector(".form-error");
    general.textContent = err.message;
    general.hidden = false;
  }

  /* Send a form's body to the API; on an error show it in the form and return null. */
  async function submit(form, path, body, method = "POST") {
    clearErrors(form);
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    try {
      return await api(method, path, body);
    } catch (err) {
      showError(form, err);
      return null;
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  /* A success notice goes away by itself after a while; an error stays until the
   * next action. Either is cleared when a new action starts (clearNotice). */
  const NOTICE_SECONDS = 8;
  let noticeTimer = null;

  function clearNotice() {
    clearTimeout(noticeTimer);
    const box = document.getElementById("notice");
    if (box) box.hidden = true;
  }

  function notice(message, kind = "ok") {
    clearTimeout(noticeTimer);
    const box = document.getElementById("notice");
    box.textContent = message;
    box.className = kind === "error" ? "notice error" : "notice";
    box.setAttribute("role", kind === "error" ? "alert" : "status");
    box.hidden = false;
    if (kind !== "error") noticeTimer = setTimeout(clearNotice, NOTICE_SECONDS * 1000);
  }

  function openDialog(dialog, form) {
    clearNotice();
    form.reset();
    clearErrors(form);
    dialog.showModal();
  }

  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }

  /* US dollars with thousands separators and about ten significant digits, so
   * that 4.555 and 1e-7 show as they are stored, and float noise does not. */
  function money(value, none = "—") {
    if (value === null || value === undefined) return none;
    const magnitude = value === 0 ? 0 : Math.floor(Math.log10(Math.abs(value)));
    const digits = Math.min(20, Math.max(2, 10 - magnitude));
    const text = Math.abs(value).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits });
    return `${value < 0 ? "-" : ""}$${text}`;
  }

  function count(value, none = "—") {
    return value === null || value === undefined ? none : value.toLocaleString("en-US");
  }

  function day(iso, none = "never") {
    return iso ? iso.slice(0, 10) : none;
  }

  /* "9 rpm / 20,000 tpm / 2 parallel" as one line each, or a dash. */
  function limits(row) {
    const parts = [];
    if (row.rpm_limit !== null && row.rpm_limit !== undefined) parts.push(`${count(row.rpm_limit)} rpm`);
    if (row.tpm_limit !== null && row.tpm_limit !== undefined) parts.push(`${count(row.tpm_limit)} tpm`);
    if (row.max_parallel_requests !== null && row.max_parallel_requests !== undefined) {
      parts.push(`${count(row.max_parallel_requests)} parallel`);
    }
    const cell = el("td", { className: "limits" });
    cell.append(...(parts.length ? parts.map((part) => el("span", { className: "limit" }, part)) : ["—"]));
    return cell;
  }

  /* "$1.20 of $10.00", or the spend alone without a budget. */
  function spendOf(spend, maxBudget) {
    return maxBudget === null || maxBudget === undefined ? money(spend) : `${money(spend)} of ${money(maxBudget)}`;
  }

  function badge(blocked) {
    return el("span", { className: blocked ? "badge blocked" : "badge" }, blocked ? "Blocked" : "Active");
  }

  function button(label, onclick, danger = false) {
    return el("button", { type: "button", className: danger ? "small danger" : "small", textContent: label, onclick });
  }

  /* Server-side paging, search and sort of one table. Header cells with a
   * data-sort column become sort buttons (aria-sort tells which is active);
   * typing in `search` filters after a short pause; `fetchPage(state)` answers
   * {rows, total} for state {page, pageSize, search, sort, order}. Only the
   * answer to the latest request is shown. */
  function listing({ table, search, pager, pageSize = 50, fetchPage, render, noun, onError }) {
    const state = { page: 1, pageSize, search: "", sort: null, order: "asc" };
    const headers = [...table.tHead.querySelectorAll("th[data-sort]")];
    let latest = 0;
    let typing = null;

    function showSort() {
      for (const th of headers) {
        const active = th.dataset.sort === state.sort;
        th.setAttribute("aria-sort", active ? (state.order === "asc" ? "ascending" : "descending") : "none");
        th.querySelector("button").dataset.dir = active ? state.order : "";
      }
    }

    for (const th of headers) {
      const label = th.textContent.trim();
      th.replaceChildren(
        el("button", {
          type: "button",
          className: "sort",
          textContent: label,
          onclick: () => {
            const again = state.sort === th.dataset.sort;
            state.order = again && state.order === "asc" ? "desc" : again ? "asc" : th.dataset.first || "asc";
            state.sort = th.dataset.sort;
            state.page = 1;
            load();
          },
        }),
      );
    }

    async function load() {
      const mine = ++latest;
      let answer;
      try {
        answer = await fetchPage(state);
      } catch (err) {
        if (mine === latest) (onError || ((e) => notice(`Could not load ${noun}: ${e.message}`, "error")))(err);
        return;
      }
      if (mine !== latest) return;
      const pages = Math.max(1, Math.ceil(answer.total / state.pageSize));
      if (answer.rows.length === 0 && state.page > 1) {
        state.page = pages;
        return load();
      }
      fillTable(table, answer.rows.map(render));
      showSort();
      pager.hidden = pages <= 1;
      pager.querySelector(".pager-status").textContent = `Page ${count(state.page)} of ${count(pages)} (${count(answer.total)} ${noun})`;
      pager.querySelector('[data-page="prev"]').disabled = state.page <= 1;
      pager.querySelector('[data-page="next"]').disabled = state.page >= pages;
    }

    if (search) {
      search.addEventListener("input", () => {
        clearTimeout(typing);
        typing = setTimeout(() => {
          state.search = search.value.trim();
          state.page = 1;
          load();
        }, 250);
      });
    }
    pager.addEventListener("click", (event) => {
      const direction = event.target.dataset && event.target.dataset.page;
      if (!direction) return;
      state.page += direction === "next" ? 1 : -1;
      load();
    });
    return { load, state };
  }

  /* The query string of a listing's state, for the admin API's list routes. */
  function listQuery(state, sizeName = "page_size", extra = {}) {
    const params = new URLSearchParams({ page: state.page, [sizeName]: state.pageSize, ...extra });
    if (state.search) params.set("search", state.search);
    if (state.sort) {
      params.set("sort", state.sort);
      params.set("order", state.order);
    }
    return params.toString();
  }

  /* A customer's own budget row (made by /customer/new with budget values), not a shared tier. */
  function isOwnBudget(budgetId) {
    return Boolean(ownBudgetPrefix) && String(budgetId).startsWith(ownBudgetPrefix);
  }

  /* Show a table's rows, or its "empty" note when there are none. */
  function fillTable(table, rows) {
    table.tBodies[0].replaceChildren(...rows);
    const empty = table.nextElementSibling;
    if (empty && empty.classList.contains("empty")) empty.hidden = rows.length > 0;
  }

  return {
    csrfToken, api, exchange, ApiError, listing, listQuery, el, formValues, fillForm, clearErrors, showError, submit, notice, openDialog,
    money, count, day, fillTable, isOwnBudget, limits, spendOf, badge, button,
  };
})();
