/* Users tab: internal users with spend against their budget; create (the first key is
 * shown once), edit budgets and limits, and each user's keys with their spend. */
"use strict";

(() => {
  const table = document.getElementById("users");
  const dialog = document.getElementById("user-dialog");
  const form = document.getElementById("user-form");
  const title = document.getElementById("user-dialog-title");
  const idInput = form.elements.namedItem("user_id");
  const newKey = document.getElementById("new-key");
  const newKeyValue = document.getElementById("new-key-value");
  const pager = document.querySelector(".pager");
  let editing = null;

  function row(user) {
    const tr = UI.el("tr", { dataset: { userId: user.user_id } }, [
      UI.el("td", {}, [
        UI.el("div", { className: "mono" }, user.user_id),
        user.user_email ? UI.el("div", { className: "muted" }, user.user_email) : null,
      ]),
      UI.el("td", { className: "mono" }, user.team_id || ""),
      UI.el("td", { className: "num spend" }, UI.spendOf(user.spend, user.max_budget)),
      UI.limits(user),
      UI.el("td", {}, user.budget_duration || "never"),
      UI.el("td", {}, UI.badge(user.blocked)),
      UI.el("td", { className: "row-actions" }, [
        UI.button("Keys", () => toggleKeys(tr, user)),
        UI.button("Edit", () => openForm(user)),
        UI.button(user.blocked ? "Unblock" : "Block", () => setBlocked(user, !user.blocked), !user.blocked),
        UI.button("Delete", () => remove(user), true),
      ]),
    ]);
    return tr;
  }

  /* The user's keys under its row: alias, key, spend and budget of each. */
  async function toggleKeys(tr, user) {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("details")) {
      next.remove();
      return;
    }
    let info;
    try {
      info = await UI.api("GET", `/user/info?user_id=${encodeURIComponent(user.user_id)}`);
    } catch (err) {
      UI.notice(`Could not load the keys of ${user.user_id}: ${err.message}`, "error");
      return;
    }
    const items = info.keys.map((key) =>
      UI.el("li", {}, [
        UI.el("span", { className: "mono" }, key.key_name),
        ` ${key.key_alias || ""} — ${UI.spendOf(key.spend, key.max_budget)}${key.blocked ? " (blocked)" : ""}`,
      ]),
    );
    const body = items.length ? UI.el("ul", { className: "key-list" }, items) : UI.el("p", { className: "muted" }, "No keys.");
    const cell = UI.el("td", { colSpan: 7 }, [UI.el("strong", {}, `Keys of ${user.user_id}`), body]);
    tr.after(UI.el("tr", { className: "details", "aria-label": `Keys of ${user.user_id}` }, cell));
  }

  const list = UI.listing({
    table,
    search: document.getElementById("user-search"),
    pager,
    noun: "users",
    render: row,
    fetchPage: async (state) => {
      const answer = await UI.api("GET", `/user/list?${UI.listQuery(state)}`);
      return { rows: answer.users, total: answer.total };
    },
  });
  const load = list.load;

  async function setBlocked(user, blocked) {
    try {
      await UI.api("POST", "/user/update", { user_id: user.user_id, blocked });
      UI.notice(blocked ? `User ${user.user_id} blocked: calls with its keys are refused.` : `User ${user.user_id} unblocked.`);
    } catch (err) {
      UI.notice(`Could not change user ${user.user_id}: ${err.message}`, "error");
    }
    await load();
  }

  async function remove(user) {
    if (!window.confirm(`Delete user ${user.user_id} and all of its keys?`)) return;
    try {
      const answer = await UI.api("POST", "/user/delete", { user_ids: [user.user_id] });
      UI.notice(`User ${user.user_id} deleted with ${answer.deleted_keys.length} key(s).`);
    } catch (err) {
      UI.notice(`User ${user.user_id} was not deleted: ${err.message}`, "error");
    }
    await load();
  }

  function openForm(user) {
    editing = user || null;
    newKey.hidden = true;
    newKeyValue.value = "";
    UI.openDialog(dialog, form);
    title.textContent = editing ? `Edit user ${editing.user_id}` : "Create User";
    idInput.readOnly = Boolean(editing);
    if (editing) UI.fillForm(form, editing);
    (editing ? form.elements.namedItem("user_email") : idInput).focus();
  }

  async function save(event) {
    event.preventDefault();
    const body = UI.formValues(form, { clearEmpty: Boolean(editing) });
    if (editing) body.user_id = editing.user_id;
    const saved = await UI.submit(form, editing ? "/user/update" : "/user/new", body);
    if (!saved) return;
    dialog.close();
    if (!editing) {
      newKeyValue.value = saved.key;
      newKey.hidden = false;
      newKeyValue.select();
    }
    UI.notice(`User ${saved.user_id} ${editing ? "saved" : "created"}.`);
    await load();
  }

  document.getElementById("dismiss-key").addEventListener("click", () => {
    newKeyValue.value = "";
    newKey.hidden = true;
  });
  document.getElementById("create-user").addEventListener("click", () => openForm(null));
  form.addEventListener("submit", save);
  load();
})();
