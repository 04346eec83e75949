/* Keys tab: list by alias and user, create (the plain key is shown once), delete. */
"use strict";

(() => {
  const PAGE_SIZE = 50;
  const table = document.getElementById("keys");
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const newKey = document.getElementById("new-key");
  const newKeyValue = document.getElementById("new-key-value");
  const pager = document.querySelector(".pager");
  let page = 1;

  function row(key) {
    return UI.el("tr", { dataset: { token: key.token } }, [
      UI.el("td", {}, key.key_alias || UI.el("span", { className: "muted" }, "(no alias)")),
      UI.el("td", { className: "mono" }, key.key_name),
      UI.el("td", { className: "mono" }, key.user_id || ""),
      UI.el("td", { className: "num" }, UI.money(key.spend)),
      UI.el("td", { className: "num" }, UI.money(key.max_budget, "unlimited")),
      UI.el("td", {}, UI.day(key.expires)),
      UI.el("td", { className: "row-actions" }, [
        UI.el("button", { type: "button", className: "small danger", textContent: "Delete", onclick: () => remove(key) }),
      ]),
    ]);
  }

  async function load() {
    try {
      const answer = await UI.api("GET", `/key/list?return_full_object=true&page=${page}&size=${PAGE_SIZE}`);
      if (answer.keys.length === 0 && page > 1) {
        page -= 1;
        return load();
      }
      UI.fillTable(table, answer.keys.map(row));
      pager.hidden = answer.total_pages <= 1;
      pager.querySelector(".pager-status").textContent = `Page ${answer.current_page} of ${answer.total_pages} (${answer.total_count} keys)`;
      pager.querySelector('[data-page="prev"]').disabled = page <= 1;
      pager.querySelector('[data-page="next"]').disabled = page >= answer.total_pages;
    } catch (err) {
      UI.notice(`Could not load keys: ${err.message}`, "error");
    }
  }

  async function create(event) {
    event.preventDefault();
    const created = await UI.submit(form, "/key/generate", UI.formValues(form));
    if (!created) return;
    dialog.close();
    // The only time the secret exists outside the client: the API stores its hash.
    newKeyValue.value = created.key;
    newKey.hidden = false;
    newKeyValue.select();
    UI.notice(`Key ${created.key_name} created.`);
    await load();
  }

  async function remove(key) {
    const name = key.key_alias ? `${key.key_alias} (${key.key_name})` : key.key_name;
    if (!window.confirm(`Delete key ${name}? Calls with it will be refused.`)) return;
    try {
      await UI.api("POST", "/key/delete", { keys: [key.token] });
      UI.notice(`Key ${name} deleted.`);
    } catch (err) {
      UI.notice(`Key ${name} was not deleted: ${err.message}`, "error");
    }
    await load();
  }

  function forgetNewKey() {
    newKeyValue.value = "";
    newKey.hidden = true;
  }

  document.getElementById("copy-key").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(newKeyValue.value);
      UI.notice("Key copied to the clipboard.");
    } catch (err) {
      newKeyValue.select();
      UI.notice("Copy it with Ctrl+C: the browser did not allow clipboard access.", "error");
    }
  });
  document.getElementById("dismiss-key").addEventListener("click", forgetNewKey);
  document.getElementById("create-key").addEventListener("click", () => {
    forgetNewKey();
    UI.openDialog(dialog, form);
    form.elements.namedItem("key_alias").focus();
  });
  pager.addEventListener("click", (event) => {
    const direction = event.target.dataset && event.target.dataset.page;
    if (!direction) return;
    page += direction === "next" ? 1 : -1;
    load();
  });
  form.addEventListener("submit", create);
  load();
})();
