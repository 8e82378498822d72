/* The queues dashboard: live counts over ws/dashboard/, polling the page's JSON when the socket is unavailable,
   and two small SVG bar charts. No libraries, no network beyond this site. */
(function () {
    "use strict";

    const root = document.querySelector(".jobs-dashboard");
    if (!root) {
        return;
    }
    const config = root.dataset;
    const pollMs = Math.max(1, Number(config.pollSeconds || 5)) * 1000;
    const SVG = "http://www.w3.org/2000/svg";
    const indicator = document.querySelector("[data-live-indicator]");
    let series = JSON.parse(document.getElementById("jobs-series").textContent);
    let socket = null;
    let pollTimer = null;
    let refreshTimer = null;
    let lastRefresh = 0;
    let reconnectDelay = 2000;

    // Live state ---------------------------------------------------------------------------------------------

    function setState(state) {
        if (!indicator) {
            return;
        }
        indicator.dataset.state = state;
        const text = {live: config.textLive, polling: config.textPolling, offline: config.textOffline};
        indicator.querySelector("[data-live-text]").textContent = text[state] || config.textConnecting;
    }

    function connect() {
        if (!("WebSocket" in window)) {
            startPolling();
            return;
        }
        const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
        let opened = false;
        try {
            socket = new WebSocket(scheme + window.location.host + config.wsPath);
        } catch (error) {
            startPolling();
            return;
        }
        socket.addEventListener("open", function () {
            opened = true;
            reconnectDelay = 2000;
            stopPolling();
            setState("live");
            refresh();
        });
        socket.addEventListener("message", function (event) {
            let frame;
            try {
                frame = JSON.parse(event.data);
            } catch (error) {
                return;
            }
            if (frame.type === "queues" && Array.isArray(frame.queues)) {
                applyQueues(frame.queues);
                scheduleRefresh();
            } else if (frame.type === "status") {
                scheduleRefresh();
            }
        });
        socket.addEventListener("close", function () {
            socket = null;
            startPolling();
            // A server without the consumer refuses at once: try again later, less and less often.
            window.setTimeout(connect, opened ? 2000 : reconnectDelay);
            reconnectDelay = Math.min(reconnectDelay * 2, 60000);
        });
    }

    function startPolling() {
        if (pollTimer === null) {
            setState("polling");
            pollTimer = window.setInterval(refresh, pollMs);
            refresh();
        }
    }

    function stopPolling() {
        if (pollTimer !== null) {
            window.clearInterval(pollTimer);
            pollTimer = null;
        }
    }

    // Frames only carry per-queue totals: fetch the full picture (priorities, charts) at most every few seconds.
    function scheduleRefresh() {
        if (refreshTimer !== null) {
            return;
        }
        const wait = Math.max(0, lastRefresh + pollMs - Date.now());
        refreshTimer = window.setTimeout(function () {
            refreshTimer = null;
            refresh();
        }, wait);
    }

    function refresh() {
        lastRefresh = Date.now();
        fetch(config.dataUrl, {credentials: "same-origin", headers: {Accept: "application/json"}})
            .then(function (response) {
                const type = response.headers.get("Content-Type") || "";
                if (!response.ok || type.indexOf("application/json") === -1) {
                    throw new Error("HTTP " + response.status);
                }
                return response.json();
            })
            .then(function (data) {
                applyQueues(data.queues || []);
                applyPriorities(data.priorities || {});
                if (data.series) {
                    // The polled JSON leaves out the week (it moves slowly): keep the one the page came with.
                    series = Object.assign({}, series, data.series);
                    drawCharts();
                }
                if (socket === null) {
                    setState("polling");
                }
            })
            .catch(function () {
                if (socket === null) {
                    setState("offline");
                }
            });
    }

    // Applying data ------------------------------------------------------------------------------------------

    // A count as the server draws it: a link to those jobs in the job list, or a quiet zero.
    function countLink(params, count) {
        if (!count) {
            const zero = document.createElement("span");
            zero.className = "jobs-zero";
            zero.textContent = "0";
            return zero;
        }
        const link = document.createElement("a");
        link.href = config.jobsUrl + "?" + params.toString();
        link.textContent = String(count);
        return link;
    }

    function setLinkedCount(cell, params, count) {
        if (!cell || cell.textContent.trim() === String(count || 0)) {
            return;
        }
        cell.replaceChildren(countLink(params, count));
        cell.classList.remove("jobs-flash");
        void cell.offsetWidth; // restart the animation
        cell.classList.add("jobs-flash");
    }

    function setCount(cell, queue, priority, status, count) {
        const params = new URLSearchParams({queue: queue});
        if (priority !== "all") {
            params.set("priority", priority);
        }
        params.set("status__exact", status);
        setLinkedCount(cell, params, count);
    }

    // The compact row's columns: the statuses each adds up (as SUMMARY in jobs/admin/queues.py).
    const SUMMARY = {waiting: ["pending", "queued", "scheduled"], running: ["running"], failed: ["failed"]};

    function setSummary(queue) {
        Object.keys(SUMMARY).forEach(function (key) {
            const statuses = SUMMARY[key];
            const count = statuses.reduce(function (sum, status) {
                return sum + (queue.counts[status] || 0);
            }, 0);
            const params = new URLSearchParams({queue: queue.name});
            if (statuses.length === 1) {
                params.set("status__exact", statuses[0]);
            } else {
                params.set("status__in", statuses.join(","));
            }
            setLinkedCount(cell('[data-sum="' + CSS.escape(queue.name + ":" + key) + '"]'), params, count);
        });
    }

    // A plain number cell (jobs waiting in Redis): zero is drawn quiet, like the server draws it.
    function setNumber(target, value) {
        if (!target || target.textContent.trim() === String(value)) {
            return;
        }
        if (value) {
            target.textContent = String(value);
        } else {
            const zero = document.createElement("span");
            zero.className = "jobs-zero";
            zero.textContent = "0";
            target.replaceChildren(zero);
        }
    }

    function cell(selector) {
        return root.querySelector(selector);
    }

    function applyQueues(queues) {
        const workers = new Map();
        queues.forEach(function (queue) {
            const section = root.querySelector('[data-queue="' + CSS.escape(queue.name) + '"]');
            queue.workers.forEach(function (worker) {
                const entry = workers.get(worker.name) || Object.assign({}, worker, {queues: []});
                entry.queues.push(queue.name);
                workers.set(worker.name, entry);
            });
            if (!section) {
                return;
            }
            setSummary(queue);
            const names = root.querySelector('[id="' + CSS.escape("queue-" + queue.name + "-details") + '"] [data-queue-workers]');
            if (names) {
                names.textContent = queue.workers.map(function (worker) {
                    return worker.name;
                }).sort().join(", ") || "—";
            }
            Object.keys(queue.counts).forEach(function (status) {
                const selector = '[data-count="' + CSS.escape(queue.name + ":all:" + status) + '"]';
                setCount(cell(selector), queue.name, "all", status, queue.counts[status]);
            });
            const redis = queue.waiting_in_redis || {};
            let inRedis = 0;
            Object.keys(redis).forEach(function (priority) {
                inRedis += redis[priority];
                setNumber(cell('[data-redis="' + CSS.escape(queue.name + ":" + priority) + '"]'), redis[priority]);
            });
            if (Object.keys(redis).length) {
                setNumber(cell('[data-redis="' + CSS.escape(queue.name + ":all") + '"]'), inRedis);
            }
            section.classList.toggle("jobs-queue--paused", queue.paused);
            const badge = section.querySelector("[data-paused-badge]");
            if (badge) {
                badge.hidden = !queue.paused;
            }
            section.querySelectorAll("[data-when-paused]").forEach(function (form) {
                form.hidden = (form.dataset.whenPaused === "yes") !== queue.paused;
            });
            const facts = {
                "throughput-minute": queue.throughput.last_minute,
                "throughput-hour": queue.throughput.last_hour,
                workers: queue.workers.length,
            };
            Object.keys(facts).forEach(function (name) {
                const fact = section.querySelector('[data-fact="' + name + '"]');
                if (fact) {
                    fact.textContent = String(facts[name]);
                }
            });
        });
        applyWorkers(Array.from(workers.values()));
        const total = root.querySelector("[data-worker-total]");
        if (total) {
            total.textContent = String(workers.size);
        }
    }

    function applyPriorities(priorities) {
        Object.keys(priorities).forEach(function (queue) {
            Object.keys(priorities[queue]).forEach(function (priority) {
                const counts = priorities[queue][priority];
                let any = false;
                Object.keys(counts).forEach(function (status) {
                    const selector = '[data-count="' + CSS.escape(queue + ":" + priority + ":" + status) + '"]';
                    setCount(cell(selector), queue, priority, status, counts[status]);
                    any = any || counts[status] > 0;
                });
                const row = root.querySelector('[data-priority-row="' + CSS.escape(queue + ":" + priority) + '"]');
                const redis = cell('[data-redis="' + CSS.escape(queue + ":" + priority) + '"]');
                if (row) {
                    row.hidden = !any && !(redis && Number(redis.textContent) > 0);
                }
            });
        });
    }

    function td(text, className) {
        const element = document.createElement("td");
        if (className) {
            element.className = className;
        }
        if (text instanceof Node) {
            element.appendChild(text);
        } else {
            element.textContent = text;
        }
        return element;
    }

    function applyWorkers(workers) {
        const body = root.querySelector("[data-workers]");
        if (!body) {
            return;
        }
        workers.sort(function (a, b) {
            return a.name < b.name ? -1 : 1;
        });
        const rows = workers.map(function (worker) {
            const row = document.createElement("tr");
            const state = document.createElement("span");
            state.className = "jobs-badge jobs-badge--worker-" + worker.state;
            state.textContent = worker.state;
            let current;
            if (worker.current_job) {
                current = document.createElement("a");
                current.className = "jobs-mono";
                current.href = config.jobUrl.replace("00000000-0000-0000-0000-000000000000", worker.current_job);
                current.textContent = worker.current_job.slice(0, 8);
            } else {
                current = document.createElement("span");
                current.className = "jobs-quiet";
                current.textContent = "—";
            }
            let beat = "—";
            if (worker.last_heartbeat) {
                beat = document.createElement("time");
                beat.dateTime = worker.last_heartbeat;
                beat.dataset.ago = "";
                beat.textContent = ago(worker.last_heartbeat);
            }
            [
                td(worker.name),
                td(worker.host || ""),
                td(String(worker.pid || ""), "jobs-num"),
                td(state),
                td(worker.queues.join(", ")),
                td(current),
                td(beat),
            ].forEach(function (element) {
                row.appendChild(element);
            });
            return row;
        });
        if (!rows.length) {
            const row = document.createElement("tr");
            const empty = td(config.textNone, "jobs-quiet");
            empty.colSpan = 7;
            row.appendChild(empty);
            rows.push(row);
        }
        body.replaceChildren.apply(body, rows);
    }

    function ago(iso) {
        const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
        if (seconds < 60) {
            return seconds + " s ago";
        }
        if (seconds < 3600) {
            return Math.floor(seconds / 60) + " min ago";
        }
        return Math.floor(seconds / 3600) + " h ago";
    }

    function refreshAges() {
        root.querySelectorAll("time[data-ago]").forEach(function (element) {
            element.textContent = ago(element.dateTime);
        });
    }

    // Charts -------------------------------------------------------------------------------------------------

    function niceMax(value) {
        if (value <= 4) {
            return 4;
        }
        const power = Math.pow(10, Math.floor(Math.log10(value)));
        const steps = [1, 2, 2.5, 5, 10];
        for (let i = 0; i < steps.length; i++) {
            if (steps[i] * power >= value) {
                return steps[i] * power;
            }
        }
        return 10 * power;
    }

    function el(name, attributes, text) {
        const element = document.createElementNS(SVG, name);
        Object.keys(attributes).forEach(function (key) {
            element.setAttribute(key, attributes[key]);
        });
        if (text !== undefined) {
            element.textContent = text;
        }
        return element;
    }

    function pad(number) {
        return String(number).padStart(2, "0");
    }

    function label(date, stepSeconds) {
        if (stepSeconds >= 86400) {
            // Days are UTC days: label them by their UTC date, whatever the browser's zone.
            return date.toISOString().slice(5, 10);
        }
        return pad(date.getHours()) + ":" + (stepSeconds >= 3600 ? "00" : pad(date.getMinutes()));
    }

    function drawChart(container, data) {
        const width = Math.max(240, container.clientWidth);
        const height = Math.max(120, container.clientHeight - 8);
        const margin = {top: 8, right: 6, bottom: 20, left: 34};
        const plotW = width - margin.left - margin.right;
        const plotH = height - margin.top - margin.bottom;
        const n = data.succeeded.length;
        const totals = data.succeeded.map(function (ok, i) {
            return ok + data.failed[i];
        });
        const top = niceMax(Math.max.apply(null, totals.concat([0])));
        const slot = plotW / n;
        const barW = Math.max(1, slot * 0.72);
        const start = Date.parse(data.start);
        const svg = el("svg", {viewBox: "0 0 " + width + " " + height, preserveAspectRatio: "none", "aria-hidden": "true"});

        for (let i = 0; i <= 4; i++) {
            const y = margin.top + plotH - (plotH * i) / 4;
            svg.appendChild(el("line", {x1: margin.left, x2: width - margin.right, y1: y, y2: y, class: i ? "jobs-grid" : "jobs-axis"}));
            const value = (top * i) / 4;
            svg.appendChild(el("text", {x: margin.left - 6, y: y + 3, "text-anchor": "end"}, Number.isInteger(value) ? String(value) : value.toFixed(1)));
        }
        const labelEvery = data.step_seconds >= 86400 ? 1 : data.step_seconds >= 3600 ? 4 : 10;
        for (let i = 0; i < n; i++) {
            const x = margin.left + i * slot + (slot - barW) / 2;
            const okH = (plotH * data.succeeded[i]) / top;
            const badH = (plotH * data.failed[i]) / top;
            const base = margin.top + plotH;
            const moment = new Date(start + i * data.step_seconds * 1000);
            const group = el("g", {});
            group.appendChild(el("title", {}, label(moment, data.step_seconds) + " — " + data.succeeded[i] + " " + config.textSucceeded + ", " + data.failed[i] + " " + config.textFailed));
            group.appendChild(el("rect", {x: margin.left + i * slot, y: margin.top, width: slot, height: plotH, class: "jobs-bar-hit"}));
            if (okH > 0) {
                group.appendChild(el("rect", {x: x, y: base - okH, width: barW, height: okH, rx: Math.min(2, barW / 3), class: "jobs-bar--succeeded"}));
            }
            if (badH > 0) {
                group.appendChild(el("rect", {x: x, y: base - okH - badH, width: barW, height: badH, rx: Math.min(2, barW / 3), class: "jobs-bar--failed"}));
            }
            svg.appendChild(group);
            const minuteOrHour = data.step_seconds >= 86400 ? 0 : data.step_seconds >= 3600 ? moment.getHours() : moment.getMinutes();
            if (minuteOrHour % labelEvery === 0) {
                svg.appendChild(el("text", {x: margin.left + i * slot + slot / 2, y: height - 5, "text-anchor": "middle"}, label(moment, data.step_seconds)));
            }
        }
        container.replaceChildren(svg);
    }

    function drawCharts() {
        root.querySelectorAll("[data-chart]").forEach(function (container) {
            const name = container.dataset.chart;
            const data = series[name];
            if (!data) {
                return;
            }
            drawChart(container, data);
            ["succeeded", "failed"].forEach(function (status) {
                const total = root.querySelector('[data-total="' + name + "-" + status + '"]');
                if (total) {
                    total.textContent = String(data[status].reduce(function (a, b) {
                        return a + b;
                    }, 0));
                }
            });
        });
    }

    // Details on demand: each queue's row opens the row under it (per priority and status, its workers).
    root.querySelectorAll(".jobs-disclose").forEach(function (button) {
        button.addEventListener("click", function () {
            const details = document.getElementById(button.getAttribute("aria-controls"));
            const open = button.getAttribute("aria-expanded") !== "true";
            button.setAttribute("aria-expanded", open ? "true" : "false");
            if (details) {
                details.hidden = !open;
            }
        });
    });

    let resizeTimer = null;
    window.addEventListener("resize", function () {
        window.clearTimeout(resizeTimer);
        resizeTimer = window.setTimeout(drawCharts, 150);
    });

    drawCharts();
    window.setInterval(refreshAges, 5000);
    setState("connecting");
    connect();
})();
