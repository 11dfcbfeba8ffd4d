// Live page: polls live.json and updates the cards in place (no reload), so keyboard focus stays put.
// Screen readers hear only #live-summary (aria-live), which changes when a state or a count does.
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

  async function poll() {
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
    window.setTimeout(poll, Number(root.dataset.intervalMs));
  }

  window.setTimeout(poll, Number(root.dataset.intervalMs));
})();
