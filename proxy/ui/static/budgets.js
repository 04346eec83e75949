/* Budgets tab: list, "+ Create Budget", edit and delete, all through /budget/*.
 * Customers' own budget rows are not tiers: they are shown on the Customers tab. */
"use strict";

(() => {
  const table = document.getElementById("budgets");
  const dialog = document.getElementById("budget-dialog");
  const form = document.getElementById("budget-form");
  const title = document.getElementById("budget-dialog-title");
  const idInput = form.elements.namedItem("budget_id");
  let editing = null;

  function actions(budget) {
    return UI.el("td", { className: "row-actions" }, [
      UI.el("button", { type: "button", className: "small", textContent: "Edit", onclick: () => openForm(budget) }),
      UI.el("button", { type: "button", className: "small danger", textContent: "Delete", onclick: () => remove(budget) }),
    ]);
  }

  function row(budget) {
    return UI.el("tr", { dataset: { budgetId: budget.budget_id } }, [
      UI.el("td", { className: "mono" }, budget.budget_id),
      UI.el("td", { className: "num" }, UI.money(budget.max_budget, "unlimited")),
      UI.el("td", { className: "num" }, UI.count(budget.rpm_limit)),
      UI.el("td", { className: "num" }, UI.count(budget.tpm_limit)),
      UI.el("td", {}, budget.budget_duration || "never"),
      actions(budget),
    ]);
  }

  async function load() {
    try {
      const budgets = (await UI.api("GET", "/budget/list")).filter((b) => !UI.isOwnBudget(b.budget_id));
      UI.fillTable(table, budgets.map(row));
    } catch (err) {
      UI.notice(`Could not load budgets: ${err.message}`, "error");
    }
  }

  function openForm(budget) {
    editing = budget || null;
    UI.openDialog(dialog, form);
    title.textContent = editing ? `Edit budget ${editing.budget_id}` : "Create Budget";
    idInput.readOnly = Boolean(editing);
    if (editing) UI.fillForm(form, editing);
    (editing ? form.elements.namedItem("max_budget") : idInput).focus();
  }

  async function save(event) {
    event.preventDefault();
    const body = UI.formValues(form, { clearEmpty: Boolean(editing) });
    if (editing) body.budget_id = editing.budget_id;
    const saved = await UI.submit(form, editing ? "/budget/update" : "/budget/new", body);
    if (!saved) return;
    dialog.close();
    UI.notice(`Budget ${saved.budget_id} ${editing ? "updated" : "created"}.`);
    await load();
  }

  async function remove(budget) {
    if (!window.confirm(`Delete budget ${budget.budget_id}?`)) return;
    try {
      await UI.api("POST", "/budget/delete", { id: budget.budget_id });
      UI.notice(`Budget ${budget.budget_id} deleted.`);
    } catch (err) {
      UI.notice(`Budget ${budget.budget_id} was not deleted: ${err.message}`, "error");
    }
    await load();
  }

  document.getElementById("create-budget").addEventListener("click", () => openForm(null));
  form.addEventListener("submit", save);
  load();
})();
