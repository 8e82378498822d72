// Keeps every <table data-live-jobs> current: polls the jobs API and updates each row's status, progress, message,
// attempts and finish time; jobs of this user that appeared since the page was rendered are added at the top.
// Plain DOM, no framework; text is set with textContent, never parsed as HTML.
(function () {
  "use strict";
  var TERMINAL = ["succeeded", "failed", "canceled"];
  var BUSY_INTERVAL = 2000;  // while a listed job is still waiting or running
  var IDLE_INTERVAL = 10000; // otherwise: only new jobs can change the table

  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function stamp(iso) {
    // Like the server's "M j, H:i:s", in the site's time zone: the API's ISO strings are in that zone too.
    if (!iso) { return "\u2014"; }
    return MONTHS[parseInt(iso.slice(5, 7), 10) - 1] + " " + parseInt(iso.slice(8, 10), 10) + ", " + iso.slice(11, 19);
  }

  function cell(row, name) {
    return row.querySelector('[data-col="' + name + '"]');
  }

  function statusBadge(status) {
    var badge = document.createElement("span");
    badge.className = "status status-" + status;
    badge.textContent = status;
    return badge;
  }

  function truncated(text, length) {
    return text.length > length ? text.slice(0, length - 1) + "\u2026" : text;
  }

  // As _job_table.html: a finished job's outcome rather than its last stage; a failure's error, never a traceback.
  function messageContent(td, job) {
    td.textContent = "";
    var error = job.error;
    if (job.status === "failed" && error && (error.type || error.message)) {
      var span = document.createElement("span");
      span.className = "job-error";
      span.title = truncated(error.message || "", 500);
      if (error.type) {
        var type = document.createElement("strong");
        type.textContent = error.type;
        span.appendChild(type);
        span.appendChild(document.createTextNode(": "));
      }
      span.appendChild(document.createTextNode(truncated(error.message || "", 100)));
      td.appendChild(span);
    } else {
      var outcome = {failed: "Failed", succeeded: "Done", canceled: "Canceled"}[job.status];
      td.appendChild(document.createTextNode(outcome || truncated((job.progress && job.progress.message) || "", 60)));
    }
    if (job.failed_items_count) {
      var failed = document.createElement("span");
      failed.className = "failed-count";
      failed.textContent = " \u00b7 " + job.failed_items_count + " failed item" + (job.failed_items_count === 1 ? "" : "s");
      td.appendChild(failed);
    }
    if (job.type === "deploy" && job.status === "succeeded" && job.result && job.result.url) {
      td.appendChild(document.createTextNode(" \u00b7 "));
      var link = document.createElement("a");
      link.href = job.result.url;
      link.textContent = "open the site";
      td.appendChild(link);
    }
  }

  function update(row, job) {
    if (row.dataset.status !== job.status) {
      var td = cell(row, "status");
      td.textContent = "";
      td.appendChild(statusBadge(job.status));
      row.dataset.status = job.status;
    }
    var percent = (job.progress && job.progress.percent) || 0;
    cell(row, "progress").querySelector("progress").value = percent;
    cell(row, "progress").querySelector("span").textContent = percent + "%";
    messageContent(cell(row, "message"), job);
    cell(row, "attempts").textContent = job.attempts + "/" + job.max_attempts;
    cell(row, "finished").textContent = stamp(job.finished_at);
  }

  function newRow(table, job) {
    var row = document.createElement("tr");
    row.dataset.jobId = job.id;
    row.dataset.status = "";
    var columns = ["job", "type", "status", "progress", "message", "attempts", "created", "finished"];
    columns.forEach(function (name) {
      var td = document.createElement("td");
      td.dataset.col = name;
      row.appendChild(td);
    });
    var link = document.createElement("a");
    link.href = table.dataset.detailPrefix + job.id + "/";
    var code = document.createElement("code");
    code.textContent = job.id.slice(0, 8);
    link.appendChild(code);
    cell(row, "job").appendChild(link);
    cell(row, "type").textContent = job.type;
    if (job.priority !== "normal") {
      var priority = document.createElement("span");
      priority.className = "priority priority-" + job.priority;
      priority.textContent = job.priority;
      cell(row, "type").appendChild(document.createTextNode(" "));
      cell(row, "type").appendChild(priority);
    }
    var bar = document.createElement("progress");
    bar.max = 100;
    cell(row, "progress").appendChild(bar);
    cell(row, "progress").appendChild(document.createTextNode(" "));
    cell(row, "progress").appendChild(document.createElement("span"));
    cell(row, "created").textContent = stamp(job.created_at);
    update(row, job);
    return row;
  }

  function watch(table) {
    var body = table.tBodies[0];
    var owner = table.dataset.owner;
    // With a status filter the API is asked for every status: a listed job that moves on is still updated.
    var wanted = table.dataset.status || "";
    var limit = parseInt(table.dataset.limit || "50", 10);
    var timer = null;

    function rows() {
      var found = {};
      body.querySelectorAll("tr[data-job-id]").forEach(function (row) { found[row.dataset.jobId] = row; });
      return found;
    }

    function busy() {
      return Array.prototype.some.call(body.querySelectorAll("tr[data-job-id]"), function (row) {
        return TERMINAL.indexOf(row.dataset.status) === -1;
      });
    }

    function schedule() {
      clearTimeout(timer);
      timer = setTimeout(poll, busy() ? BUSY_INTERVAL : IDLE_INTERVAL);
    }

    function poll() {
      if (document.hidden) { schedule(); return; }
      fetch(table.dataset.api, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
        .then(function (data) {
          var existing = rows();
          var fresh = [];
          (data.results || []).forEach(function (job) {
            if (existing[job.id]) {
              update(existing[job.id], job);
            } else if (String(job.owner) === owner && (!wanted || job.status === wanted)) {
              fresh.push(job);
            }
          });
          // The API answers newest first; the newest goes on top.
          fresh.reverse().forEach(function (job) { body.insertBefore(newRow(table, job), body.firstChild); });
          if (fresh.length) {
            var empty = body.querySelector("tr.empty");
            if (empty) { empty.remove(); }
            var all = body.querySelectorAll("tr[data-job-id]");
            for (var i = limit; i < all.length; i++) { all[i].remove(); }
          }
          table.dataset.updatedAt = new Date().toISOString();
        })
        .catch(function () { /* the next poll tries again */ })
        .then(schedule);
    }

    document.addEventListener("visibilitychange", function () { if (!document.hidden) { poll(); } });
    schedule();
  }

  document.querySelectorAll("table[data-live-jobs]").forEach(watch);
})();
