//! The dashboard in a real headless Chromium: what a person would see while
//! `duplicate-load 8 2` runs with the starter, then with the reference fix.
//!
//! Run with: `cargo nextest run -p lab-tests --test browser`
//!
//! Chromium is driven with the Chrome DevTools Protocol over a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by a NUL byte on file
//! descriptors 3 and 4), so the test needs no WebSocket client and no crate
//! beyond `serde_json`: `sh` maps the child's stdin and stdout onto fds 3 and 4.
//! `--dump-dom` or `--screenshot` alone cannot watch a page change over time,
//! and their virtual-time budget never ends while an SSE stream is open.
//!
//! Without Chromium the test is skipped when the user is not root (it says
//! so); as root (CI) it fails instead: `.ci/run` installs Debian's `chromium`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use lab_schema::{Exercise, RunSummary};
use lab_tests::{Stack, scratch_dir, starter_worker, text};
use serde_json::{Value, json};

/// The scoreboard tiles and the summary keys they show.
const SCORE_KEYS: [&str; 8] = [
    "unique_jobs",
    "total_submissions",
    "observed_attempts_total",
    "observed_effects_total",
    "duplicate_effects",
    "duplicate_skips",
    "lost_effects",
    "dead_lettered",
];

/// One headless Chromium and one page in it, driven over the DevTools pipe.
struct Browser {
    child: Child,
    to_chrome: ChildStdin,
    from_chrome: BufReader<ChildStdout>,
    session: String,
    next_id: u64,
    _profile: PathBuf,
}

impl Browser {
    /// `None` (after saying why) when Chromium is missing and we may not install it.
    fn start() -> Option<Browser> {
        let Some(binary) = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
        else {
            let root = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| text(&o.stdout).trim() == "0");
            assert!(
                !root,
                "chromium is not installed: `apt-get install chromium` (.ci/run installs it)"
            );
            eprintln!("SKIPPED: chromium is not installed (sudo apt-get install chromium)");
            return None;
        };
        let profile = scratch_dir("chromium-profile");
        let script = format!(
            "exec {binary} --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
             --no-first-run --window-size=1300,1000 --user-data-dir={} \
             --remote-debugging-pipe about:blank 3<&0 4>&1 </dev/null >/dev/null",
            profile.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let mut browser = Browser {
            to_chrome: child.stdin.take().unwrap(),
            from_chrome: BufReader::new(child.stdout.take().unwrap()),
            child,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        Some(browser)
    }

    /// Sends one command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        tokio::task::block_in_place(|| {
            self.next_id += 1;
            let mut message = json!({ "id": self.next_id, "method": method, "params": params });
            if !self.session.is_empty() {
                message["sessionId"] = json!(self.session);
            }
            let mut bytes = message.to_string().into_bytes();
            bytes.push(0);
            self.to_chrome.write_all(&bytes).expect("write to chromium");
            loop {
                let mut raw = Vec::new();
                self.from_chrome
                    .read_until(0, &mut raw)
                    .expect("read from chromium");
                assert!(raw.ends_with(&[0]), "chromium closed the DevTools pipe");
                raw.pop();
                let reply: Value = serde_json::from_slice(&raw).expect("DevTools JSON");
                if reply["id"] == json!(self.next_id) {
                    assert!(reply["error"].is_null(), "{method}: {}", reply["error"]);
                    return reply["result"].clone();
                }
                // An event: not waited for.
            }
        })
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// Evaluates `expression` in the page (promises awaited), returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` every 50 ms until it is `true`. While the page is still
    /// loading (no body yet), an expression that throws counts as "not yet".
    async fn wait(&mut self, what: &str, expression: &str) {
        let start = Instant::now();
        let guarded = format!(
            "(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        );
        while self.eval(&guarded) != json!(true) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the page never showed {what}; its text:\n{}",
                self.eval("document.body.innerText")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The number on a scoreboard tile.
    fn tile(&mut self, key: &str) -> Value {
        self.eval(&format!(
            "(() => {{ const t = document.querySelector('#score [data-key={key}] b'); \
             return t ? Number(t.textContent) : null; }})()"
        ))
    }

    /// A PNG of the whole page, saved as `name` in the screenshot folder.
    fn screenshot(&mut self, name: &str) -> PathBuf {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let dir = std::env::var_os("LAB_SCREENSHOTS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots")
            });
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, base64_decode(shot["data"].as_str().unwrap())).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (what DevTools sends a screenshot in).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | (u32::from(d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// `duplicate-load 8 2` through the real demo-runner binary: its JSON summary.
async fn duplicate_load(stack: &Stack) -> RunSummary {
    let output = stack
        .demo(
            &scratch_dir("browser"),
            &["duplicate-load", "8", "2", "--json"],
        )
        .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("the summary")
}

/// The page of `run` shows the run: its scoreboard equals the summary, and
/// every cell has `effects` effects.
async fn assert_page_shows(browser: &mut Browser, summary: &RunSummary, effects: u64) {
    let run_id = &summary.run_id;
    browser
        .wait(
            "the final numbers of the run",
            &format!(
                "document.body.dataset.run === '{run_id}' && \
                 document.querySelectorAll('#grid .cell').length === 8 && \
                 document.getElementById('run-state').textContent === '(final)'"
            ),
        )
        .await;
    let summary_json = serde_json::to_value(summary).unwrap();
    for key in SCORE_KEYS {
        assert_eq!(
            browser.tile(key),
            summary_json[key],
            "scoreboard tile {key}"
        );
    }
    let cells = browser.eval(
        "[...document.querySelectorAll('#grid .cell')].map(c => [c.getAttribute('class'), Number(c.dataset.effects)])",
    );
    let class = if effects == 1 {
        "cell one"
    } else {
        "cell many"
    };
    assert_eq!(cells, json!(vec![json!([class, effects]); 8]), "the grid");
}

/// The dashboard tells the bug from the fix as a person sees it; it updates
/// live without a reload; the compare view shows the deltas; it says when Redis
/// goes away and comes back; and `/metrics` passes `promtool check metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_bug_and_the_fix_live() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    let mut stack = Stack::start().await;
    stack.spawn_worker(&starter_worker(), &[]);
    stack.spawn_worker(&starter_worker(), &[]);

    // Opened before any run: it follows the latest run as it appears.
    let url = stack.api_url.clone();
    browser.open(&format!("{url}/"));
    browser
        .wait(
            "the live connection",
            "document.getElementById('conn').textContent === 'live'",
        )
        .await;
    let paint = browser
        .eval("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null");
    let weight = reqwest::get(format!("{url}/"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    eprintln!("page weight: {weight} bytes; first contentful paint: {paint} ms");

    // Live: a run whose jobs arrive one by one fills the open page, which is
    // never reloaded (a value set in the page survives).
    browser.eval("window.__notReloaded = true");
    let mut seen = std::collections::BTreeSet::new();
    for n in 1..=6 {
        stack.submit(&format!("live-{n}"), "live-run").await;
        let start = Instant::now();
        while browser.tile("total_submissions") != json!(n) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "submission {n} never showed"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        seen.insert(n);
    }
    assert_eq!(browser.eval("window.__notReloaded === true"), json!(true));
    assert_eq!(seen.len(), 6, "each submission showed on the open page");
    browser
        .wait(
            "the live run's effects",
            "document.querySelectorAll('#grid .cell.one').length === 6",
        )
        .await;

    // The starter: 8 cells, all red (2 effects each).
    let before = duplicate_load(&stack).await;
    assert_eq!(
        (
            before.unique_jobs,
            before.observed_effects_total,
            before.duplicate_skips
        ),
        (8, 16, 0)
    );
    browser.open(&format!("{url}/runs/{}", before.run_id));
    assert_page_shows(&mut browser, &before, 2).await;
    assert_eq!(
        browser.eval("document.getElementById('verdict').className"),
        json!("bad")
    );
    let before_png = browser.screenshot("dashboard-before.png");

    // `/metrics` after `duplicate-load 8 2` (and the 6 live jobs).
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    eprintln!("/metrics after duplicate-load 8 2 (starter):\n{metrics}");
    check_with_promtool(&metrics);
    let effects: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("lab_side_effects_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(effects, 16 + 6);
    assert!(
        metrics.contains("lab_jobs_submitted_total{exercise=\"1\"} 22\n"),
        "{metrics}"
    );

    // The reference fix, on the same Redis and API: 8 cells, all green.
    for index in 0..2 {
        stack.signal_worker(index, "TERM");
        let _ = stack.workers[index].wait();
    }
    let solution = lab_testkit::solution_worker(Exercise::DuplicateDelivery);
    stack.spawn_worker(&solution, &["--name", "worker-1"]);
    stack.spawn_worker(&solution, &["--name", "worker-2"]);
    let after = duplicate_load(&stack).await;
    assert_eq!(
        (
            after.unique_jobs,
            after.observed_effects_total,
            after.duplicate_skips
        ),
        (8, 8, 8)
    );
    browser.open(&format!("{url}/runs/{}", after.run_id));
    assert_page_shows(&mut browser, &after, 1).await;
    assert_eq!(
        browser.eval("document.getElementById('verdict').textContent"),
        json!("✓ one effect per job")
    );
    // A job's cell shows what the code did on each of its two deliveries: the
    // claim that won, and the claim that found it taken.
    browser.eval("document.querySelector('#grid .cell').dispatchEvent(new Event('click'))");
    browser
        .wait(
            "the job's trace, per delivery",
            "document.querySelectorAll('#job-detail pre.trace').length === 2",
        )
        .await;
    let traces = browser.eval(
        "[...document.querySelectorAll('#job-detail pre.trace')].map(p => p.textContent).join('\\n')",
    );
    let traces = traces.as_str().unwrap();
    assert!(
        traces.contains(" NX EX 86400 -> OK") && traces.contains(" NX EX 86400 -> (nil)"),
        "one claim won, one found it taken: {traces}"
    );
    assert!(
        traces.contains("[effect sent]") && traces.contains("[duplicate skipped]"),
        "{traces}"
    );
    let after_png = browser.screenshot("dashboard-after.png");

    // Before and after side by side, with the deltas.
    browser.open(&format!(
        "{url}/?compare={},{}",
        before.run_id, after.run_id
    ));
    browser
        .wait(
            "the compare view",
            "document.getElementById('deltas').dataset.ready !== undefined",
        )
        .await;
    let delta = |browser: &mut Browser, key: &str| {
        browser.eval(&format!(
            "[...document.querySelectorAll('#deltas tr[data-key={key}] td')].map(td => td.textContent)"
        ))
    };
    assert_eq!(
        delta(&mut browser, "observed_effects_total"),
        json!(["effects", "16", "8", "-8"])
    );
    assert_eq!(
        delta(&mut browser, "duplicate_skips"),
        json!(["duplicate skips", "0", "8", "+8"])
    );
    assert_eq!(
        browser.eval(
            "[...document.querySelectorAll('#cmp-a-grid .cell.many, #cmp-b-grid .cell.one')].length"
        ),
        json!(16)
    );
    browser.screenshot("dashboard-compare.png");

    // Bad input in the URL: an unknown run waits for it, a malformed id is a 400.
    browser.open(&format!("{url}/runs/no-such-run"));
    browser
        .wait(
            "the unknown run's message",
            "document.getElementById('verdict').textContent.startsWith('No run named no-such-run')",
        )
        .await;
    let bad = reqwest::Client::new()
        .get(format!("{url}/runs/bad%20id"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // Redis goes away while the page is open: the page says so, then says it is back.
    browser.open(&format!("{url}/runs/{}", after.run_id));
    assert_page_shows(&mut browser, &after, 1).await;
    stack.redis.stop();
    browser
        .wait(
            "that Redis is unreachable",
            "document.getElementById('banner').textContent.startsWith('Redis is unreachable')",
        )
        .await;
    stack.redis.start_again();
    browser
        .wait(
            "that Redis is back",
            "document.getElementById('banner').textContent.startsWith('Reconnected')",
        )
        .await;
    eprintln!(
        "screenshots: {} {}",
        before_png.display(),
        after_png.display()
    );
}

// Exercise 5's storm as the class sees it: the starter retries at once, the
// provider answers 429, and the page says "retry storm", marks the retries
// after a 429 on the timeline, and shows the retry set in the queue view.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_a_retry_storm() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    let mut stack = Stack::start().await;
    stack.spawn_worker(&starter_worker(), &[]);
    stack.spawn_worker(&starter_worker(), &[]);
    let api = stack.client();
    // 12 jobs retried at once during a 5 s outage: well over the provider's
    // budget of 100 requests per second, even on a busy machine.
    api.provider_faults(Some(&lab_schema::provider::Faults {
        outage_secs: 5,
        slow_ms: 0,
    }))
    .await
    .unwrap();
    for n in 1..=12 {
        api.submit_to(
            Exercise::RetryStorm,
            &format!("storm-{n}"),
            "storm-run",
            json!({ "account": "browser-storm" }),
        )
        .await
        .unwrap();
    }
    browser.open(&format!("{}/runs/storm-run", stack.api_url));
    browser
        .wait(
            "the storm's verdict",
            "document.getElementById('verdict').textContent.startsWith('✗ retry storm')",
        )
        .await;
    assert_eq!(
        browser.eval("document.getElementById('verdict').className"),
        json!("bad")
    );
    browser
        .wait(
            "retries after a 429 on the timeline",
            "[...document.querySelectorAll('#timeline .mark.retry-scheduled')].some(m => m.getAttribute('fill') === 'var(--limited)')",
        )
        .await;
    let queue =
        browser.eval("[...document.querySelectorAll('#queue dt')].map(dt => dt.textContent)");
    let queue = queue.as_array().unwrap();
    assert!(
        queue.contains(&json!("scheduled retries")) && queue.contains(&json!("next retry due")),
        "{queue:?}"
    );
    browser.screenshot("dashboard-storm.png");
}

// Exercise 6: the grid's cells are the emails (order, action), not the jobIds,
// and the verdict counts emails per (order, action): the starter's retry under
// a new jobId is a duplicate email, though each jobId sent once.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_counts_emails_per_order_and_action() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    let mut stack = Stack::start().await;
    stack.spawn_worker(&starter_worker(), &[]);
    let api = stack.client();
    let email = |action: &str, request: &str| json!({ "orderId": "ord-7", "action": action, "customer": "cus-1", "requestId": request });
    for (job, payload) in [
        ("email-1", email("confirmation", "req-1")),
        ("email-2", email("confirmation", "req-2")),
        ("email-3", email("shipped", "req-3")),
    ] {
        api.submit_to(Exercise::NewJobId, job, "emails-run", payload)
            .await
            .unwrap();
    }
    browser.open(&format!("{}/runs/emails-run", stack.api_url));
    browser
        .wait(
            "the emails' verdict",
            "document.getElementById('verdict').textContent.startsWith('✗ not one email per (order, action): 1 duplicate, 0 never sent (2 emails, 3 jobIds)')",
        )
        .await;
    let cells = browser.eval(
        "[...document.querySelectorAll('#grid .cell')].map(c => c.dataset.job + '=' + c.dataset.effects)",
    );
    assert_eq!(
        cells,
        json!(["ord-7 confirmation=2", "ord-7 shipped=1"]),
        "one cell per email"
    );
}

/// `promtool check metrics` (Debian's `prometheus` package) accepts the text.
fn check_with_promtool(metrics: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| text(&o.stdout).trim() == "0");
        assert!(
            !root,
            "promtool is not installed: `apt-get install prometheus` (.ci/run installs it)"
        );
        eprintln!("SKIPPED promtool: not installed (sudo apt-get install prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let mut said = text(&output.stdout);
    let _ = output.stderr.as_slice().read_to_string(&mut said);
    assert!(
        output.status.success(),
        "promtool check metrics:\n{said}\n{metrics}"
    );
}

/// A result `./lab grade` would write: `student` on exercise 1, failing
/// `failed` checks with `diagnosis` (none: a pass).
fn graded(student: &str, failed: &[&str], diagnosis: &str) -> lab_schema::grade::GradeResult {
    use lab_schema::grade::{GradeResult, Outcome};
    let exercise = Exercise::DuplicateDelivery;
    let mut checks = demo_runner::grading::checks_not_run(exercise, Outcome::Graded, "");
    for check in &mut checks {
        check.passed = !failed.contains(&check.name.as_str());
        check.numbers = "8 jobs x 8 copies".to_string();
        check.meaning = (!check.passed).then(|| format!("{diagnosis}, in words"));
        check.diagnosis = (!check.passed).then(|| diagnosis.to_string());
    }
    GradeResult {
        fingerprint: "3fa9c1".to_string(),
        passed: failed.is_empty(),
        checks,
        graded_at: "2026-12-06T10:00:00Z".to_string(),
        ..GradeResult::new(
            student,
            exercise.number(),
            exercise.info().slug,
            Outcome::Graded,
        )
    }
}

// The class report as the projector shows it: one page with no script and
// nothing to download, the most common mistake first, each cell coloured by
// its outcome, and the claims (results not sealed here) marked.
#[tokio::test(flavor = "multi_thread")]
async fn the_class_report_reads_in_a_browser() {
    let Some(mut browser) = Browser::start() else {
        return;
    };
    let dir = scratch_dir("class-report");
    let key = b"this machine's key";
    let class = [
        ("ada", graded("ada", &[], "")),
        (
            "bob",
            graded("bob", &["concurrent-duplicates"], "check-then-set"),
        ),
        (
            "cy",
            graded("cy", &["concurrent-duplicates"], "check-then-set"),
        ),
        (
            "dee",
            graded("dee", &["claim-expires"], "claim-never-expires"),
        ),
    ];
    for (i, (student, mut result)) in class.into_iter().enumerate() {
        // dee's file was made elsewhere: a claim.
        if student != "dee" {
            result.seal_with(key);
        }
        std::fs::write(
            dir.join(format!("{i}.json")),
            serde_json::to_string(&result).unwrap(),
        )
        .unwrap();
    }
    let said =
        demo_runner::class_report::write(&dir, Some(key), &lab_testkit::workspace_root()).unwrap();
    assert!(said.contains("exercise 1: 1 of 4 pass"), "{said}");
    browser.open(&format!(
        "file://{}",
        dir.join("class-report.html").display()
    ));
    browser
        .wait(
            "the report",
            "document.querySelectorAll('table').length === 3",
        )
        .await;
    assert_eq!(browser.eval("document.scripts.length"), json!(0));
    assert_eq!(
        browser.eval("document.title"),
        json!(format!(
            "Class report: {}",
            dir.file_name().unwrap().to_string_lossy()
        ))
    );
    // The ranked mistakes: the race first (2 students), then the missing TTL.
    let ranked = browser.eval(
        "[...document.querySelectorAll('table')[0].rows].slice(1).map(r => r.cells[0].innerText + ' ' + r.cells[1].innerText)",
    );
    assert_eq!(
        ranked,
        json!(["check-then-set 2 (bob, cy)", "claim-never-expires 1 (dee)"])
    );
    // Students x checks: 3 FAIL cells (red), the claim marked.
    let grid = "document.querySelectorAll('table')[2]";
    assert_eq!(
        browser.eval(&format!("{grid}.querySelectorAll('td.fail').length")),
        json!(3 + 3)
    );
    let background = browser.eval(&format!(
        "getComputedStyle({grid}.querySelector('td.fail')).backgroundColor"
    ));
    assert_eq!(background, json!("rgb(248, 215, 215)"));
    assert_eq!(
        browser.eval(&format!("{grid}.rows[4].cells[1].innerText")),
        json!("FAIL (claim)")
    );
    browser.screenshot("class-report.png");
    let _ = std::fs::remove_dir_all(&dir);
}
