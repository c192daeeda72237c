/*
 * The user study as a jsPsych experiment (built by helpers/study/web.py; settings in study.js).
 *
 * One trial shows the paper's instruction and two grids stacked, answered with the up/down arrow
 * keys or two buttons, with no feedback. The trial list is the Voila app's (trials.js). Every
 * answer is saved as it is given: to localStorage always (the trial's on_finish), and to the host
 * when there is one (on_data_update; JATOS: jatos.appendResultData, one JSON line per answer; a data
 * URL: a POST of that JSON). A
 * reload resumes at the first unanswered trial; the end page offers the data as a CSV file.
 */
(function () {
  "use strict";

  const S = window.STUDY;
  const T = window.StudyTrials;
  const { ParameterType } = window.jsPsychModule;

  // the fields of a response record, in the order of helpers.study.stimuli.FIELDS
  const FIELDS = ["participant", "observer", "trial", "n_trials", "stimulus_id", "layer", "basis", "component",
                  "ordered_position", "choice", "correct", "rt_ms", "timestamp", "input", "stimuli_hash"];
  const EXTRA = ["check", "asked", "passed", "study_id", "session_id"];
  const COLUMNS = ["trial_type", "task", ...FIELDS, ...EXTRA];
  const CODE = /^[A-Za-z0-9_-]{1,40}$/;

  function isoNow() { // local time with its offset, milliseconds: as Python's isoformat(timespec="milliseconds")
    const d = new Date();
    const pad = (n, w = 2) => String(Math.abs(n)).padStart(w, "0");
    const offset = -d.getTimezoneOffset();
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:` +
      `${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}` +
      `${offset >= 0 ? "+" : "-"}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
  }

  // --- the trial on screen ----------------------------------------------------------------------
  class GridChoicePlugin {
    constructor(jsPsych) { this.jsPsych = jsPsych; }

    trial(display, trial) {
      const record = trial.record;
      const number = record.task === "attention" ? record.check : record.trial;
      display.innerHTML =
        `<div class="study-trial" data-task="${record.task}" data-number="${number}">` +
        `<p class="study-instruction">${trial.instruction}</p>` +
        `<p class="study-progress">${trial.progress}</p><div class="study-pair"><div class="study-grids">` +
        `<div class="study-grid"><b>↑</b><img id="study-top" alt="top grid"></div>` +
        `<div class="study-grid"><b>↓</b><img id="study-bottom" alt="bottom grid"></div></div>` +
        `<div class="study-buttons"><button class="jspsych-btn" id="study-choose-top">↑ top</button>` +
        `<button class="jspsych-btn" id="study-choose-bottom">↓ bottom</button></div></div></div>`;
      const images = [["study-top", trial.top], ["study-bottom", trial.bottom]].map(([id, src]) => {
        const image = display.querySelector("#" + id);
        image.src = src;
        return image.decode().catch(() => undefined);
      });
      let shownAt = null, answered = false;
      const answer = (choice, input) => {
        if (answered || shownAt === null) return;
        const rt = performance.now() - shownAt;
        if (rt < trial.min_rt_ms) return; // a double press must not answer a trial not yet seen
        answered = true;
        document.removeEventListener("keydown", onKey);
        const outcome = record.task === "attention" ? { passed: choice === record.asked }
                                                    : { correct: choice === record.ordered_position };
        this.jsPsych.finishTrial({ ...record, choice, ...outcome, rt_ms: Math.round(rt * 10) / 10,
                                   timestamp: isoNow(), input });
      };
      const onKey = (event) => {
        if (event.repeat) return;
        const choice = { ArrowUp: "top", ArrowDown: "bottom" }[event.key];
        if (choice) { event.preventDefault(); answer(choice, "key"); }
      };
      document.addEventListener("keydown", onKey);
      display.querySelector("#study-choose-top").addEventListener("click", () => answer("top", "button"));
      display.querySelector("#study-choose-bottom").addEventListener("click", () => answer("bottom", "button"));
      Promise.all(images).then(() => { // the trial is on screen once both grids are drawn
        shownAt = performance.now();
        display.querySelector(".study-trial").classList.add("study-ready");
      });
    }
  }
  GridChoicePlugin.info = {
    name: "grid-choice",
    version: "1.0.0",
    parameters: {
      top: { type: ParameterType.IMAGE, default: undefined },
      bottom: { type: ParameterType.IMAGE, default: undefined },
      instruction: { type: ParameterType.HTML_STRING, default: "" },
      progress: { type: ParameterType.HTML_STRING, default: "" },
      min_rt_ms: { type: ParameterType.INT, default: 200 },
      record: { type: ParameterType.OBJECT, default: {} },
    },
    data: {
      choice: { type: ParameterType.STRING },
      rt_ms: { type: ParameterType.FLOAT },
      input: { type: ParameterType.STRING },
    },
  };

  // --- answers: localStorage always, the host when there is one -----------------------------------
  function hostKind() {
    if (window.location.pathname.includes("/publix/")) return "jatos"; // JATOS serves studies under /publix/
    return S.data_url ? "url" : "none";
  }

  class Answers {
    constructor(participant, host) {
      this.key = `neuron-study:${S.stimuli_hash}:${participant}`;
      this.host = host;
      this.flushing = null;
    }
    get rows() { return JSON.parse(window.localStorage.getItem(this.key) || "[]"); }
    get sent() { return Number(window.localStorage.getItem(this.key + ":sent") || 0); }
    has(row) {
      return this.rows.some((r) => r.task === row.task &&
        (row.task === "attention" ? r.check === row.check : r.trial === row.trial));
    }
    add(row) { // written before the next trial is shown; a second window's answer to the same trial is ignored
      if (this.has(row)) return false;
      const rows = this.rows;
      rows.push(row);
      window.localStorage.setItem(this.key, JSON.stringify(rows));
      return true;
    }
    async send(row) {
      const line = JSON.stringify(row) + "\n";
      if (this.host === "jatos") return window.jatos.appendResultData(line);
      const response = await fetch(S.data_url, { method: "POST", body: line, keepalive: true,
                                                 headers: { "Content-Type": "application/json" } });
      if (!response.ok) throw new Error(`${S.data_url} answered ${response.status}`);
    }
    flush() { // send what the host has not acknowledged, in order; resolves when all is sent (or a send failed)
      if (this.host === "none") return Promise.resolve(true);
      if (this.flushing) return this.flushing.then(() => this.flush());
      this.flushing = (async () => {
        try {
          const rows = this.rows;
          for (let i = this.sent; i < rows.length; i++) {
            await this.send(rows[i]);
            window.localStorage.setItem(this.key + ":sent", String(i + 1));
          }
          return true;
        } catch (error) {
          console.warn("answers kept in this browser, to be sent again:", error);
          return false;
        } finally {
          this.flushing = null;
        }
      })();
      return this.flushing;
    }
    csv() {
      const cell = (v) => {
        const s = v === undefined || v === null ? "" : String(v);
        return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
      };
      return [COLUMNS.join(","), ...this.rows.map((r) => COLUMNS.map((c) => cell(r[c])).join(","))].join("\n") + "\n";
    }
  }

  // --- the session ------------------------------------------------------------------------------
  function stimuli() { // the answer key is stored masked (not secret: the page holds what it needs to score)
    return S.stimuli.map((s) => ({
      ...s, ordered: (s.key ^ (T.sha256(`${S.stimuli_hash}:${s.stimulus_id}`)[0] & 1)) === 1 ? "a" : "b",
    }));
  }

  function sessionItems(participant) { // the trials, with the attention checks spread evenly between them
    const trials = T.trialList(stimuli(), participant, S.seed);
    const checks = S.attention_checks;
    const items = [];
    trials.forEach((t, i) => {
      items.push({ task: "trial", t });
      for (let k = 1; k <= checks; k++) {
        if (Math.floor((k * trials.length) / (checks + 1)) === i + 1) {
          items.push({ task: "attention", check: k, asked: k % 2 ? "bottom" : "top", t });
        }
      }
    });
    return items;
  }

  function recordOf(item, state) {
    const common = { trial_type: "grid-choice", task: item.task, participant: state.participant, observer: "human",
                     n_trials: S.stimuli.length, stimuli_hash: S.stimuli_hash, ...state.ids };
    if (item.task === "attention") return { ...common, check: item.check, asked: item.asked };
    const t = item.t;
    return { ...common, trial: t.trial, stimulus_id: t.stimulus_id, layer: t.layer, basis: t.basis,
             component: t.component, ordered_position: t.ordered_position };
  }

  function run(fromUrl, ids, host) {
    const state = { participant: null, answers: null, items: [], next: 0, codeError: "", ids };
    const jsPsych = window.initJsPsych({
      show_progress_bar: true, auto_update_progress_bar: false, message_progress_bar: "Progress",
      // the trial's on_finish has saved the answer to localStorage (it runs first); this sends it on
      on_data_update: (data) => { if (data.trial_type === "grid-choice") state.answers.flush(); },
      on_trial_start: () => showProgress(state, jsPsych),
      on_finish: () => finish(state, jsPsych),
    });
    const open = (participant) => {
      state.participant = participant;
      state.answers = new Answers(participant, host);
      state.items = sessionItems(participant);
      advance(state, jsPsych);
      state.answers.flush(); // what an earlier visit could not send
    };
    const timeline = [];
    if (fromUrl && CODE.test(fromUrl)) {
      open(fromUrl);
    } else {
      timeline.push({
        timeline: [{
          type: window.jsPsychSurveyText,
          preamble: () => `<p>${S.instruction}</p>` +
            (fromUrl ? `<p class="study-error">The link's participant id ${escape(fromUrl)} is not valid.</p>` : "") +
            (state.codeError ? `<p class="study-error">${state.codeError}</p>` : ""),
          questions: [{ prompt: "Enter the participant code you were given", name: "code", required: true }],
          button_label: "Start",
          on_finish: (data) => {
            const code = String(data.response.code || "").trim();
            if (CODE.test(code)) open(code);
            else state.codeError = `${escape(code)} is not a valid code: use 1–40 letters, digits, _ or -.`;
          },
        }],
        loop_function: () => state.participant === null,
      });
    }
    timeline.push({ // conditions belong to timelines (jsPsych 8), so each page is a timeline of one
      timeline: [{
        type: window.jsPsychHtmlButtonResponse,
        stimulus: () => S.consent + `<p><b>The task.</b> ${S.instruction}</p>`,
        choices: ["I agree — start"],
      }],
      conditional_function: () => state.answers.rows.length === 0,
    });
    timeline.push({
      timeline: [{
        type: window.jsPsychHtmlButtonResponse,
        stimulus: () => `<h3>Welcome back</h3><p>You have answered ${answeredTrials(state)} of ` +
          `${S.stimuli.length} pairs. The next pair is the first you have not answered.</p>`,
        choices: ["Continue"],
      }],
      conditional_function: () => state.answers.rows.length > 0 && state.next < state.items.length,
    });
    timeline.push({
      timeline: [{
        type: GridChoicePlugin,
        top: () => current(state).t.top,
        bottom: () => current(state).t.bottom,
        instruction: () => current(state).task === "attention"
          ? `<b>Attention check:</b> whatever the pictures show, answer <b>${current(state).asked === "top" ? "↑ top" : "↓ bottom"}</b> for this pair.`
          : S.instruction,
        progress: () => `<b>Trial ${Math.min(answeredTrials(state) + 1, S.stimuli.length)} of ${S.stimuli.length}</b>`,
        min_rt_ms: S.min_rt_ms,
        record: () => recordOf(current(state), state),
        on_finish: (data) => { // saved before the next trial is chosen, and before it is shown
          state.answers.add(Object.fromEntries(COLUMNS.filter((c) => c in data).map((c) => [c, data[c]])));
          advance(state, jsPsych);
        },
      }],
      conditional_function: () => state.next < state.items.length,
      loop_function: () => state.next < state.items.length,
    });
    jsPsych.run(timeline);
  }

  function current(state) { return state.items[state.next]; }

  function answeredTrials(state) { return state.answers.rows.filter((r) => r.task === "trial").length; }

  function advance(state, jsPsych) { // the first item without a saved answer; the progress bar follows
    const rows = state.answers.rows;
    const done = (item) => rows.some((r) => r.task === item.task &&
      (item.task === "attention" ? r.check === item.check : r.trial === item.t.trial));
    state.next = state.items.findIndex((item) => !done(item));
    if (state.next < 0) state.next = state.items.length;
    showProgress(state, jsPsych);
  }

  function showProgress(state, jsPsych) {
    if (jsPsych.progressBar && state.items.length) jsPsych.progressBar.progress = state.next / state.items.length;
  }

  function escape(text) {
    const span = document.createElement("span");
    span.textContent = text;
    return span.innerHTML;
  }

  async function finish(state, jsPsych) {
    const display = jsPsych.getDisplayElement();
    const answers = state.answers;
    const url = S.completion_code ? S.completion_url.replace("{code}", encodeURIComponent(S.completion_code)) : "";
    const download = `study-${state.participant}-${S.stimuli_hash.split(":").pop().slice(0, 8)}.csv`;
    display.innerHTML = `<div class="study-end"><h2>Thank you!</h2>` +
      `<p>All ${S.stimuli.length} pairs are answered.</p>` +
      `<p id="study-saving">${answers.host === "none" ? "" : "Saving your answers…"}</p>` +
      (answers.host === "none" ? `<p>Please download your answers and send the file to the researcher.</p>` : "") +
      `<p><button class="jspsych-btn" id="study-download">Download your answers</button></p>` +
      (url ? `<p><a id="study-complete" href="${url}">Return to Prolific to complete the study</a></p>` : "") +
      `</div>`;
    display.querySelector("#study-download").addEventListener("click", () => {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([answers.csv()], { type: "text/csv" }));
      link.download = download;
      document.body.appendChild(link);
      link.click();
      link.remove();
    });
    if (answers.host === "none") return;
    const saved = await answers.flush();
    display.querySelector("#study-saving").textContent = saved ? "Your answers are saved."
      : "Your answers could not all be sent: please download them and send the file to the researcher.";
    if (!saved) return;
    if (answers.host === "jatos") {
      if (url) window.jatos.endStudyAndRedirect(url); else window.jatos.endStudy();
    } else if (url) {
      window.location.href = url;
    }
  }

  function loadJatos() { // jatos.js is served by JATOS beside the study's files
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "jatos.js";
      script.onload = () => window.jatos.onLoad(resolve);
      script.onerror = () => reject(new Error("jatos.js did not load: is the study running in JATOS?"));
      document.head.appendChild(script);
    });
  }

  async function main() {
    const host = hostKind();
    let query = new URLSearchParams(window.location.search);
    if (host === "jatos") {
      await loadJatos();
      query = new URLSearchParams(window.jatos.urlQueryParameters || {});
    }
    const ids = { study_id: query.get("STUDY_ID") || "", session_id: query.get("SESSION_ID") || "" };
    run((query.get("PROLIFIC_PID") || query.get("participant") || "").trim(), ids, host);
  }

  window.addEventListener("DOMContentLoaded", () => { main(); });
})();
