/* Live job progress for elements rendered by {% job_progress job %}.
 *
 * Listens on the job's websocket (snapshot, then progress and status frames). A dropped socket is reopened with
 * backoff; while it stays down, or when websockets are unavailable, the REST status URL is polled instead.
 * Elements anywhere on the page marked data-jobs-when="active|finished|succeeded|retryable" are shown or hidden
 * as the job moves, and the widget fires a "jobs:update" event (detail: the job state) on every change.
 */
(function () {
  "use strict";

  var TERMINAL = ["succeeded", "failed", "canceled"];
  var REFUSED = { 4401: "sign in to follow this job", 4403: "not allowed", 4404: "job not found" };
  var POLL_EVERY = 2000;
  var BACKOFF = [500, 1000, 2000, 4000, 8000];
  var FAILURES_BEFORE_POLLING = 2;

  function JobProgress(root) {
    this.root = root;
    this.statusUrl = root.dataset.statusUrl;
    this.wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + root.dataset.wsPath;
    this.status = root.dataset.status;
    this.progressAt = "";
    this.failures = 0;
    this.socket = null;
    this.pollTimer = null;
    this.reconnectTimer = null;
    this.applyVisibility();
    if (!this.finished()) this.connect();
  }

  JobProgress.prototype.field = function (name) {
    return this.root.querySelector('[data-field="' + name + '"]');
  };

  JobProgress.prototype.finished = function () {
    return TERMINAL.indexOf(this.status) !== -1;
  };

  JobProgress.prototype.setLink = function (text) {
    this.field("connection").textContent = text;
    this.root.dataset.link = text;
  };

  JobProgress.prototype.connect = function () {
    var self = this;
    if (!("WebSocket" in window)) return this.startPolling();
    var opened = false;
    var socket;
    try {
      socket = new WebSocket(this.wsUrl);
    } catch (error) {
      return this.startPolling();
    }
    this.socket = socket;
    socket.onopen = function () {
      opened = true;
      self.failures = 0;
      self.stopPolling();
      self.setLink("live");
    };
    socket.onmessage = function (event) {
      self.apply(JSON.parse(event.data));
    };
    socket.onclose = function (event) {
      self.socket = null;
      if (self.finished()) return;
      if (REFUSED[event.code]) {
        self.setLink(REFUSED[event.code]);
        return;
      }
      self.failures = opened ? 1 : self.failures + 1;
      if (self.failures >= FAILURES_BEFORE_POLLING) self.startPolling();
      else self.setLink("reconnecting…");
      var wait = BACKOFF[Math.min(self.failures - 1, BACKOFF.length - 1)];
      self.reconnectTimer = setTimeout(function () {
        self.connect();
      }, wait);
    };
  };

  JobProgress.prototype.startPolling = function () {
    var self = this;
    if (this.pollTimer || !this.statusUrl || this.finished()) return;
    this.setLink("polling");
    var poll = function () {
      fetch(self.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (job) {
          self.apply({ type: "snapshot", job: job });
        })
        .catch(function () {
          self.setLink("offline, retrying…");
        })
        .then(function () {
          if (self.pollTimer) self.pollTimer = setTimeout(poll, POLL_EVERY);
        });
    };
    this.pollTimer = setTimeout(poll, 0);
  };

  JobProgress.prototype.stopPolling = function () {
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.pollTimer = null;
  };

  JobProgress.prototype.apply = function (frame) {
    if (frame.type === "snapshot") {
      var job = frame.job;
      this.showProgress(job.progress.percent, job.progress.stage, job.progress.message, "");
      this.showStatus(job.status, job.result, job.error);
      this.showAttempts(job.attempts, job.max_attempts);
    } else if (frame.type === "progress") {
      // Frames may overtake a snapshot taken just after them; keep the newest state.
      if (frame.at < this.progressAt || this.finished()) return;
      this.progressAt = frame.at;
      this.showProgress(frame.percent, frame.stage, frame.message, frame.at);
    } else if (frame.type === "status") {
      this.showStatus(frame.status, frame.result, frame.error);
      this.showAttempts(frame.attempts);
    }
    this.root.dispatchEvent(new CustomEvent("jobs:update", { bubbles: true, detail: { status: this.status, frame: frame } }));
  };

  JobProgress.prototype.showProgress = function (percent, stage, message) {
    this.field("fill").style.width = percent + "%";
    this.root.querySelector('[role="progressbar"]').setAttribute("aria-valuenow", percent);
    this.field("percent").textContent = percent + "%";
    var stageField = this.field("stage");
    stageField.textContent = stage || "";
    stageField.hidden = !stage;
    this.field("message").textContent = message || "";
  };

  JobProgress.prototype.showAttempts = function (attempts, maxAttempts) {
    var field = this.field("attempts");
    if (maxAttempts) field.dataset.max = maxAttempts;
    field.textContent = "attempt " + attempts + " of " + field.dataset.max;
    field.hidden = !attempts;
  };

  JobProgress.prototype.showStatus = function (status, result, error) {
    this.status = status;
    this.root.dataset.status = status;
    var badge = this.field("status");
    badge.textContent = status;
    badge.className = "jobs-status jobs-status--" + status;
    if (status === "succeeded") this.showProgress(100, this.field("stage").textContent, this.field("message").textContent);
    var errorField = this.field("error");
    errorField.hidden = !error;
    if (error) {
      this.field("error-type").textContent = error.type;
      this.field("error-message").textContent = error.message;
    }
    var resultField = this.field("result");
    resultField.hidden = result === null || result === undefined;
    if (!resultField.hidden) resultField.textContent = JSON.stringify(result, null, 2);
    this.applyVisibility();
    if (this.finished()) {
      this.setLink("finished");
      this.stopPolling();
      clearTimeout(this.reconnectTimer);
      if (this.socket) this.socket.close(1000);
    }
  };

  JobProgress.prototype.applyVisibility = function () {
    var states = {
      active: !this.finished(),
      finished: this.finished(),
      succeeded: this.status === "succeeded",
      retryable: this.status === "failed" || this.status === "canceled",
    };
    document.querySelectorAll("[data-jobs-when]").forEach(function (element) {
      element.hidden = !states[element.dataset.jobsWhen];
    });
  };

  function start() {
    document.querySelectorAll("[data-job-progress]").forEach(function (root) {
      if (!root.jobProgress) root.jobProgress = new JobProgress(root);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
