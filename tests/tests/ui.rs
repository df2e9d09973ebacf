//! The web UI: its loopback listener's security (tokens, cookies, origins, hosts) over raw
//! HTTP, and the pages driven in a real headless Chromium through chromedriver: log in
//! with `hutch ui`'s link, the live instance list, stop and start, the terminal, a file
//! upload, a snapshot, a config error shown inline, and a phone-width layout.

#[path = "ui/webdriver.rs"]
mod webdriver;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hutch_tests::{require_root, skipped, unique_name, TestDaemon, Via};
use serde_json::Value;

use webdriver::{Browser, Element};

/// One answer of the UI listener.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One raw HTTP/1.1 request to the UI listener on `port`.
fn ui_http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the UI listener");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has_host {
        head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(head.as_bytes()).expect("send");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A login token from the socket's `POST /1.0/ui/tokens`, with `body` (e.g. a lifetime).
fn token(d: &TestDaemon, body: &str) -> String {
    let (status, out) = d.http("POST", "/1.0/ui/tokens", body.as_bytes());
    assert_eq!(status, 200, "POST /1.0/ui/tokens: {out}");
    let v: Value = serde_json::from_str(&out).expect("json");
    v["metadata"]["token"].as_str().expect("token").to_string()
}

/// Turns on the UI listener on a free loopback port.
fn enable_ui(d: &TestDaemon) -> u16 {
    let port = hutch_tests::free_port();
    let body = format!(r#"{{"config":{{"core.ui_address":"127.0.0.1:{port}"}}}}"#);
    let (status, out) = d.http("PATCH", "/1.0", body.as_bytes());
    assert_eq!(status, 200, "set core.ui_address: {out}");
    port
}

/// A redeemed token's session: the cookie it set (`name=value`) and the key the page
/// keeps (from the redirect's fragment).
fn log_in(port: u16, token: &str) -> (String, String) {
    let a = ui_http(port, "GET", &format!("/ui/?token={token}"), &[], "");
    assert_eq!(a.status, 303, "{}{}", a.head, a.body);
    let to = a.header("location").expect("a redirect");
    let key = to
        .strip_prefix("/ui/#key=")
        .expect("the key in the fragment");
    let cookie = a.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
    (cookie, key.to_string())
}

#[test]
fn ui_listener_admits_only_sessions_from_its_own_origin() {
    if !require_root("ui_listener_admits_only_sessions_from_its_own_origin") {
        return;
    }
    let mut d = TestDaemon::start();

    // The listener is loopback only: anything else is refused, and nothing is stored.
    let (status, out) = d.http(
        "PATCH",
        "/1.0",
        br#"{"config":{"core.ui_address":"0.0.0.0:8444"}}"#,
    );
    assert_eq!(status, 400, "{out}");
    assert!(out.contains("not a loopback address"), "{out}");
    let (_, info) = d.http("GET", "/1.0", b"");
    assert!(!info.contains("core.ui_address"), "{info}");

    let port = enable_ui(&d);
    let origin = format!("http://127.0.0.1:{port}");

    // The files are public, with their security headers.
    let index = ui_http(port, "GET", "/ui/", &[], "");
    assert_eq!(index.status, 200, "{}", index.head);
    let csp = index.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));
    let etag = index.header("etag").expect("an ETag").to_string();
    let again = ui_http(port, "GET", "/ui/", &[("If-None-Match", &etag)], "");
    assert_eq!(again.status, 304);
    let js = ui_http(port, "GET", "/ui/js/main.js", &[], "");
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );

    // Without a session, the API is closed.
    for path in ["/1.0", "/1.0/instances", "/1.0/events"] {
        let a = ui_http(port, "GET", path, &[], "");
        assert_eq!(a.status, 403, "{path}: {}", a.body);
    }
    let forged = ui_http(
        port,
        "GET",
        "/1.0/instances",
        &[("Cookie", "hutch_ui_session=00ff")],
        "",
    );
    assert_eq!(forged.status, 403);

    // A token works once.
    let t = token(&d, "");
    let (cookie, key) = log_in(port, &t);
    let used = ui_http(port, "GET", &format!("/ui/?token={t}"), &[], "");
    assert_eq!(used.status, 403, "a used token is refused");
    let session = [
        ("Cookie", cookie.as_str()),
        ("X-Hutch-UI-Key", key.as_str()),
    ];
    let list = ui_http(port, "GET", "/1.0/instances", &session, "");
    assert_eq!(list.status, 200, "{}", list.body);
    // On websockets the key rides in the query.
    let by_query = ui_http(
        port,
        "GET",
        &format!("/1.0/instances?ui_key={key}"),
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(by_query.status, 200, "{}", by_query.body);
    // The cookie alone (another loopback port's server may be sent it) is not a session;
    // nor is the key alone.
    let cookie_only = ui_http(port, "GET", "/1.0/instances", &[("Cookie", &cookie)], "");
    assert_eq!(cookie_only.status, 403, "{}", cookie_only.body);
    let wrong_key = ui_http(
        port,
        "GET",
        "/1.0/instances",
        &[("Cookie", &cookie), ("X-Hutch-UI-Key", &t)],
        "",
    );
    assert_eq!(wrong_key.status, 403, "{}", wrong_key.body);
    let key_only = ui_http(
        port,
        "GET",
        "/1.0/instances",
        &[("X-Hutch-UI-Key", &key)],
        "",
    );
    assert_eq!(key_only.status, 403, "{}", key_only.body);

    // An expired token is refused.
    let short = token(&d, r#"{"lifetime": 1}"#);
    std::thread::sleep(Duration::from_millis(1500));
    let late = ui_http(port, "GET", &format!("/ui/?token={short}"), &[], "");
    assert_eq!(late.status, 403, "an expired token is refused");

    // Writes must come from the UI's own origin, even with a valid cookie.
    let body = r#"{"config":{"user.ui-test":"1"}}"#;
    let evil = ui_http(
        port,
        "PATCH",
        "/1.0",
        &[
            ("Cookie", &cookie),
            ("X-Hutch-UI-Key", &key),
            ("Origin", "http://127.0.0.1:1"),
        ],
        body,
    );
    assert_eq!(evil.status, 403, "cross-origin write: {}", evil.body);
    let evil_post = ui_http(
        port,
        "POST",
        "/1.0/profiles",
        &[
            ("Cookie", &cookie),
            ("X-Hutch-UI-Key", &key),
            ("Origin", "http://evil.example"),
        ],
        r#"{"name":"ui-evil"}"#,
    );
    assert_eq!(
        evil_post.status, 403,
        "cross-origin POST: {}",
        evil_post.body
    );
    let (status, _) = d.http("GET", "/1.0/profiles/ui-evil", b"");
    assert_eq!(status, 404, "the cross-origin POST made a profile");
    let bare = ui_http(port, "PATCH", "/1.0", &session, body);
    assert_eq!(bare.status, 403, "a write without Origin: {}", bare.body);
    let (_, info) = d.http("GET", "/1.0", b"");
    assert!(!info.contains("user.ui-test"), "{info}");
    let ok = ui_http(
        port,
        "PATCH",
        "/1.0",
        &[
            ("Cookie", &cookie),
            ("X-Hutch-UI-Key", &key),
            ("Origin", &origin),
        ],
        body,
    );
    assert_eq!(ok.status, 200, "same-origin write: {}", ok.body);
    let ws = ui_http(
        port,
        "GET",
        "/1.0/events",
        &[
            ("Cookie", &cookie),
            ("X-Hutch-UI-Key", &key),
            ("Origin", "http://evil.example"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    );
    assert_eq!(ws.status, 403, "cross-origin websocket: {}", ws.head);

    // DNS rebinding: a name that is not loopback is not the UI.
    let rebound = ui_http(
        port,
        "GET",
        "/1.0/instances",
        &[
            ("Host", "evil.example"),
            ("Cookie", &cookie),
            ("X-Hutch-UI-Key", &key),
        ],
        "",
    );
    assert_eq!(rebound.status, 421);

    // Tokens are given on the unix socket only, never to a browser session.
    let from_ui = ui_http(
        port,
        "POST",
        "/1.0/ui/tokens",
        &[
            ("Cookie", &cookie),
            ("X-Hutch-UI-Key", &key),
            ("Origin", &origin),
        ],
        "",
    );
    assert_eq!(from_ui.status, 403, "{}", from_ui.body);

    // A restarted daemon serves the UI again at once; sessions lived in the old one only.
    d.kill();
    d.spawn();
    let index = ui_http(port, "GET", "/ui/", &[], "");
    assert_eq!(index.status, 200, "after a restart: {}", index.head);
    let old = ui_http(port, "GET", "/1.0/instances", &session, "");
    assert_eq!(
        old.status, 403,
        "a session of the previous daemon: {}",
        old.body
    );

    // Stopping the listener closes the port.
    let (status, out) = d.http("PATCH", "/1.0", br#"{"config":{"core.ui_address":""}}"#);
    assert_eq!(status, 200, "{out}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// Clicks the button labelled `label` in the row of `name`. The list is drawn again on
/// every event: a row found just before may be gone at the click, then it is found again.
fn click_in_row(b: &Browser, name: &str, label: &str) -> anyhow::Result<()> {
    let path = format!("//tr[@data-name='{name}']//button[text()='{label}']");
    let mut last = None;
    for _ in 0..10 {
        let button = b.wait_xpath(&path)?;
        match b.click(&button) {
            Ok(()) => return Ok(()),
            Err(e) if e.to_string().contains("stale element") => last = Some(e),
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no {label} button for {name}")))
}

fn row_state(b: &Browser, name: &str) -> Option<String> {
    let cell = b.css(&format!("tr[data-name='{name}'] td.state")).ok()?;
    b.text(&cell).ok()
}

fn wait_row_state(b: &Browser, name: &str, want: &str) -> anyhow::Result<()> {
    b.wait(&format!("{name} shown {want}"), || {
        (row_state(b, name).as_deref() == Some(want)).then_some(())
    })
}

/// Whether the page is wider than the viewport.
fn overflows(b: &Browser) -> anyhow::Result<bool> {
    Ok(
        b.script("return document.documentElement.scrollWidth > window.innerWidth;")?
            == Value::Bool(true),
    )
}

/// Saves a screenshot when `HUTCH_UI_SCREENSHOTS` names a directory (CI's artifacts).
/// Saves a screenshot of the page as a test artifact: in `$HUTCH_UI_SCREENSHOTS`, or
/// `target/ui-screenshots/` of the workspace.
fn snap(b: &Browser, name: &str) {
    let dir = std::env::var_os("HUTCH_UI_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots")
        });
    let _ = std::fs::create_dir_all(&dir);
    if let Err(e) = b.screenshot(&dir.join(format!("{name}.png"))) {
        eprintln!("screenshot {name}: {e}");
    }
}

#[test]
fn ui_drives_an_instance_in_a_real_browser() {
    const TEST: &str = "ui_drives_an_instance_in_a_real_browser";
    if !require_root(TEST) {
        return;
    }
    if let Some(why) = webdriver::missing() {
        skipped(TEST, &why);
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox(Via::Hutch);
    let name = unique_name("ui");
    d.hutch_ok(&["launch", "bb", &name]);
    let port = hutch_tests::free_port();

    // `hutch ui` turns the listener on and prints a one-time link.
    let out = d.hutch_ok(&["ui", "--no-open", "--address", &format!("127.0.0.1:{port}")]);
    let url = out
        .lines()
        .find(|l| l.starts_with("http://"))
        .unwrap_or_else(|| panic!("no link in {out:?}"))
        .trim()
        .to_string();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/ui/?token=")),
        "{url}"
    );

    let b = Browser::start(d.path()).expect("start chromium through chromedriver");
    if let Err(e) = drive(&d, &b, &url, &name) {
        snap(&b, "failure");
        let page = b
            .script("return document.body.innerText")
            .unwrap_or_default();
        panic!("{e:#}\npage text: {page}");
    }
}

fn drive(d: &TestDaemon, b: &Browser, url: &str, name: &str) -> anyhow::Result<()> {
    // The first paint is the daemon's (cold: this is its first page), not the browser's
    // own cold start: a blank page first brings the browser up.
    b.goto("about:blank")?;
    // Log in: the token becomes a cookie and leaves the address bar.
    b.goto(url)?;
    b.wait_css(&format!("tr[data-name='{name}']"))?;
    let here = b.url()?;
    anyhow::ensure!(
        !here.contains("token") && !here.contains("key="),
        "a secret stayed in the URL: {here}"
    );
    let paint = b.script(
        "const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : null;",
    )?;
    eprintln!("web UI first contentful paint (information only): {paint} ms");
    wait_row_state(b, name, "Running")?;
    snap(b, "instances");

    // Stop and start from the UI; a stop from the CLI shows up through the events.
    click_in_row(b, name, "Stop")?;
    wait_row_state(b, name, "Stopped")?;
    click_in_row(b, name, "Start")?;
    wait_row_state(b, name, "Running")?;
    d.hutch_ok(&["stop", name, "--force"]);
    wait_row_state(b, name, "Stopped")?;
    d.hutch_ok(&["start", name]);
    wait_row_state(b, name, "Running")?;

    // The terminal: type a command, read its output back from xterm.js's rows.
    b.goto(&format!("{}#/i/{name}/terminal", base(url)))?;
    let input = b.wait_css(".xterm-helper-textarea")?;
    b.wait("a shell prompt", || {
        let text = b
            .script("return document.querySelector('.xterm-rows')?.innerText || ''")
            .ok()?;
        text.as_str()
            .is_some_and(|t| !t.trim().is_empty())
            .then_some(())
    })?;
    b.type_into(&input, "echo hi-$RANDOM\u{E007}")?;
    let line = b.wait("the command's output in the terminal", || {
        let v = b
            .script("return [...document.querySelectorAll('.xterm-rows > div')].map(d => d.textContent.trim());")
            .ok()?;
        v.as_array()?.iter().filter_map(Value::as_str).find_map(|l| {
            let digits = l.strip_prefix("hi-")?;
            (!digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())).then(|| l.to_string())
        })
    })?;
    eprintln!("terminal printed {line}");
    snap(b, "terminal");

    // Leaving the terminal hangs its shell up: the exec operation ends.
    b.goto(&format!("{}#/", base(url)))?;
    b.wait("the terminal's shell to end", || {
        let (_, ops) = d.http("GET", "/1.0/operations?recursion=1", b"");
        let v: Value = serde_json::from_str(&ops).ok()?;
        let running = v["metadata"]["running"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let execs = running
            .iter()
            .filter(|o| o["description"] == "Executing command")
            .count();
        (execs == 0).then_some(())
    })?;

    // Upload a file into /tmp and read it inside the container.
    let local = d.path().join("ui-upload.txt");
    let content = format!("uploaded by the web UI test {}\n", unique_name("f"));
    std::fs::write(&local, &content)?;
    b.goto(&format!("{}#/i/{name}/files", base(url)))?;
    let dir = b.wait_css("#f-path")?;
    b.clear(&dir)?;
    b.type_into(&dir, "/tmp\u{E007}")?;
    b.wait("the /tmp listing", || {
        let v = b
            .script("return document.getElementById('f-path').value")
            .ok()?;
        (v == "/tmp").then_some(())
    })?;
    let file = b.css("#f-upload")?;
    b.type_into(&file, local.to_str().unwrap_or_default())?;
    click(b, "//button[text()='Upload']")?;
    b.wait_css("tr[data-name='ui-upload.txt']")?;
    let inside = d.sh_ok(name, "cat /tmp/ui-upload.txt");
    anyhow::ensure!(inside == content, "the container has {inside:?}");
    snap(b, "files");

    // A snapshot.
    b.goto(&format!("{}#/i/{name}/snapshots", base(url)))?;
    let snap_name = b.wait_css("#snap-name")?;
    b.type_into(&snap_name, "ui-snap0")?;
    click(b, "//button[text()='Create snapshot']")?;
    b.wait_css("tr[data-name='ui-snap0']")?;
    let (status, out) = d.http(
        "GET",
        &format!("/1.0/instances/{name}/snapshots/ui-snap0"),
        b"",
    );
    anyhow::ensure!(status == 200, "the snapshot is not there: {out}");
    snap(b, "snapshots");

    // A config value the API refuses: its error text shown inline, nothing stored.
    b.goto(&format!("{}#/i/{name}/config", base(url)))?;
    let key = b.wait_css("#cfg-key")?;
    b.type_into(&key, "limits.memory")?;
    b.type_into(&b.css("#cfg-value")?, "lots")?;
    click(b, "//form[@id='cfg-form']//button[text()='Set']")?;
    let shown = b.wait("the API's error inline", || {
        let t = b.text(&b.css("#cfg-error").ok()?).ok()?;
        (!t.is_empty()).then_some(t)
    })?;
    let (status, api_error) = d.http(
        "PATCH",
        &format!("/1.0/instances/{name}"),
        br#"{"config":{"limits.memory":"lots"}}"#,
    );
    anyhow::ensure!(status == 400, "the API took it: {api_error}");
    let api_error: Value = serde_json::from_str(&api_error)?;
    anyhow::ensure!(
        shown == api_error["error"].as_str().unwrap_or_default(),
        "shown {shown:?}, the API says {}",
        api_error["error"]
    );
    // The JSON editor: a device the API refuses, its error shown under the editor.
    let editor = b.css("#cfg-json")?;
    b.clear(&editor)?;
    b.type_into(
        &editor,
        r#"{"devices": {"bad": {"type": "no-such-type"}}, "profiles": ["default"]}"#,
    )?;
    click(b, "//button[text()='Save JSON']")?;
    let shown = b.wait("the device error inline", || {
        let t = b.text(&b.css("#cfg-json-error").ok()?).ok()?;
        (!t.is_empty()).then_some(t)
    })?;
    anyhow::ensure!(shown.contains("no-such-type"), "shown {shown:?}");
    let (_, made) = d.http("GET", &format!("/1.0/instances/{name}"), b"");
    anyhow::ensure!(
        !made.contains("no-such-type"),
        "the bad device was stored: {made}"
    );
    snap(b, "config");

    // The overview graphs CPU and memory from the instance's state.
    b.goto(&format!("{}#/i/{name}", base(url)))?;
    b.wait("CPU and memory graphs", || {
        let v = b
            .script("return [...document.querySelectorAll('figure.graph polyline')].map(p => p.getAttribute('points') || '');")
            .ok()?;
        let drawn = v.as_array()?.iter().filter(|p| p.as_str().is_some_and(|p| !p.is_empty())).count();
        (drawn == 2).then_some(())
    })?;
    snap(b, "overview");

    // The console attaches over its websockets.
    b.goto(&format!("{}#/i/{name}/console", base(url)))?;
    b.wait_css(".xterm-rows")?;
    std::thread::sleep(Duration::from_millis(500));
    let error = b.script(
        "return [...document.querySelectorAll('main .error')].map(e => e.textContent).join('')",
    )?;
    anyhow::ensure!(error.as_str() == Some(""), "the console failed: {error}");

    // Create and start an instance from the image, with its profile, then delete it.
    let second = unique_name("ui");
    b.goto(&format!("{}#/create", base(url)))?;
    let field = b.wait_css("#c-name")?;
    b.type_into(&field, &second)?;
    let image = b.css("#c-image")?;
    b.wait("the image list", || {
        b.value(&image).ok().filter(|v| v.len() == 64)
    })?;
    b.wait_css("input[name=profile][value=default]:checked")?;
    click(b, "//button[text()='Create']")?;
    b.wait("the new instance's page", || {
        b.url()
            .ok()
            .filter(|u| u.ends_with(&format!("#/i/{second}")))
    })?;
    let (status, state) = d.http("GET", &format!("/1.0/instances/{second}/state"), b"");
    anyhow::ensure!(
        status == 200 && state.contains("\"Running\""),
        "{second}: {state}"
    );
    let (_, made) = d.http("GET", &format!("/1.0/instances/{second}"), b"");
    anyhow::ensure!(made.contains("\"profiles\":[\"default\"]"), "{made}");
    b.goto(&format!("{}#/", base(url)))?;
    wait_row_state(b, &second, "Running")?;
    click_in_row(b, &second, "Delete")?;
    b.accept_alert()?;
    b.wait("the deleted instance gone from the list", || {
        b.css(&format!("tr[data-name='{second}']"))
            .is_err()
            .then_some(())
    })?;
    let (status, _) = d.http("GET", &format!("/1.0/instances/{second}"), b"");
    anyhow::ensure!(status == 404, "{second} is still there");

    // The other pages render.
    for (page, shot) in [
        ("#/networks", "networks"),
        ("#/storage", "storage"),
        ("#/images", "images"),
        ("#/operations", "operations"),
    ] {
        b.goto(&format!("{}{page}", base(url)))?;
        b.wait_css("main table, main section.card, main p.muted")?;
        std::thread::sleep(Duration::from_millis(300));
        let error = b.script(
            "return [...document.querySelectorAll('main .error')].map(e => e.textContent).join('')",
        )?;
        anyhow::ensure!(error.as_str() == Some(""), "{page}: {error}");
        snap(b, shot);
    }

    // A fresh load from the warm daemon, for comparison with the first paint above.
    b.goto(&format!("{}?again=1#/", base(url)))?;
    b.wait_css(&format!("tr[data-name='{name}']"))?;
    let paint = b.script(
        "const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : null;",
    )?;
    eprintln!("web UI first contentful paint, warm (information only): {paint} ms");

    // Every page fits a phone's width.
    b.emulate_width(390, 844)?;
    for page in [
        "#/",
        &format!("#/i/{name}"),
        &format!("#/i/{name}/config"),
        "#/networks",
        "#/storage",
        "#/images",
        "#/operations",
    ] {
        b.goto(&format!("{}{page}", base(url)))?;
        b.wait_css("main h1")?;
        std::thread::sleep(Duration::from_millis(300));
        anyhow::ensure!(!overflows(b)?, "{page} overflows 390 px");
    }
    b.goto(&format!("{}#/", base(url)))?;
    b.wait_css(&format!("tr[data-name='{name}']"))?;
    anyhow::ensure!(!overflows(b)?, "the instance list overflows 390 px");
    snap(b, "phone");
    Ok(())
}

fn click(b: &Browser, xpath: &str) -> anyhow::Result<()> {
    let e: Element = b.wait_xpath(xpath)?;
    b.click(&e)
}

/// `http://127.0.0.1:PORT/ui/` of a login link.
fn base(url: &str) -> String {
    match url.split_once("/ui/") {
        Some((host, _)) => format!("{host}/ui/"),
        None => url.to_string(),
    }
}

/// One request over the daemon's HTTPS listener at `address`, as `identity` if given,
/// with extra headers: status, head and body.
fn https_call(
    d: &TestDaemon,
    address: &str,
    identity: Option<&hutch_tls::Identity>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let server = hutch_tls::cert_der_of_pem(&d.server_cert()).expect("server.crt");
    let config = hutch_tls::client_config(hutch_tls::ServerTrust::Pinned(server), identity)
        .expect("tls config");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let tcp = TcpStream::connect(address).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    tls.write_all(head.as_bytes()).expect("send");
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

#[test]
fn ui_over_https_trusts_the_browsers_client_certificate() {
    if !require_root("ui_over_https_trusts_the_browsers_client_certificate") {
        return;
    }
    let d = TestDaemon::start();
    let url = d.enable_https();
    let address = url.trim_start_matches("https://").to_string();

    // The files are served to anyone; the API only to a trusted certificate.
    let index = https_call(&d, &address, None, "GET", "/ui/", &[]);
    assert_eq!(index.status, 200, "{}", index.head);
    assert!(index.header("content-security-policy").is_some());
    assert!(index.body.contains("/ui/js/main.js"), "{}", index.body);
    let stranger = https_call(&d, &address, None, "GET", "/1.0/instances", &[]);
    assert_eq!(stranger.status, 403, "{}", stranger.body);

    let browser = hutch_tls::Identity::generate(hutch_tls::Kind::Client).expect("client cert");
    let cert = hutch_tls::base64_encode(&browser.cert_der);
    let body = format!(r#"{{"certificate":"{cert}","name":"browser","type":"client"}}"#);
    let (status, out) = d.http("POST", "/1.0/certificates", body.as_bytes());
    assert_eq!(status, 201, "{out}");
    let trusted = https_call(&d, &address, Some(&browser), "GET", "/1.0/instances", &[]);
    assert_eq!(trusted.status, 200, "{}", trusted.body);

    // The certificate is as ambient as a cookie: another origin's page may not write.
    let own = format!("https://{address}");
    let evil = https_call(
        &d,
        &address,
        Some(&browser),
        "PATCH",
        "/1.0",
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(evil.status, 403, "{}", evil.body);
    let same = https_call(
        &d,
        &address,
        Some(&browser),
        "PATCH",
        "/1.0",
        &[("Origin", &own)],
    );
    assert_eq!(same.status, 200, "{}", same.body);
    // Clients that name no origin (lxc, pylxd) write as before.
    let cli = https_call(&d, &address, Some(&browser), "PATCH", "/1.0", &[]);
    assert_eq!(cli.status, 200, "{}", cli.body);
    // Login tokens are for the unix socket only.
    let token = https_call(&d, &address, Some(&browser), "POST", "/1.0/ui/tokens", &[]);
    assert_eq!(token.status, 403, "{}", token.body);
}
