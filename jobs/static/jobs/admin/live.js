/* Live progress in the jobs admin.
   The detail page follows ws/jobs/<id>/ (snapshot, progress and status frames) and polls the admin's JSON for
   the job when the socket is unavailable; once the job finishes, the page reloads to show its result, error and
   timeline. The job list follows ws/dashboard/ to move the bars and badges of the rows it shows. On both, a
   running job's duration counts on every second from what the server rendered, until the job finishes. */
(function () {
    "use strict";

    const TERMINAL = ["succeeded", "failed", "canceled"];
    const POLL_MS = 2000;

    function scheme() {
        return window.location.protocol === "https:" ? "wss://" : "ws://";
    }

    function statusLabel(status) {
        return status.charAt(0) + status.slice(1);
    }

    // Durations (display.live_duration) -------------------------------------------------------------------------

    // As display.format_duration writes them.
    function formatDuration(seconds) {
        if (seconds < 1) {
            return Math.round(seconds * 1000) + " ms";
        }
        if (seconds < 60) {
            return seconds.toFixed(1) + " s";
        }
        let minutes = Math.floor(seconds / 60);
        if (minutes < 60) {
            return minutes + " min " + (Math.floor(seconds) % 60) + " s";
        }
        const hours = Math.floor(minutes / 60);
        minutes = minutes % 60;
        if (hours < 48) {
            return hours + " h " + minutes + " min";
        }
        return Math.floor(hours / 24) + " d " + (hours % 24) + " h";
    }

    let durationTimer = null;

    // A counting duration keeps the moment, on this page's monotonic clock, at which the job would have started.
    function countDuration(element, elapsedSeconds) {
        element.dataset.since = String(performance.now() - elapsedSeconds * 1000);
        if (durationTimer === null) {
            durationTimer = window.setInterval(tickDurations, 1000);
        }
    }

    function tickDurations() {
        const counting = document.querySelectorAll("[data-job-duration][data-since]");
        counting.forEach(function (element) {
            element.textContent = formatDuration((performance.now() - Number(element.dataset.since)) / 1000);
        });
        if (!counting.length) {
            window.clearInterval(durationTimer);
            durationTimer = null;
        }
    }

    function applyStatus(jobId, status) {
        if (TERMINAL.indexOf(status) !== -1) {
            document.querySelectorAll('[data-job-duration="' + CSS.escape(jobId) + '"]').forEach(function (element) {
                delete element.dataset.since;  // stops where it is; the finished job's page shows the exact one
            });
        }
        document.querySelectorAll('[data-job-status="' + CSS.escape(jobId) + '"]').forEach(function (badge) {
            badge.className = "jobs-badge jobs-badge--" + status;
            badge.textContent = statusLabel(status);
        });
        document.querySelectorAll('[data-job-progress="' + CSS.escape(jobId) + '"]').forEach(function (bar) {
            bar.className = "jobs-progress jobs-progress--" + status;
            if (status === "succeeded") {
                setPercent(bar, 100);
            }
        });
    }

    function setPercent(bar, percent) {
        const value = Math.max(0, Math.min(100, Math.round(Number(percent) || 0)));
        bar.setAttribute("aria-valuenow", String(value));
        bar.querySelector(".jobs-progress__bar").style.width = value + "%";
        bar.querySelector(".jobs-progress__label").textContent = value + "%";
    }

    function applyProgress(jobId, progress) {
        document.querySelectorAll('[data-job-progress="' + CSS.escape(jobId) + '"]').forEach(function (bar) {
            setPercent(bar, progress.percent);
            if (progress.message !== undefined) {
                bar.title = progress.message || "";
            }
        });
        const live = document.querySelector('.jobs-live[data-job-id="' + CSS.escape(jobId) + '"]');
        if (!live) {
            return;
        }
        const fields = {
            message: progress.message || "",
            stage: progress.stage ? "[" + progress.stage + "]" : "",
            detail: "",
        };
        const data = progress.data || {};
        if (data.current !== undefined && data.total !== undefined) {
            fields.detail = data.current + " / " + data.total;
        } else if (data.current !== undefined) {
            fields.detail = String(data.current);
        }
        Object.keys(fields).forEach(function (name) {
            const target = live.querySelector('[data-field="' + name + '"]');
            if (target) {
                target.textContent = fields[name];
            }
        });
    }

    // The detail page ----------------------------------------------------------------------------------------

    function followJob(live) {
        const jobId = live.dataset.jobId;
        const stateText = live.querySelector('[data-field="live-state"]');
        let status = null;
        let pollTimer = null;
        let finished = false;

        function finish(newStatus) {
            if (finished) {
                return;
            }
            finished = true;
            applyStatus(jobId, newStatus);
            // The result, error and timeline are rendered by the server: show them.
            window.setTimeout(function () {
                window.location.reload();
            }, 800);
        }

        function onStatus(newStatus) {
            if (newStatus === status) {
                return;
            }
            status = newStatus;
            applyStatus(jobId, newStatus);
            if (TERMINAL.indexOf(newStatus) !== -1) {
                finish(newStatus);
            }
        }

        function onJob(job) {
            if (job.progress) {
                applyProgress(jobId, job.progress);
            }
            onStatus(job.status);
        }

        function poll() {
            fetch(live.dataset.pollUrl, {credentials: "same-origin", headers: {Accept: "application/json"}})
                .then(function (response) {
                    if (!response.ok) {
                        throw new Error("HTTP " + response.status);
                    }
                    return response.json();
                })
                .then(onJob)
                .catch(function () {});
        }

        function startPolling() {
            if (pollTimer === null && !finished) {
                stateText.textContent = "· updating every " + POLL_MS / 1000 + " s";
                pollTimer = window.setInterval(poll, POLL_MS);
                poll();
            }
        }

        function stopPolling() {
            if (pollTimer !== null) {
                window.clearInterval(pollTimer);
                pollTimer = null;
            }
        }

        if (!("WebSocket" in window)) {
            startPolling();
            return;
        }
        let socket;
        try {
            socket = new WebSocket(scheme() + window.location.host + live.dataset.wsPath);
        } catch (error) {
            startPolling();
            return;
        }
        socket.addEventListener("open", function () {
            stopPolling();
            stateText.textContent = "· live";
        });
        socket.addEventListener("message", function (event) {
            let frame;
            try {
                frame = JSON.parse(event.data);
            } catch (error) {
                return;
            }
            if (frame.type === "snapshot" && frame.job) {
                onJob(frame.job);
            } else if (frame.type === "progress") {
                applyProgress(jobId, frame);
            } else if (frame.type === "status") {
                onStatus(frame.status);
            }
        });
        socket.addEventListener("close", startPolling);
    }

    // The job list -------------------------------------------------------------------------------------------

    function followList() {
        if (!document.querySelector("#result_list [data-job-progress]") || !("WebSocket" in window)) {
            return;
        }
        let socket;
        try {
            socket = new WebSocket(scheme() + window.location.host + "/ws/dashboard/");
        } catch (error) {
            return;
        }
        socket.addEventListener("message", function (event) {
            let frame;
            try {
                frame = JSON.parse(event.data);
            } catch (error) {
                return;
            }
            if (frame.type === "progress" && frame.job_id) {
                applyProgress(frame.job_id, frame);
            } else if (frame.type === "status" && frame.job_id) {
                applyStatus(frame.job_id, frame.status);
            }
        });
    }

    function start() {
        document.querySelectorAll("[data-job-duration][data-elapsed]").forEach(function (element) {
            countDuration(element, Number(element.dataset.elapsed));
        });
        document.querySelectorAll('.jobs-live[data-live="1"]').forEach(followJob);
        followList();
    }

    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", start);
    } else {
        start();
    }
})();
