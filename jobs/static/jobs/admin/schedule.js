/* The schedule form: shows the timing fields of the chosen kind, and previews the timing in words and the next
   five runs while it is edited (the server says them: cron-descriptor and croniter live there). */
(function () {
    "use strict";

    function start() {
        const form = document.getElementById("jobschedule_form");
        const marker = document.querySelector("[data-schedule-describe-url]");
        if (!form) {
            return;
        }
        const kind = form.querySelector("#id_kind");
        const rows = {
            cron: form.querySelector(".form-row.field-cron, .field-cron"),
            interval: form.querySelector(".form-row.field-interval_seconds, .field-interval_seconds"),
            once: form.querySelector(".form-row.field-run_at, .field-run_at"),
        };
        const words = form.querySelector('[data-schedule-preview="words"]');
        const runs = form.querySelector('[data-schedule-preview="runs"]');
        let timer = null;
        let sequence = 0;

        function showKindFields() {
            if (!kind) {
                return;
            }
            Object.keys(rows).forEach(function (name) {
                const row = rows[name];
                // A field with an error stays in view, whatever the kind.
                if (row && !row.classList.contains("errors")) {
                    row.hidden = name !== kind.value;
                }
            });
        }

        function value(name) {
            const input = form.querySelector('[name="' + name + '"]');
            return input ? input.value : "";
        }

        function preview() {
            if (!marker || !words || !runs) {
                return;
            }
            const params = new URLSearchParams({
                kind: value("kind"),
                cron: value("cron"),
                interval_seconds: value("interval_seconds"),
                run_at_0: value("run_at_0"),
                run_at_1: value("run_at_1"),
                timezone: value("timezone"),
            });
            const mine = ++sequence;
            fetch(marker.dataset.scheduleDescribeUrl + "?" + params.toString(), {
                credentials: "same-origin",
                headers: {Accept: "application/json"},
            })
                .then(function (response) {
                    return response.ok ? response.json() : null;
                })
                .then(function (data) {
                    if (!data || mine !== sequence) {
                        return;
                    }
                    words.classList.toggle("jobs-preview-error", !data.ok);
                    words.textContent = data.ok ? data.words || "—" : data.error;
                    const items = (data.runs || []).map(function (run) {
                        const item = document.createElement("li");
                        item.textContent = run;
                        return item;
                    });
                    if (!items.length) {
                        const item = document.createElement("li");
                        item.textContent = "—";
                        items.push(item);
                    }
                    runs.replaceChildren.apply(runs, items);
                })
                .catch(function () {});
        }

        function later() {
            window.clearTimeout(timer);
            timer = window.setTimeout(preview, 300);
        }

        ["kind", "cron", "interval_seconds", "run_at_0", "run_at_1", "timezone"].forEach(function (name) {
            const input = form.querySelector('[name="' + name + '"]');
            if (input) {
                input.addEventListener("input", later);
                input.addEventListener("change", later);
            }
        });
        if (kind) {
            kind.addEventListener("change", showKindFields);
        }
        showKindFields();
        // After a refused save the server's preview is of the stored schedule: show what the form holds.
        if (form.querySelector(".errorlist")) {
            preview();
        }
    }

    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", start);
    } else {
        start();
    }
})();
