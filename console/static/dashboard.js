// Live page: polls live.json and updates the cards in place (no reload), so keyboard focus stays put.
// Screen readers hear only #live-summary (aria-live), which changes when a state or a count does.
// A card's secure-pause button posts its form here (so focus stays put too); without script it posts as a form.
"use strict";

(function () {
  const root = document.getElementById("live");
  if (!root) return;
  const list = document.getElementById("conferences");
  const template = document.getElementById("card-template");

  function fill(card, conf) {
    card.dataset.room = conf.room;
    card.dataset.state = conf.state;
    for (const field of card.querySelectorAll("[data-field]")) field.textContent = conf[field.dataset.field];
    const people = card.querySelector(".people");
    people.replaceChildren(...conf.participants.map(function (person) {
      const item = document.createElement("li");
      const number = document.createElement("span");
      const joined = document.createElement("span");
      number.className = "number";
      number.textContent = person.number;
      joined.className = "muted";
      joined.textContent = person.joined;
      item.append(number, " ");
      for (const [flag, words] of [["host", "host"], ["hold", "on hold"]]) {
        if (!person[flag]) continue;
        const tag = document.createElement("span");
        tag.className = "tag";
        tag.dataset.tag = flag;
        tag.textContent = words;
        item.append(tag, " ");
      }
      item.append(joined);
      return item;
    }));
    card.querySelector(".rule").hidden = !conf.own_rule;  // the page states the default rule once
    card.dataset.secure = String(conf.secure);
    card.querySelector(".secure-words").hidden = !conf.secure;
    const form = card.querySelector("form.secure");
    form.setAttribute("action", conf.secure_url);
    form.querySelector("label").hidden = conf.secure;  // a reason is for a pause
    const link = card.querySelector("[data-link]");
    link.hidden = !conf.url;
    if (conf.url) link.setAttribute("href", conf.url);
  }

  function render(data) {
    const cards = new Map([...list.children].map((card) => [card.dataset.room, card]));
    for (const conf of data.conferences) {
      let card = cards.get(conf.room);
      cards.delete(conf.room);
      if (!card) {
        card = template.content.firstElementChild.cloneNode(true);
        list.append(card);  // new conferences are the newest: appending keeps the others (and focus) in place
      }
      fill(card, conf);
    }
    for (const gone of cards.values()) gone.remove();
    document.getElementById("no-conferences").hidden = data.conferences.length > 0;
    const summary = document.getElementById("live-summary");
    if (summary.textContent !== data.summary) summary.textContent = data.summary;
    document.getElementById("live-updated").textContent = data.updated;
  }

  async function refresh() {
    const problem = document.getElementById("live-problem");
    try {
      const response = await fetch(root.dataset.source, {headers: {Accept: "application/json"}, cache: "no-store"});
      if (response.status === 401) {
        window.location.assign(root.dataset.login);  // the session expired or the token changed
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      problem.hidden = true;
    } catch (error) {
      problem.hidden = false;
    }
  }

  async function poll() {
    await refresh();
    window.setTimeout(poll, Number(root.dataset.intervalMs));
  }

  async function secure(event) {
    const form = event.target.closest("form.secure");
    if (!form) return;
    event.preventDefault();
    if (form.dataset.busy) return;  // one post at a time; not `disabled`, which would take the focus away
    form.dataset.busy = "true";
    const said = form.querySelector("[role=alert]");
    try {
      const response = await fetch(form.action, {method: "POST", body: new FormData(form),
                                                  headers: {Accept: "application/json"}, cache: "no-store"});
      if (response.status === 401) {
        window.location.assign(root.dataset.login);
        return;
      }
      const answer = await response.json();
      said.textContent = response.ok ? "" : answer.error;
      said.hidden = response.ok;
      if (response.ok) form.querySelector("[name=reason]").value = "";
    } catch (error) {
      said.textContent = "Cannot reach Quorum: nothing changed. Try again.";
      said.hidden = false;
    } finally {
      delete form.dataset.busy;
    }
    await refresh();  // the card shows the new state now, not at the next poll
  }

  list.addEventListener("submit", secure);

  window.setTimeout(poll, Number(root.dataset.intervalMs));
})();
