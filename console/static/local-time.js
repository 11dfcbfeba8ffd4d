// Shows the operator's local time beside each UTC time marked <time datetime=... data-local>, unless it is UTC.
"use strict";

(function () {
  for (const stamp of document.querySelectorAll("time[data-local][datetime]")) {
    const at = new Date(stamp.getAttribute("datetime"));
    if (Number.isNaN(at.getTime()) || at.getTimezoneOffset() === 0) continue;
    const local = document.createElement("span");
    local.className = "local-time";
    local.textContent = " (" + at.toLocaleString([], {dateStyle: "medium", timeStyle: "medium"}) + " your time)";
    stamp.after(local);
  }
})();
