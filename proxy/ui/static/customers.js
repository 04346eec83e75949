/* Customers tab: list with spend, tier and status; create, assign tier, block/unblock. */
"use strict";

(() => {
  const table = document.getElementById("customers");
  const dialog = document.getElementById("customer-dialog");
  const form = document.getElementById("customer-form");
  const tierSelect = form.elements.namedItem("budget_id");
  const defaultTier = document.body.dataset.defaultBudgetId || "";
  const noTierLabel = defaultTier ? `— default (${defaultTier}) —` : "— none —";
  let tiers = [];

  function tierOptions(select, current) {
    const options = [UI.el("option", { value: "", textContent: noTierLabel })];
    for (const tier of tiers) {
      const limit = UI.money(tier.max_budget, "unlimited");
      options.push(UI.el("option", { value: tier.budget_id, textContent: `${tier.budget_id} (${limit})` }));
    }
    select.replaceChildren(...options);
    select.value = current || "";
  }

  function tierCell(customer) {
    const budget = customer.litellm_budget_table;
    if (budget && UI.isOwnBudget(budget.budget_id)) {
      return UI.el("td", {}, `own budget (${UI.money(budget.max_budget, "unlimited")})`);
    }
    const select = UI.el("select", {
      "aria-label": `Budget tier of ${customer.user_id}`,
      onchange: () => assignTier(customer, select.value),
    });
    tierOptions(select, budget ? budget.budget_id : "");
    return UI.el("td", {}, select);
  }

  function spendText(customer) {
    const budget = customer.litellm_budget_table;
    const spend = UI.money(customer.spend);
    return budget && budget.max_budget !== null ? `${spend} of ${UI.money(budget.max_budget)}` : spend;
  }

  function row(customer) {
    const blocked = customer.blocked;
    return UI.el("tr", { dataset: { customerId: customer.user_id } }, [
      UI.el("td", { className: "mono" }, customer.user_id),
      UI.el("td", {}, customer.alias || ""),
      UI.el("td", { className: "num spend" }, spendText(customer)),
      tierCell(customer),
      UI.el("td", {}, UI.el("span", { className: blocked ? "badge blocked" : "badge" }, blocked ? "Blocked" : "Active")),
      UI.el("td", { className: "row-actions" }, [
        UI.el("button", {
          type: "button",
          className: blocked ? "small" : "small danger",
          textContent: blocked ? "Unblock" : "Block",
          onclick: () => setBlocked(customer, !blocked),
        }),
      ]),
    ]);
  }

  // One page at a time from the server, searched and sorted there (100,000 customers
  // load as fast as 100).
  const list = UI.listing({
    table,
    search: document.getElementById("customer-search"),
    pager: document.querySelector(".pager"),
    noun: "customers",
    render: row,
    fetchPage: async (state) => {
      const [budgets, answer] = await Promise.all([
        UI.api("GET", "/budget/list"),
        UI.exchange("GET", `/customer/list?${UI.listQuery(state)}`),
      ]);
      tiers = budgets.filter((b) => !UI.isOwnBudget(b.budget_id));
      return { rows: answer.data, total: Number(answer.headers.get("x-total-count")) };
    },
  });
  const load = list.load;

  async function change(path, body, done) {
    try {
      await UI.api("POST", path, body);
      UI.notice(done);
    } catch (err) {
      UI.notice(err.message, "error");
    }
    await load();
  }

  function assignTier(customer, budgetId) {
    const done = budgetId
      ? `${customer.user_id} is now on ${budgetId}.`
      : `${customer.user_id} has no budget tier now.`;
    return change("/customer/update", { user_id: customer.user_id, budget_id: budgetId || null }, done);
  }

  function setBlocked(customer, blocked) {
    const path = blocked ? "/customer/block" : "/customer/unblock";
    const done = `${customer.user_id} ${blocked ? "blocked" : "unblocked"}.`;
    return change(path, { user_ids: [customer.user_id] }, done);
  }

  async function create(event) {
    event.preventDefault();
    const created = await UI.submit(form, "/customer/new", UI.formValues(form));
    if (!created) return;
    dialog.close();
    UI.notice(`Customer ${created.user_id} created.`);
    await load();
  }

  document.getElementById("create-customer").addEventListener("click", () => {
    UI.openDialog(dialog, form);
    tierOptions(tierSelect, "");
    form.elements.namedItem("user_id").focus();
  });
  form.addEventListener("submit", create);
  load();
})();
